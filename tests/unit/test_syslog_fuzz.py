"""Property tests for the syslog side: whatever bytes arrive, framing and header parsing never
raise anything but a SyslogError with a reason, framing does not depend on where reads split the
stream, and the receiver turns every frame into events or rejects that say why.

Inputs fed here: 20,000 random lines + 1,000 x 60 mutated lines + 3,000 streams framed twice +
3,000 streams through the receiver = 86,000; test_apigee_fuzz.py adds the rest of the 100,000+.
"""

from __future__ import annotations

import random
import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.syslog import SyslogReceiver
from pipeline.ingest.syslog_wire import (
    MAX_OCTET_DIGITS,
    FrameError,
    Framer,
    SyslogError,
    parse_line,
)
from tests.unit.conftest import REDACTION_KEY


def budget(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,  # every run starts from the pinned examples, nothing carried over
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


REASON = re.compile(r"^[A-Za-z_][\w.\-]*: \S")
# Lines real senders wrote (logger, rsyslog, Apigee FormatMessage), to mutate.
GOOD_LINES = [
    b'<14>1 2016-02-23T09:24:39.039+0000 e49cd3a9 Apigee - - - {"client.ip":"192.0.2.1"}\x00',
    b'<13>1 2026-11-22T04:00:42.082199+00:00 vm Apigee - - [timeQuality tzKnown="1" '
    b'isSynced="0"] {"a": "b c"}',
    b'<13>Nov 22 04:00:42 vm Apigee: {"a": "b c"}',
    b'<14>Nov  2 04:00:42 mp-1 apigee[4242]: {"x":1}\r',
    b'<165>1 - host app 12 ID47 [a x="q\\"]\\\\" y="]"][b@1 z=""] {}',
    b'{"request.verb":"GET"}',
    b"<14>{}",
]


SPECIAL_BYTES = [
    b"\x00",
    b"\n",
    b"\r",
    b" ",
    b"<",
    b">",
    b"[",
    b"]",
    b'"',
    b"\\",
    b"-",
    b"1 ",
    b"{",
]
MUTATIONS_PER_EXAMPLE = 60


def mutate_line(rnd: random.Random) -> bytes:
    """One good line with 1-6 byte-level edits aimed at what the parser looks at."""
    line = bytearray(rnd.choice(GOOD_LINES))
    for _ in range(rnd.randint(1, 6)):
        at = rnd.randint(0, len(line))
        piece = (
            rnd.choice(SPECIAL_BYTES) if rnd.random() < 0.7 else rnd.randbytes(rnd.randint(1, 4))
        )
        action = rnd.randrange(4)
        if action == 0:
            line[at:at] = piece
        elif action == 1:
            del line[at : at + rnd.randint(1, 8)]
        elif action == 2:
            line[at : at + len(piece)] = piece
        else:
            del line[at:]
    return bytes(line)


def check_line(line: bytes) -> None:
    try:
        message = parse_line(line)
    except SyslogError as exc:
        assert str(exc).startswith("syslog.") and REASON.match(str(exc))
        return
    if message is not None:
        assert isinstance(message.payload, bytes)
        assert message.shape in ("rfc5424", "rfc3164", "bare")
        assert message.severity is None or 0 <= message.severity <= 7


@example(b"<14>1 - h a - - [")
@example(b"<14>1 - h a - - [x \\")
@example(b'<14>1 - h a - - [x y="\\')
@example(b"<191>1 9999-99-99T99:99:99Z h a - - - {}")
@example(b"<14>1 99999999999-01-01T00:00:00Z h a - - - {}")
@budget(20_000)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(line: bytes) -> None:
    check_line(line)


# Each example is a seed for a batch of mutated lines: Hypothesis's per-example overhead is paid
# once per batch, which is what lets this file feed tens of thousands of lines in seconds. A
# failure reports the seed (and the offending line in the assertion message).
@budget(1_000)
@given(st.integers(0, 2**32 - 1))
def test_mutated_lines_never_raise(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(MUTATIONS_PER_EXAMPLE):
        line = mutate_line(rnd)
        try:
            check_line(line)
        except AssertionError as exc:
            raise AssertionError(f"line {line!r}") from exc


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A stream of frames, each framed by octet count or a delimiter, some oversize, some junk."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        body = draw(st.sampled_from(GOOD_LINES) | st.binary(max_size=40))
        if draw(st.booleans()):
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(st.sampled_from(SPECIAL_BYTES)) + body[at:]
        framing = draw(st.sampled_from(["octets", "lf", "nul", "crlf", "raw"]))
        if framing == "octets":
            out += b"%d %s" % (len(body) + draw(st.sampled_from([0, 0, 0, -1, 1, 500])), body)
        elif framing == "raw":
            out += body
        else:
            out += body + {"lf": b"\n", "nul": b"\x00", "crlf": b"\r\n"}[framing]
    return out


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def run(framer: Framer, chunks: list[bytes], bound: int) -> list[bytes | FrameError]:
    out: list[bytes | FrameError] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
        # One frame (with its octet-count header) plus one read, at most.
        assert len(framer._buf) <= bound + MAX_OCTET_DIGITS + 1 + len(chunk)
    out.extend(framer.close())
    return out


@example(b"5 ab", [1], 64)
@example(b"4 abc", [5], 4)  # found by this test: an empty read after a partial octet frame
@example(b"0 \n0 ", [2], 4)
@budget(3_000)
@given(streams(), st.lists(st.integers(0, 2000), max_size=8), st.sampled_from([4, 64, 200, 4096]))
def test_framing_does_not_depend_on_read_boundaries(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    whole = run(Framer(limit), [stream], limit)
    pieces = run(Framer(limit), split(stream, cuts), limit)
    assert pieces == whole
    for frame in whole:
        if isinstance(frame, FrameError):
            assert REASON.match(frame.reason) and len(frame.raw) <= 512
        else:
            assert len(frame) <= limit


RECEIVER = SyslogReceiver(
    ApigeeParser(Redactor(REDACTION_KEY)),
    delivery=Any,  # type: ignore[arg-type]  # _parse does not deliver
    allow=["127.0.0.1/32"],
    metrics=Any,  # type: ignore[arg-type]
)


def expected_results(frame: bytes | FrameError) -> int:
    """How many events + rejects one frame must give, worked out without the receiver."""
    if isinstance(frame, FrameError):
        return 1
    try:
        message = parse_line(frame)
    except SyslogError:
        return 1
    if message is None:
        return 0
    result = RECEIVER.parser.parse_payload(message.payload)
    return len(result.events) + len(result.rejects)


@budget(3_000)
@given(streams(), st.sampled_from([16, 256, 65536]))
def test_receiver_turns_every_frame_into_events_or_reasons(stream: bytes, limit: int) -> None:
    frames = run(Framer(limit), [stream], limit)
    events, rejects = RECEIVER._parse((frame, "192.0.2.9") for frame in frames)
    for peer, reject in rejects:
        assert peer == "192.0.2.9"
        assert reject.source == "apigee" and REASON.match(reject.reason), reject.reason
        assert isinstance(reject.raw, bytes)
    assert all(event.gateway == "apigee" for event in events)
    # Nothing is lost on the way: every frame is accounted for.
    assert len(events) + len(rejects) == sum(expected_results(f) for f in frames)
