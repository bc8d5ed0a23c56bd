"""Benign query-string shapes: what real users and partner systems put in URLs.

Search terms carry quotes, apostrophes, `&`, accents and scripts other than Latin, and some of them
contain words a naive injection regex trips on (`select`, `union`, `drop`, `or`, `script`, `alert`,
`1=1`) because people search for such things in a shop that sells books, furniture and posters.
Partner queries carry e-mail addresses (PII), ISO dates, cursors, repeated arguments and redirect
URLs.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect
from datetime import UTC, datetime, timedelta

__all__ = [
    "CATEGORIES",
    "SEARCH_TERMS",
    "email",
    "iso_date",
    "product_id",
    "search_term",
]

CATEGORIES = (
    "shoes",
    "electronics",
    "garden",
    "books",
    "toys",
    "beauty",
    "kitchen",
    "sports",
    "furniture",
    "fashion",
    "home-decor",
    "office",
    "pets",
    "music",
)
BRANDS = (
    "acme",
    "northwind",
    "contoso",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "levis",
    "dr-martens",
    "l-oreal",
    "haagen-dazs",
    "bosch",
    "philips",
)
SORTS = ("relevance", "price", "-price", "rating", "newest")
# (term, weight). Most searches are plain; the tail is what breaks naive detectors.
SEARCH_TERMS: tuple[tuple[str, int], ...] = (
    ("shoes", 30),
    ("red dress", 14),
    ("laptop", 20),
    ("usb-c cable", 12),
    ("garden chair", 8),
    ("coffee", 10),
    ("espresso machine", 8),
    ("iphone 15 case", 12),
    ("airpods", 10),
    ("running shoes", 10),
    ("yoga mat", 6),
    ("lego", 9),
    ("desk lamp", 6),
    ("tv", 8),
    ("office chair", 7),
    ("backpack", 7),
    ("LAPTOP", 2),
    ("  laptop stand ", 2),
    ("lapotp", 1),
    ('"red shoes"', 4),
    ("O'Brien", 2),
    ("women's running shoes", 5),
    ("kids' bike helmet", 3),
    ("levi's 501", 4),
    ("l'oréal shampoo", 3),
    ("rock 'n' roll poster", 1),
    ("dr. martens 1460", 3),
    ("café table", 3),
    ("crème brûlée torch", 1),
    ("Häagen-Dazs", 1),
    ("naïve art print", 1),
    ("Ça va t-shirt", 1),
    ("日本茶 急須", 1),
    ("ñandú plush", 1),
    ("größe 42 schuhe", 2),
    ("table & chairs", 4),
    ("salt & pepper grinder", 3),
    ("AT&T phone case", 1),
    ("black or white", 2),
    ("10% off", 2),
    ("50% off shoes", 2),
    ('55" 4k tv', 3),
    ("1/2 inch drill bit", 1),
    ("5' extension cord", 1),
    ("#1 bestseller", 1),
    ("c++ primer", 1),
    ("c# in depth", 1),
    ("union station poster", 1),
    ("union jack cushion", 2),
    ("select comfort mattress", 1),
    ("drop leaf table", 2),
    ("drop-down shelf", 1),
    ("sql for beginners", 1),
    ("select * from book", 1),
    ("1=1 tutorial", 1),
    ("javascript: the good parts", 1),
    ("medical alert bracelet", 1),
    ("script font stencil", 1),
    ("sleep mask", 2),
    ("where's waldo", 1),
    ("<3 mug", 1),
    ("exec chair -- black", 1),
    ("1'' foam pad", 1),
)
_TERMS = tuple(t for t, _ in SEARCH_TERMS)
_TERM_WEIGHTS = tuple(w for _, w in SEARCH_TERMS)
FIRST = (
    "jane",
    "john",
    "maria",
    "li",
    "sean",
    "aisha",
    "lukas",
    "emma",
    "noah",
    "sofia",
    "mohammed",
    "chloe",
    "mateo",
    "hana",
    "olivia",
    "finn",
    "zoe",
    "arjun",
)
LAST = (
    "doe",
    "smith",
    "garcia",
    "wang",
    "o'brien",
    "khan",
    "müller",
    "martin",
    "rossi",
    "nguyen",
    "kowalski",
    "silva",
    "dubois",
    "jensen",
    "tanaka",
    "patel",
)
DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "example.com",
    "web.de",
    "orange.fr",
    "icloud.com",
    "hotmail.co.uk",
    "example.ie",
)
MAX_PRODUCT = 60_000
_EPOCH = datetime(2023, 11, 14, tzinfo=UTC)


_TERM_CUM = tuple(itertools.accumulate(_TERM_WEIGHTS))


def search_term(rng: random.Random) -> str:
    return _TERMS[bisect(_TERM_CUM, rng.random() * _TERM_CUM[-1])]


def product_id(rng: random.Random, top: int = MAX_PRODUCT) -> int:
    """Product popularity is heavy-tailed: log-uniform ids put most views on the first few
    thousand products."""
    return int(math.exp(rng.uniform(0.0, math.log(top))))


def email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST).replace("ü", "u")
    sep = rng.choice((".", "_", "", "."))
    n = str(rng.randint(1, 99)) if rng.random() < 0.4 else ""
    return f"{first}{sep}{last}{n}@{rng.choice(DOMAINS)}"


_HOURS = (0, 0, 0, 6, 12)
# Every date a query can name (the last 90 days), formatted once.
_DAYS = tuple(_EPOCH - timedelta(days=d) for d in range(91))
_DATES = tuple(day.strftime("%Y-%m-%d") for day in _DAYS)
_STAMPS = tuple(
    tuple((day + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in _HOURS)
    for day in _DAYS
)


def iso_date(rng: random.Random, *, days_back: int = 60, with_time: bool = True) -> str:
    """A date in the last `days_back` days (at most 90), as a date or an ISO timestamp.

    >>> iso_date(random.Random(1), days_back=0, with_time=False)
    '2023-11-14'
    >>> iso_date(random.Random(1), days_back=30)[10:]
    'T12:00:00Z'
    """
    if not 0 <= days_back <= 90:
        raise ValueError("days_back must be in [0, 90]")
    d = int(rng.random() * (days_back + 1))
    if not with_time:
        return _DATES[d]
    return _STAMPS[d][int(rng.random() * len(_HOURS))]


def cursor(rng: random.Random) -> str:
    """An opaque pagination cursor (base64url of a small JSON object, as APIs hand them out)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "eyJpZCI6" + "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 22)))


