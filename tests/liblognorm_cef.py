"""liblognorm's `%cef%` parser (what rsyslog's mmnormalize runs) re-expressed in Python from its
parser.c (cefGetHdrField, cefParseName, cefParseExtensionValue, cefParseExtensions), to check CEF
escaping without a daemon; tests/integration/test_cef_sink.py checks that the real rsyslogd parses
exactly as this model does."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["CONTROL", "NoMatch", "carried", "cef_part", "lognorm_cef"]

CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")


class NoMatch(Exception):
    """liblognorm's LN_WRONGPARSER: the message is not CEF to it (rsyslog keeps it unparsed)."""


def lognorm_cef(msg: str) -> dict[str, Any]:
    """What liblognorm 2.0.6's %cef% field returns for `msg`, or NoMatch."""
    if not msg.startswith("CEF:0|") or len(msg) < 17:
        raise NoMatch("header")
    i = 6
    header: list[str] = []
    for _ in range(6):
        if msg[i] == "|":
            raise NoMatch("empty header field: an assert() in the C code")
        out = []
        while i < len(msg) and msg[i] != "|":
            if msg[i] == "\\":
                i += 1
                if i >= len(msg) or msg[i] not in "\\|":
                    raise NoMatch("header escape")
            out.append(msg[i])
            i += 1
        if i >= len(msg):
            raise NoMatch("header end")
        header.append("".join(out))
        i += 1
    i += 1  # the C code skips one character after the last '|' unseen
    ext: dict[str, str] = {}
    while i < len(msg):
        while i < len(msg) and msg[i] == " ":
            i += 1
        name_start = i
        while i < len(msg) and msg[i] != "=":
            if not (msg[i].isascii() and (msg[i].isalnum() or msg[i] in "_.")):
                raise NoMatch(f"name char {msg[i]!r}")
            i += 1
        if i + 1 >= len(msg) or msg[i] != "=":
            raise NoMatch("name without value")
        name = msg[name_start:i]
        i += 1
        start = i
        last_word = 0
        had_space = escaped = False
        while i < len(msg):
            c = msg[i]
            if escaped:
                if c not in "=\\rn":
                    raise NoMatch(f"value escape {c!r}")
                escaped = False
            elif c == "=":
                break
            elif c == "\\":
                escaped = True
            elif c == " ":
                had_space = True
            elif had_space:
                last_word, had_space = i, False
            i += 1
        end = (i if last_word == 0 else last_word - 1) if i < len(msg) else i
        raw = msg[start:end]
        value = re.sub(
            r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), raw, flags=re.S
        )
        ext[name] = value
        i = end + 1
    keys = ("DeviceVendor", "DeviceProduct", "DeviceVersion", "SignatureID", "Name", "Severity")
    return dict(zip(keys, header, strict=True)) | {"Extensions": ext}


def cef_part(record: bytes) -> str:
    """The syslog MSG: after `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD `."""
    return record.decode().split(" ", 7)[7]


def carried(text: str) -> str:
    """`text` as a CEF value carries it: control characters other than CR and LF are U+FFFD."""
    return CONTROL.sub("\ufffd", text)
