"""Small streaming summaries detectors keep per subject, in a few bytes whatever an attacker sends.

- Linear counting (Whang et al., 1990): how many distinct items a bitmap has seen. Sets (ids
  walked, networks used, addresses failing) live in one Python int of 16-256 bits instead of a set
  that grows with an attacker's imagination.
- A decayed majority vote (Boyer-Moore): which item most of a stream is, and by how much it leads
  all the others together.
"""

from __future__ import annotations

import math

__all__ = ["distinct", "network", "vote"]


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


def vote(top: str, lead: float, item: str) -> tuple[str, float]:
    """One step of a majority vote: the leading item and its (already decayed) lead, after `item`.

    An item with share p of the stream leads the others by about (2p - 1) of its length; no item
    above half leaves the lead near zero.

    >>> top, lead = "", 0.0
    >>> for item in "aabab" + "a" * 5:
    ...     top, lead = vote(top, lead, item)
    >>> top, lead
    ('a', 6.0)
    """
    if item == top:
        return top, lead + 1.0
    if lead >= 1.0:
        return top, lead - 1.0
    return item, 1.0


def network(ip: str) -> str:
    """The /24 (IPv4) or the first four groups (IPv6) of an address: hosts of one owner share it.

    >>> network("203.0.113.77"), network("2001:db8:1:2:3::9")
    ('203.0.113', '2001:db8:1:2')
    """
    if ":" in ip:
        return ":".join(ip.split(":")[:4])
    return ip.rsplit(".", 1)[0]
