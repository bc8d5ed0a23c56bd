"""Helpers shared by every gateway parser: route templates and tolerant number parsing."""

from __future__ import annotations

import re

__all__ = ["ParseError", "as_int", "ascii_ints", "route_template"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEXID = re.compile(r"^[0-9a-fA-F]{16,}$")
_NUM = re.compile(r"^\d+$")
# ASCII digits only (str.isdigit also accepts "²"), and few enough to fit a signed 64-bit integer:
# anything larger would pass here and then break msgpack further down.
_INT = re.compile(r"^\s*-?[0-9]{1,18}\s*$")
_MAX = 2**63 - 1
_DIGITS = re.compile(r"(?<![0-9])[0-9]{1,18}(?![0-9])")


class ParseError(ValueError):
    """An input field is missing or has the wrong type; the message is the reject reason."""


def route_template(path: str) -> str:
    """Collapse object ids in a path so that one endpoint has one name.

    >>> route_template("/users/123/orders/9f1b6c1e-3a2b-4c5d-9e6f-0a1b2c3d4e5f")
    '/users/{id}/orders/{uuid}'
    >>> route_template("/")
    '/'
    """
    parts = path.split("/")
    for i, seg in enumerate(parts):
        if not seg:
            continue
        if _NUM.match(seg):
            parts[i] = "{id}"
        elif len(seg) == 36 and _UUID.match(seg):
            parts[i] = "{uuid}"
        elif _HEXID.match(seg):
            parts[i] = "{hex}"
    return "/".join(parts)


def as_int(value: object, field: str, *, default: int | None = None) -> int:
    """An integer from an int, a float or a numeric string (Kong 1.x sends sizes as strings)."""
    if isinstance(value, bool):
        raise ParseError(f"{field}: expected an integer, got a boolean")
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX:
        return int(value)
    if isinstance(value, int):
        if abs(value) > _MAX:
            raise ParseError(f"{field}: integer out of range")
        return value
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    if value is None and default is not None:
        return default
    if value is None or value == "":
        if default is not None:
            return default
        raise ParseError(f"{field}: missing")
    raise ParseError(f"{field}: expected an integer, got {type(value).__name__}")


def ascii_ints(text: str) -> list[int]:
    """Every run of ASCII digits in `text` that fits an int64, in order.

    >>> ascii_ints("502, 200 : 200")
    [502, 200, 200]
    """
    return [int(tok) for tok in _DIGITS.findall(text)]
