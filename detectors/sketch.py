"""Linear counting: how many distinct items a small bitmap has seen (Whang et al., 1990).

Detectors keep per-subject sets this way (ids walked, networks used, addresses failing) in one
Python int of 16-256 bits instead of a set that grows with an attacker's imagination.
"""

from __future__ import annotations

import math

__all__ = ["distinct"]


def distinct(sketch: int, bits: int, saturated: float | None = None) -> float:
    """Estimated distinct items hashed into the `bits`-bit `sketch` (exact while few).

    A full sketch says only "many": it returns `saturated` (default three times `bits`).

    >>> round(distinct(0b1011, 64), 2), round(distinct((1 << 64) - 2, 64))
    (3.07, 266)
    >>> distinct((1 << 16) - 1, 16)
    48.0
    """
    zeros = bits - sketch.bit_count()
    if zeros == 0:
        return bits * 3.0 if saturated is None else saturated
    return -bits * math.log(zeros / bits)
