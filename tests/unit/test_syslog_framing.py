"""TCP framing: LF/NUL-delimited and RFC 6587 octet-counted frames, detected per frame, across any
read boundaries, with bounded memory."""

from __future__ import annotations

import pytest

from pipeline.ingest.syslog_wire import FrameError, Framer

A = b'<14>1 - mp Apigee - - - {"a":1}'
B = b'<13>Nov 22 04:00:42 vm Apigee: {"b": "x y"}'
C = b'{"c":3}'


def octets(frame: bytes) -> bytes:
    return b"%d %s" % (len(frame), frame)


def feed_all(framer: Framer, chunks: list[bytes]) -> list[bytes | FrameError]:
    out: list[bytes | FrameError] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    out.extend(framer.close())
    return out


def test_newline_framing_with_crlf_and_nul() -> None:
    stream = A + b"\n" + B + b"\r\n" + C + b"\x00\n"
    frames = feed_all(Framer(1024), [stream])
    # CR stays in the frame (parse_line strips it); the NUL ends a frame and "\n" after it is a
    # blank frame, which is no frame at all.
    assert frames == [A, B + b"\r", C]


def test_octet_counting() -> None:
    assert feed_all(Framer(1024), [octets(A) + octets(B) + octets(C)]) == [A, B, C]


def test_octet_counted_frame_may_contain_newlines() -> None:
    frame = A + b"\nsecond line"
    assert feed_all(Framer(1024), [octets(frame)]) == [frame]


def test_framing_is_detected_per_frame() -> None:
    stream = octets(A) + B + b"\n" + octets(C) + A + b"\n"
    assert feed_all(Framer(1024), [stream]) == [A, B, C, A]


@pytest.mark.parametrize(
    "stream",
    [
        A + b"\n" + B + b"\n" + C + b"\n",
        octets(A) + octets(B) + octets(C),
        octets(A) + B + b"\x00" + octets(C),
    ],
)
def test_every_split_point_gives_the_same_frames(stream: bytes) -> None:
    expected = feed_all(Framer(1024), [stream])
    assert expected == [A, B, C]
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1, 7):
            chunks = [stream[:i], stream[i:j], stream[j:]]
            assert feed_all(Framer(1024), chunks) == expected, (i, j)


def test_byte_by_byte() -> None:
    stream = octets(A) + B + b"\n" + octets(C)
    assert feed_all(Framer(1024), [bytes([b]) for b in stream]) == [A, B, C]


def test_octet_count_waits_for_its_space() -> None:
    framer = Framer(1024)
    assert framer.feed(b"12") == []
    assert framer.feed(b"34") == []  # still could be an octet count
    assert framer.feed(b"\n") == [b"1234"]  # it was a line of digits after all


def test_oversize_octet_frame_is_rejected_and_skipped() -> None:
    big = b"x" * 5000
    framer = Framer(1000)
    out = feed_all(framer, [octets(A), octets(big)[:3000], octets(big)[3000:], octets(B)])
    assert out[0] == A and out[2] == B and len(out) == 3
    error = out[1]
    assert isinstance(error, FrameError)
    assert error.reason == "frame: 5000 bytes (octet count) exceed the 1000-byte limit"
    assert error.raw == big[:512]


def test_oversize_line_is_rejected_and_skipped_to_its_end() -> None:
    framer = Framer(1000)
    out = []
    out += framer.feed(A + b"\n" + b"y" * 600)
    out += framer.feed(b"y" * 600)  # now 1200 bytes without a delimiter: rejected
    out += framer.feed(b"y" * 5000)  # still the same line: discarded without buffering
    assert len(framer._buf) == 0
    out += framer.feed(b"yyy\n" + B + b"\n")
    out += framer.close()
    assert [o if isinstance(o, bytes) else o.reason for o in out] == [
        A,
        "frame: line longer than the 1000-byte limit",
        B,
    ]


def test_complete_oversize_line_in_one_read_is_rejected() -> None:
    out = Framer(100).feed(b"z" * 150 + b"\n" + C + b"\n")
    assert isinstance(out[0], FrameError) and out[1:] == [C]


def test_memory_stays_bounded() -> None:
    framer = Framer(1000)
    for _ in range(200):
        framer.feed(b"w" * 4096)  # one endless line
        assert len(framer._buf) <= 1000 + 4096
    framer = Framer(1000)
    framer.feed(b"999999 ")
    for _ in range(200):
        framer.feed(b"v" * 4096)  # an endless oversize octet frame
        assert len(framer._buf) == 0


def test_close_delivers_an_unterminated_last_line() -> None:
    framer = Framer(1024)
    assert framer.feed(A + b"\n" + B) == [A]
    assert framer.close() == [B]


def test_close_inside_an_octet_frame_is_a_truncated_frame() -> None:
    framer = Framer(1024)
    assert framer.feed(octets(A)[:-5]) == []
    [error] = framer.close()
    assert isinstance(error, FrameError)
    assert (
        error.reason
        == f"frame: connection closed after {len(A) - 5} of {len(A)} octet-counted bytes"
    )
    assert error.raw == A[:-5]


def test_close_of_a_clean_stream_is_nothing() -> None:
    framer = Framer(1024)
    framer.feed(A + b"\n\x00")
    assert framer.close() == []


def test_zero_length_octet_frame_is_skipped_safely() -> None:
    assert [f for f in feed_all(Framer(64), [b"0 0 " + octets(C)]) if f] == [C]


def test_max_frame_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Framer(0)
