"""Undo what attackers do to slip a payload past a pattern, the way a WAF normalizes a value.

Every step is bounded: at most `MAX_ROUNDS` rounds of percent-decoding, input cut at `MAX_CHARS`,
and each regex below is linear in its input. The result keeps two views of one value:

- `text`: percent-decoded (repeatedly, `%uXXXX` and over-long UTF-8 too), HTML entities resolved,
  full-width and circled characters folded (NFKC), lower case, SQL comments folded to one space,
  runs of white space folded to one space and line breaks to one `\n`;
- `shell`: `text` without the characters a shell ignores inside a word (`\\`, empty quotes,
  `$@`, `${IFS}`), so that `w'h'o'am'i` and `c\\at` read as the commands they are.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

__all__ = ["MAX_CHARS", "Decoded", "decode"]

MAX_CHARS = 2048
MAX_ROUNDS = 3

_PCT = re.compile(rb"%([0-9a-fA-F]{2})")
_PCT_U = re.compile(r"%u([0-9a-fA-F]{4})", re.IGNORECASE)
# 0xC0/0xC1 lead bytes only ever start an over-long (forbidden) encoding of an ASCII character,
# e.g. %c0%ae for "." or %c0%af for "/": a classic traversal disguise.
_OVERLONG = re.compile(rb"[\xc0\xc1][\x80-\xbf]")
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-f]+|[a-z]{2,8});?", re.IGNORECASE)
# MySQL runs the body of /*!50000 ... */; every other comment is a blank.
_COMMENT = re.compile(r"/\*(!\d*)?(.*?)(?:\*/|$)", re.DOTALL)
# Line breaks survive (as "\n"): a mail or shell command injected after one must stay on its line.
_SPACE = re.compile(r"[ \t\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")
_BREAK = re.compile(r"\r\n?|[\x85\u2028\u2029]")
# Inside a shell word these vanish: c\at, c''at, c""at, ca$@t, cat${IFS}/etc/passwd.
_SHELL_NOISE = re.compile(
    r"\\(?=[a-z0-9/.])|''|\"\"|``|\$[@*!?$#_-]|\$\(\)|[<>]\(\)|\$\{[a-z_]*\}(?<!\{ifs\})"
)
# $IFS is a space to the shell: cat${IFS}/etc/passwd.
# $'...' and $"..." are quoted strings to the shell: {,$'whoami',}.
_ANSI_C = re.compile(r"\$(['\"])")
_IFS = re.compile(r"\$\{ifs\}|\$ifs\b")
_JS_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_QUOTE_SPLIT = re.compile(r"(?<=[a-z])['\"](?=[a-z])|^['\"](?=[a-z]+['\"]?[a-z])")


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    shell: str
    null_byte: bool
    encoded_layers: int  # percent-decoding rounds that changed something


def _overlong(m: re.Match[bytes]) -> bytes:
    b1, b2 = m.group(0)
    return bytes([((b1 & 0x1F) << 6) | (b2 & 0x3F)])


def _fold_comment(m: re.Match[str]) -> str:
    return f" {m.group(2)} " if m.group(1) is not None else " "


def _percent_decode(text: str) -> str:
    if "%u" in text or "%U" in text:
        text = _PCT_U.sub(lambda m: chr(int(m.group(1), 16)), text)
    raw = _PCT.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "surrogatepass"))
    if b"\xc0" in raw or b"\xc1" in raw:
        raw = _OVERLONG.sub(_overlong, raw)
    return raw.decode("utf-8", "replace")


def decode(value: str) -> Decoded:
    """Normalize one value (a query value or name, or a path).

    >>> decode("1%2527%20UNION/**/SELECT%09null").text
    "1' union select null"
    >>> decode("..%c0%af..%c0%afetc/passwd").text
    '../../etc/passwd'
    >>> decode("&#x3C;svg/onload=alert(1)&gt;").text
    '<svg/onload=alert(1)>'
    >>> decode("w'h'o'am'i;c\\\\at /et\\\\c/pa''sswd").shell
    'whoami;cat /etc/passwd'
    """
    text = value[:MAX_CHARS]
    layers = 0
    while layers < MAX_ROUNDS and "%" in text:
        decoded = _percent_decode(text)
        if decoded == text:
            break
        text = decoded[:MAX_CHARS]
        layers += 1
    if "&" in text and _ENTITY.search(text):
        text = html.unescape(html.unescape(text))
    if "\\u" in text or "\\x" in text:
        text = _JS_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text)
    if not text.isascii():
        # A lone surrogate (from a bad escape upstream) is no character: replace it.
        text = text.encode("utf-8", "replace").decode("utf-8")
        # Full-width "\uff1cscript\uff1e", circled digits ("http://①②⑦.⓪.⓪.①"), ideographic stops.
        text = unicodedata.normalize("NFKC", text).replace("。", ".").replace("｡", ".")
    null_byte = "\x00" in text
    text = text.lower()
    for _ in range(2):  # twice: /*!5000select a/*!50000from*/ nests one comment in another
        if "/*" not in text:
            break
        text = _COMMENT.sub(_fold_comment, text)
    if "\r" in text:
        text = _BREAK.sub("\n", text)
    if "  " in text or not text.isprintable():  # most values need no folding
        text = _SPACE.sub(" ", text)
    shell = text
    if (
        "\\" in shell
        or "'" in shell
        or '"' in shell
        or "$" in shell
        or "`" in shell
        or "()" in shell
    ):
        shell = _QUOTE_SPLIT.sub("", _SHELL_NOISE.sub("", _IFS.sub(" ", _ANSI_C.sub(r"\1", shell))))
    if "+" in shell:
        shell = shell.replace("+", " ")  # a WAF reads a "+" left after decoding as a space
    return Decoded(text=text, shell=shell, null_byte=null_byte, encoded_layers=layers)
