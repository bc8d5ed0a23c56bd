"""Sensitive-file and admin probing: requests for secrets, version-control metadata, backups,
server internals and admin tools (`/.env`, `/.git/config`, `/wp-admin`, `/phpmyadmin`, `db.sql`,
`/server-status`, `/actuator/env`, the CRS `restricted-files.data` list).

Scanners walk such lists a few requests a second; a person never asks for `/.git/HEAD`. The
lists are not equally sure, so findings come in three tiers: secrets (never legitimate), known admin
tools, backups and CRS restricted files (rarely legitimate), and generic admin words (`/admin`,
often a real route). An API that really serves one of the weaker kinds is learned: once a route
template keeps answering 2xx to authenticated consumers, or to many different clients, its weaker
findings stop.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from detectors.base import Signal, SubjectContext
from detectors.patterns import PatternSet
from detectors.state import SubjectState
from pipeline.events import GatewayEvent

__all__ = ["Probe", "SensitiveProbing", "classify_path", "load_restricted_files"]

STRONG, MEDIUM, WEAK = 3, 2, 1
DATA_DIR = Path(__file__).resolve().parent / "data" / "crs"

# Paths every browser and crawler asks for on its own: their 404s are noise, never probing.
_NOISE = re.compile(
    r"^/(?:favicon\.ico|robots\.txt|sitemap[\w.-]*\.xml|apple-touch-icon[\w.-]*\.png|ads\.txt|"
    r"app-ads\.txt|humans\.txt|manifest\.json|site\.webmanifest|browserconfig\.xml|"
    r"\.well-known/.*)$"
)
# Secrets and server internals: no API serves these to anyone (label, pattern).
_STRONG = (
    ("environment file", r"/\.env(?:\.[\w-]+)?(?:/|$)"),
    ("version-control metadata", r"/\.(?:git|svn|hg|bzr)(?:/|$)"),
    ("credentials file", r"/(?:\.aws|\.ssh|\.docker|\.kube|\.gnupg)/"),
    ("private key", r"/id_(?:rsa|dsa|ecdsa|ed25519)(?:\.pub)?$"),
    (
        "credentials file",
        r"/\.(?:htpasswd|htaccess|npmrc|pypirc|netrc|pgpass|git-credentials|s3cfg|my\.cnf|"
        r"bash_history|zsh_history|mysql_history|psql_history|ds_store)$",
    ),
    ("application config", r"/wp-config\.php"),
    ("server status page", r"/server-(?:status|info)(?:/|$)"),
    (
        "Spring actuator",
        r"/actuator/(?:env|heapdump|threaddump|configprops|mappings|beans|jolokia|gateway|"
        r"httptrace|trace|loggers|shutdown|logfile)(?:/|$)",
    ),
    ("phpinfo page", r"/(?:phpinfo|info|test)\.php$"),
)
# Admin tools, debug endpoints and backups: rarely served, and then learned.
_MEDIUM = (
    (
        "admin tool",
        r"/(?:wp-admin|wp-login\.php|xmlrpc\.php|phpmyadmin|pma|myadmin|mysqladmin|adminer(?:\.php)?|"
        r"jmx-console|web-console|solr/admin|_profiler|telescope|elmah\.axd|trace\.axd|"
        r"manager/html|cgi-bin|vendor/phpunit|boaform|hnap1)(?:/|$)",
    ),
    ("Spring actuator", r"/actuator(?:/(?!health|info|prometheus)|$)"),
    ("debug endpoint", r"/debug/(?:pprof|vars)(?:/|$)"),
    ("backup file", r"[^/](?:\.(?:bak|old|orig|save|swp|swo|backup|sql|sql\.gz|dump)|~)$"),
    (
        "backup archive",
        r"/(?:backup|backups|db|database|dump|site|www|wwwroot|htdocs|public_html|web|data|"
        r"archive|home|html)\.(?:zip|tar|tar\.gz|tgz|rar|7z|gz)$",
    ),
)
_WEAK = (
    (
        "admin path",
        r"/(?:admin|administrator|admin\.php|admin\.html|adm|backup|backups|cpanel|console|"
        r"manager|siteadmin|webadmin|login\.php)(?:/|$)",
    ),
)


@dataclass(frozen=True, slots=True)
class Probe:
    """What a path asks for: `tier` (3 secret, 2 admin tool/backup/restricted, 1 admin word)."""

    tier: int
    label: str


def load_restricted_files(path: Path = DATA_DIR / "restricted-files.data") -> list[str]:
    """The CRS restricted file names, lower-cased, comments and blank lines dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [s.lower() for line in lines if (s := line.strip()) and not s.startswith("#")]


