"""The on-disk spool: order, durability across reopen, torn tails and corruption, limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pipeline.config import Settings
from pipeline.ingest.outputs import spool_path
from pipeline.ingest.spool import HEADER, MAGIC, Spool, SpoolError, SpoolFull


def opened(directory: Path, **options: int) -> Spool:
    options.setdefault("max_bytes", 1 << 20)
    spool = Spool(directory, **options)  # type: ignore[arg-type]
    spool.open()
    return spool


def payloads(spool: Spool, max_bytes: int = 1 << 30) -> list[bytes]:
    return [r.payload for r in spool.read(max_bytes)]


def drain(spool: Spool) -> list[bytes]:
    """Read and commit everything, as the replayer does."""
    out: list[bytes] = []
    while records := spool.read(64):
        out.extend(r.payload for r in records)
        spool.commit(records[-1].end, sum(r.entries for r in records), len(records))
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=64)
    items = [(i % 3 + 1, f"record {i}".encode() * 3) for i in range(20)]
    positions = spool.append(items[:7]) + spool.append(items[7:])
    assert positions == sorted(positions) and len(set(positions)) == 20
    assert len(segments(tmp_path)) > 3  # rotated
    assert spool.entries == sum(n for n, _ in items) and spool.records == 20
    assert drain(spool) == [p for _, p in items]
    assert spool.empty and spool.entries == 0
    # Drained: the replayed segments are gone.
    assert segments(tmp_path) == []
    spool.append([(1, b"after")])
    assert drain(spool) == [b"after"]
    spool.close()


def test_reopen_replays_what_was_not_committed_and_only_that(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=80)
    spool.append([(1, f"r{i}".encode() * 10) for i in range(10)])
    first = spool.read(50)
    spool.commit(first[-1].end, len(first), len(first))
    spool.read(1 << 20)  # read but never committed: the process died while replaying it
    spool.close()  # not empty: the files stay

    again = opened(tmp_path, segment_bytes=80)
    assert again.records == 10 - len(first)
    assert drain(again) == [f"r{i}".encode() * 10 for i in range(len(first), 10)]
    again.close()
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_torn_tail_is_truncated_with_a_log_line_and_appends_go_on(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.append([(1, b"kept-1"), (1, b"kept-2")])
    spool.close()
    (seg,) = segments(tmp_path)
    good_size = seg.stat().st_size
    with open(seg, "ab") as f:  # a crash after the header, halfway through the payload
        f.write(HEADER.pack(100, 1, 12345) + b"x" * 40)

    with capture_logs() as logs:
        again = opened(tmp_path)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["spool.truncated"]
    assert logs[0]["dropped_bytes"] == HEADER.size + 40
    assert seg.stat().st_size == good_size
    again.append([(1, b"new")])
    assert drain(again) == [b"kept-1", b"kept-2", b"new"]
    again.close()


def test_a_flipped_bit_fails_the_checksum(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.append([(1, b"a" * 50), (1, b"b" * 50)])
    spool.close()
    (seg,) = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-10] ^= 0x01  # inside the last record's payload
    seg.write_bytes(bytes(data))
    again = opened(tmp_path)
    assert drain(again) == [b"a" * 50]
    assert again.corrupt_bytes == HEADER.size + 50
    again.close()


def test_corruption_in_an_older_segment_skips_its_rest_not_later_segments(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=64)
    spool.append([(1, bytes([65 + i]) * 30) for i in range(6)])
    spool.close()
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[len(MAGIC) + HEADER.size] ^= 0xFF
    first.write_bytes(bytes(data))
    with capture_logs() as logs:
        again = opened(tmp_path, segment_bytes=64)
    assert "spool.corrupt" in [e["event"] for e in logs]
    # One record per segment (8 + 42 + 42 > 64): only the first record is lost.
    assert drain(again) == [bytes([65 + i]) * 30 for i in range(1, 6)]
    again.close()


def test_a_corrupt_cursor_means_duplicates_not_loss(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.append([(1, b"one"), (1, b"two")])
    records = spool.read(1)
    spool.commit(records[0].end, 1, 1)
    spool.close()
    (tmp_path / "cursor").write_bytes(b"\x00" * 20)
    again = opened(tmp_path)
    assert drain(again) == [b"one", b"two"]
    again.close()


def test_the_byte_limit_refuses_appends(tmp_path: Path) -> None:
    spool = opened(tmp_path, max_bytes=200, segment_bytes=1 << 20)
    spool.append([(1, b"x" * 100)])
    assert not spool.fits(100)
    with pytest.raises(SpoolFull):
        spool.append([(1, b"y" * 100)])
    assert drain(spool) == [b"x" * 100]
    assert spool.fits(100)
    spool.append([(1, b"y" * 100)])
    spool.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    with pytest.raises(SpoolError, match="in use by another process"):
        opened(tmp_path)
    spool.close()
    opened(tmp_path).close()


def test_an_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(SpoolError, match="not usable"):
        opened(blocker / "spool")


def test_files_are_private(tmp_path: Path) -> None:
    spool = opened(tmp_path / "s")
    spool.append([(1, b"secret-ish")])
    assert os.stat(tmp_path / "s").st_mode & 0o777 == 0o700
    assert segments(tmp_path / "s")[0].stat().st_mode & 0o777 == 0o600
    spool.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(st.binary(min_size=0, max_size=90), min_size=1, max_size=25),
    segment_bytes=st.integers(min_value=40, max_value=400),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_a_crash_anywhere_in_the_last_segment_keeps_exactly_the_whole_records(
    tmp_path_factory: pytest.TempPathFactory, items: list[bytes], segment_bytes: int, cut: float
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = opened(directory, segment_bytes=segment_bytes)
    positions = spool.append([(1, p) for p in items])
    spool.close()
    last = segments(directory)[-1]
    size = last.stat().st_size
    keep = int(size * cut)
    with open(last, "r+b") as f:
        f.truncate(keep)
    last_seq = int(last.stem)
    survivors = [
        p
        for p, pos in zip(items, positions, strict=True)
        if pos.segment < last_seq or pos.offset + HEADER.size + len(p) <= keep
    ]
    again = opened(directory, segment_bytes=segment_bytes)
    assert again.records == len(survivors)
    again.append([(1, b"after the crash")])
    assert drain(again) == [*survivors, b"after the crash"]
    again.close()


def test_the_default_spool_lives_where_the_platform_keeps_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert Settings().spool_dir == str(tmp_path / "xdg" / "gatewatch" / "spool")
    # A systemd unit with StateDirectory=gatewatch (several are colon-separated).
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/gatewatch:/var/lib/other")
    settings = Settings()
    assert settings.spool_dir == "/var/lib/gatewatch/spool"
    assert spool_path(settings, "collector-8080") == Path("/var/lib/gatewatch/spool/collector-8080")
    monkeypatch.setenv("GATEWATCH_SPOOL_DIR", "off")
    assert spool_path(Settings(), "collector-8080") is None
