"""An append-only JSON-lines file that is durable per batch and rotated by size.

- One `write` and one `fsync` per batch: when `append` returns, the batch is on disk, so the sink
  runner may move its cursor past it. A batch that fails part-way (disk full) is cut off again
  (`ftruncate` to the size before it) so the retry does not leave a torn line behind.
- A crash can still leave a torn last line (written, never fsync'd, so never confirmed): `open`
  cuts a file that does not end in a newline back to its last complete line; the runner sends
  that batch again.
- Rotation before a batch that would take the file past `rotate_bytes`: path.N-1 -> path.N, ...,
  path -> path.1 (the oldest beyond `keep` is removed), then the directory is fsync'd so the
  renames survive a crash too. A shipper tailing `path` follows the rename as with logrotate.

The file I/O runs in a worker thread (`asyncio.to_thread`), so an fsync never stalls the loop.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

__all__ = ["JsonLinesFile"]

log = structlog.get_logger(__name__)


class JsonLinesFile:
    def __init__(self, path: str | Path, *, rotate_bytes: int, keep: int = 5) -> None:
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.rotations = 0
        self._fd: int | None = None
        self._size = 0
        self._lock = asyncio.Lock()  # batches in flight at once still append one at a time

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    async def append(self, data: bytes) -> None:
        """`data` (complete lines) on disk, or `OSError` with the file as it was before."""
        async with self._lock:
            await asyncio.to_thread(self._append, data)

    async def close(self) -> None:
        async with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                await asyncio.to_thread(os.close, fd)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        size = os.fstat(fd).st_size
        if size:
            keep = _complete_lines(fd, size)
            if keep != size:
                log.warning("ocsf_file.torn_line_removed", path=str(self.path), bytes=size - keep)
                os.ftruncate(fd, keep)
                os.fsync(fd)
                size = keep
        self._fd, self._size = fd, size

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._open()
        if self._size and self._size + len(data) > self.rotate_bytes:
            self._rotate()
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:  # a regular file takes it all at once; loop for the rare short write
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, self._size)  # no torn line for the retry to append to
            raise
        self._size += len(data)

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        for n in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if n == self.keep:
                older.unlink(missing_ok=True)
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                newer.rename(older)
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self.rotations += 1
        self._open()


def _complete_lines(fd: int, size: int) -> int:
    """The length of the file up to and including its last newline (0 if it has none)."""
    chunk = 64 * 1024
    end = size
    while end > 0:
        start = max(0, end - chunk)
        data = os.pread(fd, end - start, start)
        at = data.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0