def _compile(rules: tuple[tuple[str, str], ...]) -> list[tuple[str, re.Pattern[str]]]:
    return [(label, re.compile(pattern)) for label, pattern in rules]


_STRONG_RE = _compile(_STRONG)
_MEDIUM_RE = _compile(_MEDIUM)
_WEAK_RE = _compile(_WEAK)


def _normalise(path: str) -> str:
    """The path as a server would resolve it, lower-cased: `/%2Eenv` and `//.ENV` are `/.env`."""
    for _ in range(2):  # double encoding, and no further: bounded cost
        if "%" not in path:
            break
        path = unquote(path)
    path = path.replace("\\", "/").lower()
    while "//" in path:
        path = path.replace("//", "/")
    while "/./" in path:
        path = path.replace("/./", "/")
    return path if path.startswith("/") else "/" + path


def classify_path(path: str, restricted: PatternSet, names: list[str]) -> Probe | None:
    """The strongest probe `path` matches, or None (see `SensitiveProbing`)."""
    path = _normalise(path)
    if _NOISE.match(path):
        return None
    for tier, rules in ((STRONG, _STRONG_RE), (MEDIUM, _MEDIUM_RE)):
        for label, pattern in rules:
            if pattern.search(path):
                return Probe(tier, label)
    found = restricted.search(path)
    if found:
        return Probe(MEDIUM, f"CRS restricted file '{names[found[0]]}'")
    for label, pattern in _WEAK_RE:
        if pattern.search(path):
            return Probe(WEAK, label)
    return None


