"""`gatewatch parse`: events as JSON lines on stdout, rejects with reasons on stderr."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from pipeline.ingest.parse import parse_stream

KONG = Path(__file__).parent.parent / "fixtures" / "kong"


def test_json_lines_with_bad_lines_in_between() -> None:
    lines = [
        orjson.dumps(orjson.loads((KONG / "kong-3.8-docs-200.json").read_bytes())),
        b"{not json",
        orjson.dumps(
            orjson.loads((KONG / "kong-3.9-serializer-constructed-429.json").read_bytes())
        ),
        b"",
    ]
    out, err = io.StringIO(), io.StringIO()
    accepted, rejected = parse_stream("kong", b"\n".join(lines), b"k", out, err)
    assert (accepted, rejected) == (2, 1)
    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["status"] for e in events] == [200, 429]
    assert "my-secret-key-not-redacted" not in out.getvalue()
    assert orjson.loads(err.getvalue())["reason"].startswith("line 2: malformed JSON")


def test_a_whole_http_log_body_is_one_document() -> None:
    body = b"[" + b",".join(p.read_bytes() for p in sorted(KONG.glob("*.json"))) + b"]"
    out, err = io.StringIO(), io.StringIO()
    assert parse_stream("kong", body, b"k", out, err) == (4, 0)
    assert err.getvalue() == ""


APIGEE = Path(__file__).parent.parent / "fixtures" / "apigee"


def test_apigee_json_and_syslog_sources() -> None:
    out, err = io.StringIO(), io.StringIO()
    accepted, rejected = parse_stream(
        "apigee-json", (APIGEE / "messagelogging-200.json").read_bytes(), b"k", out, err
    )
    assert (accepted, rejected) == (1, 0)
    assert orjson.loads(out.getvalue())["gateway"] == "apigee"

    syslog = (APIGEE / "formatmessage-true.log").read_bytes() + b"\n<14>garbage\n"
    out, err = io.StringIO(), io.StringIO()
    accepted, rejected = parse_stream("apigee-syslog", syslog, b"k", out, err)
    assert accepted >= 1 and rejected == 1
    assert orjson.loads(err.getvalue().splitlines()[-1])["reason"].startswith("line ")
