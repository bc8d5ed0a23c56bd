"""The OCSF sink's JSON-lines file: one fsync per batch, rotation by size keeping N files, a torn
last line (a crash mid-write) cut on open, a failed write (disk full) leaving no partial line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sinks.jsonl_file import JsonLinesFile


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(b'{"n": %d}\n' % i for i in range(start, start + n))


async def test_batches_are_appended_and_fsynced_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    f = JsonLinesFile(tmp_path / "out.jsonl", rotate_bytes=1 << 20)
    await f.open()
    await f.append(lines(3))
    await f.append(lines(2, 3))
    await f.close()
    assert (tmp_path / "out.jsonl").read_bytes() == lines(5)
    assert len(synced) == 2


async def test_rotation_keeps_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    f = JsonLinesFile(path, rotate_bytes=100, keep=2)
    for batch in range(6):
        await f.append(lines(5, batch * 5))  # ~50 bytes: a new file every second batch
    await f.close()
    assert f.rotations == 2
    content = contents(tmp_path)
    assert sorted(content) == ["out.jsonl", "out.jsonl.1", "out.jsonl.2"]
    oldest_first = ("out.jsonl.2", "out.jsonl.1", "out.jsonl")
    assert b"".join(content[name] for name in oldest_first) == lines(30)


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


async def test_a_torn_last_line_is_cut_on_open(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(lines(2) + b'{"n": 2, "half')
    f = JsonLinesFile(path, rotate_bytes=1 << 20)
    await f.open()
    await f.append(lines(1, 2))
    await f.close()
    assert path.read_bytes() == lines(3)


async def test_a_failed_write_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    f = JsonLinesFile(path, rotate_bytes=1 << 20)
    await f.append(lines(2))
    real_write = os.write

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:7]))  # part of the batch lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        await f.append(lines(3, 2))
    monkeypatch.setattr(os, "write", real_write)
    await f.append(lines(3, 2))  # the retry
    await f.close()
    assert path.read_bytes() == lines(5)
