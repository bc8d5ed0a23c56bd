"""A bounded, ordered, fsync'd log on disk: where ingest keeps what it acknowledged while Kafka
does not confirm, until it can be replayed.

Layout of a spool directory (one per listener; `lock` keeps a second process out):
- `<seq:020d>.seg` segment files, each `MAGIC` then records, appended in order and rotated at
  `segment_bytes`. A record is `<length u32><entries u32><crc32 u32><payload>`, little-endian;
  the CRC covers length, entries and payload, so a torn write (power cut, kill -9 in the middle
  of an append) or a flipped bit is detected rather than replayed.
- `cursor`: the position up to which records were replayed (segment, offset, CRC), replaced
  atomically. Segments before it are deleted; a lost or corrupt cursor means a replay from the
  oldest segment (duplicates, never a loss).

On open, every record after the cursor is checked. A bad record at the end of the newest segment
is what a crash during an append leaves: the segment is truncated there (logged). A bad record
anywhere else is disk corruption: the rest of that segment is skipped when read (logged, counted);
later segments are still replayed.

Not thread-safe: one thread (the caller's executor) does every call. An append returns only once
its records are fsync'd: that is what lets the caller acknowledge them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

__all__ = ["Position", "Spool", "SpoolError", "SpoolFull", "SpoolRecord"]

log = structlog.get_logger(__name__)

MAGIC = b"GWSPOOL1"
HEADER = struct.Struct("<III")  # payload length, entries, crc32
CURSOR = struct.Struct("<QQI")  # segment, offset, crc32 of the first two
SUFFIX = ".seg"
# Larger than any record ingest writes (a body is at most max_body_bytes): a length above it is
# a torn header, not a reason to allocate gigabytes.
MAX_RECORD = 256 * 1024 * 1024


class SpoolError(RuntimeError):
    """The spool cannot take records: its directory is unusable or a write failed."""


class SpoolFull(SpoolError):
    """Appending would take the spool past its byte limit."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True)
class SpoolRecord:
    position: Position  # where the record starts: its identity while the process lives
    end: Position  # where the next one starts: the cursor once this one is replayed
    entries: int
    payload: bytes