def token(rng: random.Random, n: int = 32) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(n))


def products_query(rng: random.Random) -> list[tuple[str, str | None]]:
    q: list[tuple[str, str | None]] = []
    if rng.random() < 0.7:
        q.append(("category", rng.choice(CATEGORIES)))
    if rng.random() < 0.25:
        q.append(("brand", rng.choice(BRANDS)))
    if rng.random() < 0.6:
        q.append(("sort", rng.choice(SORTS)))
    if rng.random() < 0.2:
        lo = rng.choice((0, 10, 25, 50, 100))
        q.append(("min_price", str(lo)))
        q.append(("max_price", str(lo + rng.choice((25, 50, 100, 250)))))
    if rng.random() < 0.15:
        q.append(("in_stock", "true"))
    if rng.random() < 0.08:
        q += [("tag", rng.choice(("red", "blue", "summer", "sale"))), ("tag", "new")]
    q.append(("page", str(1 if rng.random() < 0.6 else rng.randint(2, 6))))
    q.append(("limit", rng.choice(("24", "24", "48", "20"))))
    return q


def search_query(rng: random.Random, page: int = 1) -> list[tuple[str, str | None]]:
    q: list[tuple[str, str | None]] = [("q", search_term(rng))]
    if page > 1 or rng.random() < 0.1:
        q.append(("page", str(page)))
    if rng.random() < 0.2:
        q.append(("sort", rng.choice(SORTS)))
    if rng.random() < 0.1:
        q.append(("lang", rng.choice(("en", "de", "fr", "es"))))
    return q
