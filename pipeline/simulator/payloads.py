"""Attack material from the pinned OWASP CRS data (`data/`, Apache-2.0, see `data/LICENSE`).

- `crs_payloads()`: attack payloads of the CRS regression tests as query arguments (raw, as they go
  on the wire), by family (sqli, xss, lfi, rfi, rce, php, generic, java, session_fixation).
- `SCANNER_AGENTS`: full user agents of the scanners `scanners-user-agents.data` names (each one
  contains its CRS pattern; `scanner_patterns()` reads the list itself).
- `probe_paths()`: sensitive-file probe paths: common scanner targets plus paths built from the
  entries of CRS `restricted-files.data`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import orjson

__all__ = [
    "BAD_BOT_AGENTS",
    "SCANNER_AGENTS",
    "Payload",
    "crs_payloads",
    "probe_paths",
    "restricted_files",
    "scanner_patterns",
]

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True, slots=True)
class Payload:
    family: str
    rule_id: int
    test_id: int
    paranoia: int
    moved_from_body: bool
    name: str  # raw (percent-encoded) argument name
    value: str  # raw argument value; "" when the payload is the name itself


@cache
def crs_payloads() -> dict[str, tuple[Payload, ...]]:
    by_family: dict[str, list[Payload]] = {}
    for line in (DATA / "crs-payloads.jsonl").read_bytes().splitlines():
        if line.strip():
            p = Payload(**orjson.loads(line))
            by_family.setdefault(p.family, []).append(p)
    return {k: tuple(v) for k, v in sorted(by_family.items())}


def _data_lines(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


@cache
def scanner_patterns() -> tuple[str, ...]:
    return tuple(_data_lines("scanners-user-agents.data"))


@cache
def restricted_files() -> tuple[str, ...]:
    return tuple(_data_lines("restricted-files.data"))


# Scanners' real default user agents (CRS lists the distinctive substring of each).
SCANNER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:004217)",
    "sqlmap/1.7.11#stable (https://sqlmap.org)",
    "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 zgrab/0.x",
    "gobuster/3.6",
    "feroxbuster/2.10.1",
    "Fuzz Faster U Fool v2.1.0-dev",
    "Wfuzz/3.1.0",
    "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)",
    "WhatWeb/0.5.5",
    "Arachni/v1.6.1.3",
    "commix/v3.8 (https://commixproject.com)",
    "Mozilla/5.0 (l9explore/1.2.2)",
    "Mozilla/5.0 [en] (X11, U; OpenVAS-VT 22.4.1)",
    "w3af.org",
)
# Self-declared bots that crawl hard and ignore robots.txt (not scanners; not in CRS's list).
BAD_BOT_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
    "(compatible; Bytespider; spider-feedback@bytedance.com)",
    "Mozilla/5.0 (compatible; DotBot/1.2; +https://opensiteexplorer.org/dotbot; help@moz.com)",
    "Mozilla/5.0 (compatible; BLEXBot/1.0; +http://webmeup-crawler.com/)",
)
# What every scanner asks for first.
_COMMON_PROBES = (
    "/.env",
    "/.git/config",
    "/.git/HEAD",
    "/.aws/credentials",
    "/.DS_Store",
    "/.htaccess",
    "/.htpasswd",
    "/.svn/entries",
    "/.ssh/id_rsa",
    "/.npmrc",
    "/.dockerenv",
    "/config.json",
    "/config.php",
    "/wp-config.php.bak",
    "/wp-login.php",
    "/wp-admin/",
    "/phpinfo.php",
    "/server-status",
    "/actuator/env",
    "/actuator/heapdump",
    "/backup.sql",
    "/dump.sql.gz",
    "/db.sqlite3",
    "/docker-compose.yml",
    "/web.config",
    "/WEB-INF/web.xml",
    "/.vscode/sftp.json",
    "/api/.env",
    "/v1/.env",
    "/internal/.env",
    "/debug/.git/config",
    "/api/v0/.env",
    "/app/etc/env.php",
    "/sites/default/settings.php",
    "/composer.json",
    "/package.json",
    "/secrets.json",
    "/.terraform/terraform.tfstate",
    "/.kube/config",
    "/.bash_history",
)
# A CRS directory entry is probed at a file inside it.
_DIR_FILES = {
    ".git/": "config",
    ".aws/": "credentials",
    ".ssh/": "id_rsa",
    ".docker/": "config.json",
    ".kube/": "config",
    ".svn/": "entries",
    ".config/": "gcloud/credentials.db",
}


@cache
def probe_paths() -> tuple[str, ...]:
    """Common probe targets first, then one path per usable CRS restricted-files entry."""
    out = list(_COMMON_PROBES)
    seen = set(out)
    for entry in restricted_files():
        if entry.startswith(("proc/", "sys/", "/proc", "/sys", "/@")) or " " in entry:
            continue
        name = entry.lstrip("/")
        if name.endswith("/"):
            name += _DIR_FILES.get(name, "")
        elif name.startswith(".sql"):
            name = "backup" + name  # `.sql.gz` and friends are suffixes of a dump's name
        elif name.endswith(("-", "_", ".")):
            name += "bak"  # `wp-config.` -> `wp-config.bak`
        path = "/" + name
        if path not in seen:
            seen.add(path)
            out.append(path)
    return tuple(out)


def pick(rng: random.Random, items: tuple[Payload, ...], n: int) -> list[Payload]:
    return [rng.choice(items) for _ in range(n)]