def _crc(length: int, entries: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<II", length, entries)))


class Spool:
    """Parameters
    ----------
    directory
        Created (0700) if missing; locked for the life of the spool.
    max_bytes
        Bytes of segment files on disk at most; `append` raises SpoolFull past it.
    segment_bytes
        Rotation size; segments are deleted once replayed (default max_bytes / 16, 1-64 MiB).
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int | None = None):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(64 << 20, max(1 << 20, max_bytes // 16))
        self.entries = 0  # not yet replayed
        self.records = 0
        self.corrupt_bytes = 0  # skipped as unreadable since open (torn tails included)
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._bad: dict[int, int] = {}  # segment -> offset of its first unreadable record
        self._lock: int | None = None
        self._writer: BinaryIO | None = None
        self._writer_seq = -1
        self._write_seq = 0
        self._reader: BinaryIO | None = None
        self._reader_seq = -1
        self._read = Position(0, len(MAGIC))

    # -- state -------------------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def empty(self) -> bool:
        return self.records == 0

    def fits(self, size: int) -> bool:
        """Whether a payload of `size` bytes can be appended now."""
        return self.disk_bytes + HEADER.size + size + len(MAGIC) <= self.max_bytes

    # -- open / close ------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, drop replayed segments, check the rest, truncate a torn tail."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory} is not usable: {exc}") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock)
            self._lock = None
            raise SpoolError(
                f"spool directory {self.directory} is in use by another process"
            ) from exc
        segments = sorted(
            int(p.stem) for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit()
        )
        cursor = self._load_cursor()
        if cursor is None or not segments or cursor.segment < segments[0]:
            cursor = Position(segments[0] if segments else 1, len(MAGIC))
        for seq in segments:
            if seq < cursor.segment:
                self._path(seq).unlink()
        segments = [s for s in segments if s >= cursor.segment]
        self._read = cursor
        for seq in segments:
            start = cursor.offset if seq == cursor.segment else len(MAGIC)
            self._scan(seq, start, last=seq == segments[-1])
        self._write_seq = segments[-1] if segments else cursor.segment
        if self.records:
            log.info(
                "spool.opened",
                dir=str(self.directory),
                records=self.records,
                entries=self.entries,
                bytes=self.disk_bytes,
            )

    def close(self) -> None:
        """Close the files; an empty spool leaves nothing behind on disk."""
        for handle in (self._writer, self._reader):
            if handle is not None:
                handle.close()
        self._writer = self._reader = None
        if self._lock is None:
            return
        if self.empty:
            for path in self.directory.glob(f"*{SUFFIX}"):
                path.unlink()
            for name in ("cursor", "lock"):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
            with contextlib.suppress(OSError):
                self.directory.rmdir()
        os.close(self._lock)
        self._lock = None

    # -- append ------------------------------------------------------------------------------

    def append(self, items: Sequence[tuple[int, bytes]]) -> list[Position]:
        """Write `(entries, payload)` records in order, fsync, and return where each starts.
        All or nothing for the caller: on an error nothing of the call may be acknowledged."""
        size = sum(HEADER.size + len(payload) for _, payload in items)
        if self.disk_bytes + size + len(MAGIC) > self.max_bytes:
            raise SpoolFull(f"spool over {self.max_bytes} bytes")
        positions = []
        offset = 0
        try:
            for entries, payload in items:
                record = HEADER.size + len(payload)
                current = self._sizes.get(self._write_seq, 0)
                if current > len(MAGIC) and current + record > self.segment_bytes:
                    self._sync_writer()
                    self._write_seq += 1
                writer = self._open_writer()
                offset = self._sizes[self._write_seq]
                header = HEADER.pack(len(payload), entries, _crc(len(payload), entries, payload))
                writer.write(header)
                writer.write(payload)
                self._sizes[self._write_seq] = offset + record
                positions.append(Position(self._write_seq, offset))
                self.entries += entries
                self.records += 1
            self._sync_writer()
        except OSError as exc:
            # A disk full or failing: what this call wrote may be partly on disk. Readers stop
            # where its first failed record starts, and appends go on in a new segment.
            self._mark_bad(self._write_seq, offset, self._sizes.get(self._write_seq, offset))
            raise SpoolError(f"spool write failed: {exc}") from exc
        return positions

    def _open_writer(self) -> BinaryIO:
        if self._writer is not None and self._writer_seq == self._write_seq:
            return self._writer
        if self._writer is not None:
            self._writer.close()
        path = self._path(self._write_seq)
        fresh = not path.exists()
        self._writer = open(path, "ab")  # kept open across appends
        self._writer_seq = self._write_seq
        if fresh:
            os.chmod(path, 0o600)
            self._writer.write(MAGIC)
            self._sizes[self._write_seq] = len(MAGIC)
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._sync_directory()  # the new file's name must survive a crash too
        return self._writer

    def _sync_writer(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())

    # -- read / commit -----------------------------------------------------------------------

    def read(self, max_bytes: int) -> list[SpoolRecord]:
        """Records after the last one read (at least one if any, about `max_bytes` in all).
        Reading does not consume: `commit` does, once they are replayed."""
        out: list[SpoolRecord] = []
        taken = 0
        while taken < max_bytes:
            seq, offset = self._read.segment, self._read.offset
            size = self._sizes.get(seq)
            if size is None:
                following = [s for s in self._sizes if s > seq]
                if not following:
                    break
                self._read = Position(min(following), len(MAGIC))
                continue
            stop = self._bad.get(seq, size)
            if offset >= stop:
                if seq == self._write_seq:
                    break  # caught up with the writer
                self._read = Position(seq + 1, len(MAGIC))
                continue
            record = self._read_record(seq, offset, stop)
            if record is None:
                self._mark_bad(seq, offset, stop)
                continue
            out.append(record)
            taken += HEADER.size + len(record.payload)
            self._read = record.end
        return out

    def commit(self, end: Position, entries: int, records: int) -> None:
        """Everything before `end` is replayed: persist the cursor, then drop what it passed."""
        self.entries = max(0, self.entries - entries)
        self.records = max(0, self.records - records)
        drained = end.segment == self._write_seq and end.offset >= self._sizes.get(end.segment, 0)
        if drained:
            # Start the next segment afresh rather than keep a replayed file growing.
            self.entries = self.records = 0
            self._write_seq = end.segment + 1
            end = self._read = Position(self._write_seq, len(MAGIC))
        tmp = self.directory / "cursor.tmp"
        with open(tmp, "wb") as out:
            check = zlib.crc32(struct.pack("<QQ", end.segment, end.offset))
            out.write(CURSOR.pack(end.segment, end.offset, check))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.directory / "cursor")
        self._sync_directory()
        for seq in [s for s in self._sizes if s < end.segment]:
            self._drop(seq)

    # -- internals ---------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{SUFFIX}"

    def _drop(self, seq: int) -> None:
        if self._writer is not None and seq == self._writer_seq:
            self._writer.close()
            self._writer = None
        if self._reader is not None and seq == self._reader_seq:
            self._reader.close()
            self._reader = None
        self._sizes.pop(seq, None)
        self._bad.pop(seq, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(seq).unlink()

    def _load_cursor(self) -> Position | None:
        try:
            raw = (self.directory / "cursor").read_bytes()
            segment, offset, crc = CURSOR.unpack(raw)
        except (OSError, struct.error):
            return None
        if crc != zlib.crc32(struct.pack("<QQ", segment, offset)):
            log.warning("spool.cursor_corrupt", dir=str(self.directory))
            return None
        return Position(segment, offset)

    def _read_record(self, seq: int, offset: int, stop: int) -> SpoolRecord | None:
        if self._reader is None or self._reader_seq != seq:
            if self._reader is not None:
                self._reader.close()
            self._reader = open(self._path(seq), "rb")
            self._reader_seq = seq
        self._reader.seek(offset)
        return _parse(self._reader, seq, offset, stop)

    def _scan(self, seq: int, start: int, *, last: bool) -> None:
        path = self._path(seq)
        size = path.stat().st_size
        with open(path, "rb") as handle:
            good_magic = handle.read(len(MAGIC)) == MAGIC
            offset = start
            if good_magic:
                handle.seek(offset)
                while offset < size and (record := _parse(handle, seq, offset, size)) is not None:
                    self.entries += record.entries
                    self.records += 1
                    offset = record.end.offset
        if not good_magic:
            offset = 0
        if offset < size or not good_magic:
            if last:
                log.warning(
                    "spool.truncated",
                    segment=path.name,
                    at=offset,
                    dropped_bytes=size - offset,
                    detail="an append was cut short (crash during a write): its sender was not "
                    "acknowledged",
                )
                self.corrupt_bytes += size - offset
                if offset == 0:
                    path.unlink()
                    return
                with open(path, "r+b") as handle:
                    handle.truncate(offset)
                    os.fsync(handle.fileno())
                size = offset
            else:
                self._mark_bad(seq, offset, size)
        self._sizes[seq] = size

    def _mark_bad(self, seq: int, offset: int, stop: int) -> None:
        if self._bad.get(seq) == offset:
            return
        self._bad[seq] = offset
        self.corrupt_bytes += stop - offset
        if seq == self._write_seq:
            # Nothing may be appended behind an unreadable record: it would never be read.
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._write_seq += 1
        log.error(
            "spool.corrupt",
            segment=self._path(seq).name,
            at=offset,
            skipped_bytes=stop - offset,
            detail="unreadable record (disk corruption or a failed write); the rest of this "
            "segment is skipped",
        )

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _parse(handle: BinaryIO, seq: int, offset: int, stop: int) -> SpoolRecord | None:
    """The record at `offset` (the handle is positioned there), or None if it is not whole."""
    header = handle.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, entries, crc = HEADER.unpack(header)
    end = offset + HEADER.size + length
    if length > MAX_RECORD or end > stop:
        return None
    payload = handle.read(length)
    if len(payload) < length or _crc(length, entries, payload) != crc:
        return None
    return SpoolRecord(Position(seq, offset), Position(seq, end), entries, payload)