class SensitiveProbing:
    """Flags requests for sensitive files and admin paths; scores the subject's decayed findings.

    Per request (`inspect`), by tier and answer:

    ============  ===============  ==================================================
    tier          2xx              anything else (401/403/404/...)
    ============  ===============  ==================================================
    secret        `leak_weight`    `secret_weight`
    admin/backup  `medium_weight`  `medium_weight`; nothing once the route is learned
    admin word    nothing          `weak_weight`; nothing once the route is learned
    ============  ===============  ==================================================

    An authenticated request that succeeds is using the API, not probing it: it is never flagged
    below the secret tier, and it teaches the route (`learn_after` of them make it normal; so do
    successes for `learn_clients` different addresses, e.g. a public `/config.json`). Only 2xx
    answers teach, and secrets are never excused, so a prober cannot teach its own probes. The same
    address asking for the same path again within `repeat_s` adds nothing (a reload is not a scan).

    The subject's score is `1 - exp(-rate * evidence)`: with the defaults one `/.env` 404 tags,
    two challenge, three block; a leaked secret (2xx) challenges at once and blocks at the second.

    Parameters
    ----------
    secret_weight, leak_weight, medium_weight, weak_weight
        Evidence per request, as in the table.
    rate
        How fast evidence turns into score.
    learn_after, learn_clients
        Authenticated 2xx, or distinct client addresses with a 2xx, that make a route normal.
    repeat_s
        Window in which one address repeating one path counts once.
    max_routes, max_recent, max_cache
        Bounds of the learned routes, the repeat memory and the path-classification cache.

    Examples
    --------
    >>> detector, state = SensitiveProbing(), SubjectState()
    >>> ctx = SubjectContext("ip:198.51.100.9", "ip", 0.0)
    >>> for i, path in enumerate(["/.env", "/.git/config", "/backup.sql", "/.aws/credentials"]):
    ...     e = GatewayEvent(ts_ms=i * 500, gateway="kong", client_ip="198.51.100.9",
    ...                      method="GET", path=path, route=path, status=404)
    ...     finding = detector.inspect(e)
    ...     state.note(finding.detector, finding.score, i * 0.5, finding.kind, finding.reason)
    >>> finding.reason
    "'/.aws/credentials' -> 404 (credentials file)"
    >>> signal = detector.score(state, SubjectContext("ip:198.51.100.9", "ip", 2.0))
    >>> signal.score >= 0.85, signal.kind
    (True, 'sensitive_file_probing')
    >>> print(signal.reason)
    4 sensitive-file/admin probes, last '/.aws/credentials' -> 404 (credentials file)
    >>> favicon = GatewayEvent(ts_ms=0, gateway="kong", client_ip="192.0.2.1", method="GET",
    ...                        path="/favicon.ico", route="/favicon.ico", status=404)
    >>> detector.inspect(favicon) is None
    True
    """

    name = "probing"
    version = "1"

    def __init__(
        self,
        secret_weight: float = 0.45,
        leak_weight: float = 1.0,
        medium_weight: float = 0.2,
        weak_weight: float = 0.08,
        rate: float = 1.5,
        learn_after: int = 5,
        learn_clients: int = 8,
        repeat_s: float = 300.0,
        max_routes: int = 10_000,
        max_recent: int = 100_000,
        max_cache: int = 50_000,
    ) -> None:
        weights = (secret_weight, leak_weight, medium_weight, weak_weight)
        if not all(0 < w <= 1 for w in weights):
            raise ValueError("weights must be in (0, 1]")
        if not weak_weight <= medium_weight <= secret_weight <= leak_weight:
            raise ValueError("need weak_weight <= medium_weight <= secret_weight <= leak_weight")
        if rate <= 0 or repeat_s < 0:
            raise ValueError("need rate > 0 and repeat_s >= 0")
        if not 1 <= learn_clients <= 64 or learn_after < 1:
            raise ValueError("need learn_after >= 1 and 1 <= learn_clients <= 64")
        if min(max_routes, max_recent, max_cache) < 1:
            raise ValueError("bounds must be at least 1")
        self.secret_weight = secret_weight
        self.leak_weight = leak_weight
        self.medium_weight = medium_weight
        self.weak_weight = weak_weight
        self.rate = rate
        self.learn_after = learn_after
        self.learn_clients = learn_clients
        self.repeat_s = repeat_s
        self.max_routes = max_routes
        self.max_recent = max_recent
        self.max_cache = max_cache
        self._names = load_restricted_files()
        self._restricted = PatternSet([(re.escape(n), n) for n in self._names])
        self._cache: dict[str, Probe | None] = {}
        # route -> [authenticated 2xx, 64-bit sketch of client addresses with a 2xx]
        self._routes: dict[str, list[int]] = {}
        self._recent: dict[tuple[str, str], float] = {}

    def classify(self, route: str) -> Probe | None:
        """What `route` probes for, if anything (cached per route template, bounded)."""
        if route in self._cache:
            return self._cache[route]
        found = classify_path(route, self._restricted, self._names)
        if len(self._cache) >= self.max_cache:
            del self._cache[next(iter(self._cache))]
        self._cache[route] = found
        return found

    def known(self, route: str) -> bool:
        """Whether `route` has been learned as one this API really serves."""
        seen = self._routes.get(route)
        return seen is not None and (
            seen[0] >= self.learn_after or seen[1].bit_count() >= self.learn_clients
        )

    def inspect(self, event: GatewayEvent) -> Signal | None:
        probe = self.classify(event.route)
        if probe is None:
            return None
        ok = 200 <= event.status < 300
        authenticated = bool(event.consumer or event.credential)
        if ok:
            self._learn(event.route, event.client_ip, authenticated)
        if probe.tier == STRONG:
            weight = self.leak_weight if ok else self.secret_weight
        elif self.known(event.route) or (ok and (authenticated or probe.tier == WEAK)):
            return None
        else:
            weight = self.medium_weight if probe.tier == MEDIUM else self.weak_weight
        if self._repeated(event):
            return None
        kind = "secret_file" if probe.tier == STRONG else "admin_probe"
        path = event.path if len(event.path) <= 60 else event.path[:59] + "…"
        return Signal(self.name, kind, weight, f"'{path}' -> {event.status} ({probe.label})")

    def _learn(self, route: str, client_ip: str, authenticated: bool) -> None:
        seen = self._routes.get(route)
        if seen is None:
            if len(self._routes) >= self.max_routes:
                # Keep what was learned; forget routes still on probation. Full of learned routes:
                # learn nothing more rather than forget a real one.
                self._routes = {r: s for r, s in self._routes.items() if self.known(r)}
                if len(self._routes) >= self.max_routes:
                    return
            seen = self._routes[route] = [0, 0]
        seen[0] += authenticated
        seen[1] |= 1 << (zlib.crc32(client_ip.encode()) & 63)

    def _repeated(self, event: GatewayEvent) -> bool:
        t = event.ts_ms / 1000.0
        key = (event.client_ip, event.path)
        last = self._recent.get(key)
        if last is not None and 0 <= t - last < self.repeat_s:
            return True
        if last is None and len(self._recent) >= self.max_recent:
            del self._recent[next(iter(self._recent))]
        self._recent[key] = t
        return False

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        evidence = state.evidence.get(self.name) if state.evidence else None
        if evidence is None:
            return None
        score = round(1.0 - math.exp(-self.rate * evidence.value(ctx.now)), 3)
        if score < 0.05:
            return None
        plural = "" if evidence.hits == 1 else "s"
        reason = f"{evidence.hits} sensitive-file/admin probe{plural}, last {evidence.reason}"
        return Signal(
            self.name, "sensitive_file_probing", score, reason, "probes", float(evidence.hits)
        )
