"""ModSecurity v3 + OWASP CRS 3.3 beside gatewatch on the same simulator traffic (issue 4).

The peer is the Debian stack a user would deploy: nginx with `libnginx-mod-http-modsecurity`
(libmodsecurity 3.0.9) and `modsecurity-crs` (CRS 3.3.x). A real nginx is started from a temp
prefix on a free port with `modsecurity on`, the package's recommended `modsecurity.conf` with
these changes only: `SecRuleEngine On` (it ships DetectionOnly), temp/data/audit paths in the
prefix, `SecAuditLogFormat JSON` (to read which rules fired), `SecStatusEngine Off` (no calls
home). Then CRS as `owasp-crs.load` loads it: `crs-setup.conf`, paranoia level 1 and the default
inbound anomaly threshold 5 made explicit (rules 900000, 900110), the rules. The protected
location proxies to a second server block answering `return 200` (ModSecurity-nginx does not run
on a location that answers with `return` itself: such requests would never be inspected).

Every request of the simulator run (`traffic.ndjson`, Kong http-log entries) is re-sent as it
reached Kong: method, raw URI, headers (user-agent, accept, referer, content-type, apikey, ...;
hop-by-hop ones and the length dropped), over HTTP/1.1 keep-alive connections. Access logs carry
no bodies, so a POST/PUT/PATCH is sent with an empty one: ModSecurity sees what gatewatch sees.
A 403 is a block (CRS's anomaly-score decision). At paranoia level 1 with the default setup CRS
keeps no state across requests (IP reputation and DoS protection are off), so one client address
for all requests changes nothing. Each entry also goes through gatewatch's Kong parser, whose
event gives the request's time and subjects (`consumer:`, `key:`, `ip:`): both sides count the
same subjects.

Scoring follows `pipeline.evaluation.score`: a request carrying a subject of an episode within the
episode's span is the episode's, and its other subjects are associated with the attack (neither
side); an episode is detected when one of its requests is blocked (time to detect = that
request's time - episode start: ModSecurity is inline, a block is immediate). Benign subjects are
all the others; one is a false positive when a blocked request carries it, so a blocked request
counts against each of its benign subjects (consumer, key and address: an upper bound, split by
kind in the JSON). `fp_per_1000_subject_hours` divides by the benign subject-hours (sum over
benign subjects of end of run - first request). The rules behind the blocks, per scenario and
for benign traffic, come from the audit log. CRS 3.3 allows only GET HEAD POST OPTIONS: the
figures with PUT/PATCH/DELETE allowed (what a REST API configures) are derived from the same
audit log, or measured with `--allowed-methods`.

`--crs` also replays the CRS regression corpus' query-string cases (`pipeline.evaluation.crs`)
through ModSecurity. Those tests come from a newer CRS than the 3.3 rules under test: the figure
is context (what stock CRS PL1 blocks of them), not CRS grading itself.

gatewatch's side: `pipeline.evaluation.score.evaluate_run` on the same folder when the tree has
it, else the steps of `gatewatch replay --labels`; without either, ModSecurity alone. A full
simulated run is ~530 requests/s of traffic, and ModSecurity + CRS costs ~1 ms of CPU per request:
20 simulated minutes take ~5 min on 2 free cores.

    .venv/bin/python bench/peer_modsecurity.py --traffic DIR [--limit N] [--crs] [--json]
    .venv/bin/python bench/peer_modsecurity.py --seed 7 --minutes 20 [--crs] [--json]

With --json the last line is {"modsecurity": {...}, "gatewatch": {...} | null, "config": {...}}
(and "gatewatch_crs_corpus" with --crs).
Needs the Debian packages (checked first; the exact apt-get line is printed when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import structlog
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.ingest.kong import KongParser  # noqa: E402
from pipeline.ingest.redaction import Redactor  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.stack import StackError, free_port, stop_process, wait_for_port  # noqa: E402

log = structlog.get_logger("bench.peer_modsecurity")

PACKAGES = ("libnginx-mod-http-modsecurity", "modsecurity-crs")
APT_LINE = "apt-get update && apt-get install -y " + " ".join(PACKAGES)
MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
# The package's pristine copy first: /etc/nginx/modsecurity.conf is a conffile a user may edit.
RECOMMENDED = (
    Path("/usr/share/nginx/docs/modsecurity/modsecurity.conf"),
    Path("/etc/nginx/modsecurity.conf"),
)
UNICODE_MAP = Path("/etc/nginx/unicode.mapping")
CRS_SETUP = Path("/etc/modsecurity/crs/crs-setup.conf")
CRS_BEFORE = Path("/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf")
CRS_RULES = Path("/usr/share/modsecurity-crs/rules")
CRS_AFTER = Path("/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf")
PARANOIA_LEVEL = 1
ANOMALY_THRESHOLD = 5
BLOCKED = 403
START_TIMEOUT_S = 30.0
LOG_EVERY = 50_000
# Identifies a replayed request in the audit log; a digit string no CRS PL1 rule looks at.
REPLAY_HEADER = "x-gatewatch-replay"
# Connection management is the replaying client's business, and the body is not in the log.
DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
        REPLAY_HEADER,
    }
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]")
TOTAL_SCORE = re.compile(r"Total Score: (\d+)")
# CRS 3.3 allows GET HEAD POST OPTIONS only; 911100 adds the critical score (5) for any other.
METHOD_RULE = "911100"
METHOD_RULE_POINTS = 5
# Rules that only report the verdict; the rules that scored are the ones worth listing.
VERDICT_RULES = frozenset({"949110", "959100", "980130", "980140"})


# --- the peer: nginx + ModSecurity + CRS ---------------------------------------------------------


def missing_packages() -> list[str]:
    missing = []
    for pkg in PACKAGES:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        if out.returncode != 0 or "install ok installed" not in out.stdout:
            missing.append(pkg)
    return missing


def recommended_conf(prefix: Path) -> str:
    """The package's recommended modsecurity.conf with the engine on and every path in `prefix`.

    Raises if a directive to change is not in the file (a new package layout must be looked at,
    not silently run with DetectionOnly).
    """
    source = next((p for p in RECOMMENDED if p.is_file()), None)
    if source is None:
        raise StackError(f"no recommended modsecurity.conf in {', '.join(map(str, RECOMMENDED))}")
    text = source.read_text()
    overrides = {
        "SecRuleEngine": "On",
        "SecAuditLog": str(prefix / "audit.log"),
        "SecTmpDir": f"{prefix / 'modsec'}/",
        "SecDataDir": f"{prefix / 'modsec'}/",
        "SecUnicodeMapFile": f"{UNICODE_MAP} 20127",
        "SecStatusEngine": "Off",
    }
    for directive, value in overrides.items():
        text, n = re.subn(rf"(?m)^{directive} .*$", f"{directive} {value}", text)
        if n != 1:
            raise StackError(f"{source}: expected one `{directive}` line, found {n}")
    return text + "\nSecAuditLogFormat JSON\n"


def rules_conf(prefix: Path, allowed_methods: str | None) -> str:
    """What the Debian `owasp-crs.load` includes, with the paranoia level and threshold pinned."""
    lines = [
        f"Include {prefix / 'modsecurity.conf'}",
        f"Include {CRS_SETUP}",
        f'SecAction "id:900000,phase:1,nolog,pass,t:none,'
        f'setvar:tx.paranoia_level={PARANOIA_LEVEL}"',
        f'SecAction "id:900110,phase:1,nolog,pass,t:none,'
        f"setvar:tx.inbound_anomaly_score_threshold={ANOMALY_THRESHOLD},"
        f'setvar:tx.outbound_anomaly_score_threshold=4"',
    ]
    if allowed_methods:
        lines.append(
            f"SecAction \"id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods="
            f"{allowed_methods}'\""
        )
    # libmodsecurity 3 has no IncludeOptional (the load file was written for Apache's module).
    lines += [f"Include {CRS_BEFORE}"] if CRS_BEFORE.is_file() else []
    lines.append(f"Include {CRS_RULES}/*.conf")
    lines += [f"Include {CRS_AFTER}"] if CRS_AFTER.is_file() else []
    return "\n".join(lines) + "\n"


NGINX_CONF = """\
load_module {module};
{user}
worker_processes {workers};
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;

events {{
  worker_connections 4096;
}}

http {{
  access_log off;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 600s;

  upstream app {{
    server 127.0.0.1:{app_port};
    keepalive 64;
  }}

  server {{
    listen 127.0.0.1:{port};
    modsecurity on;
    modsecurity_rules_file {prefix}/rules.conf;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}

  server {{
    listen 127.0.0.1:{app_port};
    location / {{
      return 200;
    }}
  }}
}}
"""


@dataclass
class ModSecurityNginx:
    """nginx + ModSecurity + CRS on a free loopback port, from its own temp prefix."""

    workers: int = 2
    allowed_methods: str | None = None
    port: int = 0
    app_port: int = 0
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gatewatch-msc-")))
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def audit_log(self) -> Path:
        return self.prefix / "audit.log"

    def start(self) -> ModSecurityNginx:
        self.port = self.port or free_port()
        self.app_port = self.app_port or free_port()
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "modsec"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        (self.prefix / "modsecurity.conf").write_text(recommended_conf(self.prefix))
        (self.prefix / "rules.conf").write_text(rules_conf(self.prefix, self.allowed_methods))
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                module=MODULE,
                # Workers run as nobody otherwise, and could not write the audit log in a
                # root-owned 0700 prefix.
                user="user root;" if os.geteuid() == 0 else "",
                workers=self.workers,
                prefix=self.prefix,
                port=self.port,
                app_port=self.app_port,
            )
        )
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        if nginx is None:
            raise StackError("nginx not found: apt-get install -y nginx")
        with open(self.prefix / "stderr.log", "wb") as stderr:
            self._proc = subprocess.Popen(
                [nginx, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        try:
            # Loading ~900 CRS rules takes a moment before the port opens.
            wait_for_port(self.port, self._proc, START_TIMEOUT_S)
        except StackError as exc:
            errors = self.error_log()[-4000:]
            self.close()
            raise StackError(f"{exc}\n{errors}") from exc
        return self

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the nginx workers have used so far."""
        if self._proc is None:
            return 0.0
        master = self._proc.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        ticks = 0
        for pid in children:
            with contextlib.suppress(FileNotFoundError):
                # Fields after the parenthesised command name: utime and stime are 14 and 15.
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def error_log(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def close(self, keep: bool = False) -> None:
        if self._proc is not None:
            stop_process(self._proc)
        self._proc = None
        if not keep:
            shutil.rmtree(self.prefix, ignore_errors=True)


# --- the traffic ---------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Requests ready for the wire, with what scoring needs about each (parallel lists)."""

    wires: list[bytes] = field(default_factory=list)
    times_ms: list[int] = field(default_factory=list)
    subjects: list[tuple[str, ...]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def request_target(uri: str) -> str:
    """The request line's target for a logged URI: bytes a client cannot send raw are
    percent-encoded (a logged URI is normally already valid; a mangled one must not break the
    connection).

    >>> request_target("/v1/search?q=a b&x=é")
    '/v1/search?q=a%20b&x=%C3%A9'
    >>> request_target("v1/x")
    '/v1/x'
    """
    target = NOT_VISIBLE_ASCII.sub(lambda m: quote(m.group(), safe=""), uri)
    return target if target.startswith("/") else "/" + target


def header_lines(headers: dict[str, Any]) -> list[str]:
    """`name: value` lines for the logged headers worth re-sending (repeated ones repeated).

    >>> header_lines({"accept": "*/*", "x-a": ["1", "2"], "content-length": "9", "bad name": "x"})
    ['accept: */*', 'x-a: 1', 'x-a: 2']
    """
    lines = []
    for name, value in headers.items():
        lower = str(name).lower()
        if lower in DROPPED_HEADERS or not TOKEN.match(lower):
            continue
        for item in value if isinstance(value, list) else [value]:
            text = str(item).replace("\r", " ").replace("\n", " ").replace("\0", " ")
            lines.append(f"{lower}: {text}")
    return lines


def query_string(query: dict[str, Any]) -> str:
    """A query string for Kong's logged `querystring` (a bare flag is `true`, repeats a list).

    >>> query_string({"q": "a b&c", "flag": True, "id": ["1", "2"]})
    'q=a%20b%26c&flag&id=1&id=2'
    """
    parts = []
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            key = quote(str(name), safe="")
            parts.append(key if item is True else f"{key}={quote(str(item), safe='')}")
    return "&".join(parts)


def to_wire(entry: dict[str, Any], index: int) -> bytes:
    """One Kong http-log entry as the HTTP/1.1 request that reached Kong (ValueError when the
    entry lacks what a replay needs).

    >>> to_wire({"request": {"method": "POST", "uri": "/login", "headers": {"host": "api"}}},
    ...     7).decode().splitlines()
    ['POST /login HTTP/1.1', 'host: api', 'content-length: 0', 'x-gatewatch-replay: 7', '']
    """
    request = entry.get("request")
    if not isinstance(request, dict):
        raise ValueError("no request object")
    method, uri = request.get("method"), request.get("uri")
    if not isinstance(method, str) or not TOKEN.match(method):
        raise ValueError("no usable request.method")
    if not isinstance(uri, str) or not uri:
        raise ValueError("no request.uri")
    query = request.get("querystring")
    if "?" not in uri and isinstance(query, dict) and query:
        uri += "?" + query_string(query)  # a log whose uri is the path alone
    headers = request.get("headers")
    lines = header_lines(headers if isinstance(headers, dict) else {})
    if not any(line.startswith("host: ") for line in lines):
        lines.insert(0, "host: api.example")
    if method.upper() in BODY_METHODS:
        lines.append("content-length: 0")
    lines.append(f"{REPLAY_HEADER}: {index}")
    head = f"{method} {request_target(uri)} HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "replace")


def load_traffic(path: Path, limit: int | None = None) -> Traffic:
    """The entries of a `traffic.ndjson` (one entry, or an http-log array, per line).

    Each entry goes through gatewatch's own Kong parser first: its subjects (`consumer:`, `key:`,
    `ip:`) and time are the event's, so both sides count the same subjects, and an entry the
    parser rejects (gatewatch never sees it) is not replayed either. Skips are counted by reason.
    """
    parser = KongParser(Redactor(b"peer-modsecurity-bench"))
    traffic = Traffic()
    with path.open("rb") as f:
        for line in f:
            if limit is not None and len(traffic.wires) >= limit:
                break
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                traffic.skipped["not JSON"] += 1
                continue
            for entry in doc if isinstance(doc, list) else [doc]:
                try:
                    if not isinstance(entry, dict):
                        raise ValueError("not a JSON object")
                    event = parser.parse_entry(entry)
                    wire = to_wire(entry, len(traffic.wires))
                except ValidationError as exc:
                    err = exc.errors()[0]
                    traffic.skipped[".".join(map(str, err["loc"])) + ": " + err["msg"]] += 1
                    continue
                except ValueError as exc:  # the parser's ParseError, to_wire's
                    traffic.skipped[str(exc).splitlines()[0][:80]] += 1
                    continue
                traffic.wires.append(wire)
                traffic.times_ms.append(event.ts_ms)
                traffic.subjects.append(tuple(event.subjects()))
    if traffic.skipped:
        log.warning("traffic.skipped", path=str(path), reasons=dict(traffic.skipped))
    return traffic


@dataclass(frozen=True, slots=True)
class Episode:
    id: str
    scenario: str
    subjects: frozenset[str]
    start_ms: int
    end_ms: int


def load_labels(path: Path) -> tuple[list[Episode], int | None]:
    """The episodes of a `labels.json` and the end of the run (`end_ms`, when it has one); a
    malformed file is a clear error naming what is wrong."""
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    raw = doc.get("episodes") if isinstance(doc, dict) else None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: no `episodes` list")
    episodes = []
    for i, ep in enumerate(raw):
        try:
            episodes.append(
                Episode(
                    id=str(ep["id"]),
                    scenario=str(ep["scenario"]),
                    subjects=frozenset(str(s) for s in ep["subjects"]),
                    start_ms=int(ep["start_ms"]),
                    end_ms=int(ep["end_ms"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: episode {i} is malformed ({exc!r})") from exc
    if doc.get("format", "kong") != "kong":
        raise ValueError(f"{path}: format {doc['format']!r}; the replay reads Kong entries (kong)")
    end = doc.get("end_ms")
    if end is not None and (not isinstance(end, int) or isinstance(end, bool)):
        raise ValueError(f"{path}: end_ms must be an integer, got {end!r}")
    return episodes, end


# --- the replay ----------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server closes) of one response, its body read and discarded."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, close = 0, False, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close"
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")  # no trailers from nginx: the empty line
    elif length:
        await reader.readexactly(length)
    return status, close


class _Connection:
    """One keep-alive connection, reopened when nginx closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, wire: bytes) -> int:
        for attempt in range(2):
            if self.stream is None:
                self.stream = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = self.stream
            try:
                writer.write(wire)
                status, close = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                # Closed under us (between two requests): resend once on a new connection.
                self.close()
                if attempt:
                    raise
                continue
            if close:
                self.close()
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.stream is not None:
            self.stream[1].close()
        self.stream = None


async def replay(
    port: int, wires: Sequence[bytes], connections: int, on_done: Callable[[int], None]
) -> list[int]:
    """Send every request over `connections` keep-alive connections; the status of each."""
    statuses = [0] * len(wires)
    pending: Iterator[int] = iter(range(len(wires)))

    async def run() -> None:
        conn = _Connection(port)
        done = 0
        try:
            for i in pending:  # one iterator shared by all connections: each request sent once
                statuses[i] = await conn.send(wires[i])
                done += 1
                if done % 500 == 0:
                    on_done(500)
            on_done(done % 500)
        finally:
            conn.close()

    await asyncio.gather(*(run() for _ in range(connections)))
    return statuses


def run_replay(
    gateway: ModSecurityNginx, wires: Sequence[bytes], connections: int, what: str
) -> tuple[list[int], float]:
    """Statuses of all requests and the wall time; a progress bar on a terminal, else a log line
    every LOG_EVERY requests (a long run must not look hung)."""
    console = Console(stderr=True)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        progress.advance(task, n)
        if not console.is_terminal and (done + n) // LOG_EVERY > done // LOG_EVERY:
            log.info("replay.progress", what=what, done=done + n, total=len(wires))
        done += n

    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(what, total=len(wires))
        started = time.monotonic()
        statuses = asyncio.run(replay(gateway.port, wires, connections, advance))
        return statuses, time.monotonic() - started


@dataclass(frozen=True, slots=True)
class AuditEntry:
    rules: tuple[str, ...]  # the rules that scored, verdict rules left out
    messages: dict[str, str]  # rule id -> message
    score: int | None  # the inbound anomaly score when CRS blocked


def read_audit(path: Path) -> dict[int, AuditEntry]:
    """Audit log entries by replay index (the last one wins if a request was resent)."""
    out: dict[int, AuditEntry] = {}
    if not path.exists():
        return out
    with path.open("rb") as f:
        for line in f:
            try:
                tx = orjson.loads(line)["transaction"]
                headers = {k.lower(): v for k, v in tx["request"]["headers"].items()}
                index = int(headers[REPLAY_HEADER])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a request we did not send, or a torn line
            messages: dict[str, str] = {}
            score = None
            for msg in tx.get("messages") or []:
                rule = str(msg.get("details", {}).get("ruleId", ""))
                if rule == "949110" and (m := TOTAL_SCORE.search(msg.get("message", ""))):
                    score = int(m.group(1))
                if rule and rule not in VERDICT_RULES:
                    messages[rule] = str(msg.get("message", ""))
            out[index] = AuditEntry(tuple(sorted(messages)), messages, score)
    return out


# --- scoring -------------------------------------------------------------------------------------


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by nearest rank (None for no values).

    >>> nearest_rank([3.0, 1.0, 2.0], 0.5), nearest_rank([1.0, 2.0], 0.9), nearest_rank([], 0.5)
    (2.0, 2.0, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


BENIGN = ""  # request_scenarios' answer for a request of no episode and no attacker subject


def request_scenarios(
    times_ms: Sequence[int], subjects: Sequence[tuple[str, ...]], episodes: Sequence[Episode]
) -> list[tuple[str, ...]]:
    """Per request, the ids of the episodes it belongs to (it carries one of their subjects within
    their span); `(BENIGN,)` when it carries no attacker subject at all, `()` for an attacker's
    request outside its episodes (neither attack nor benign traffic).

    >>> eps = [Episode("e1", "scan", frozenset({"ip:6.6.6.6"}), 10, 20)]
    >>> request_scenarios([15, 15, 30], [("ip:6.6.6.6",), ("ip:1.1.1.1",), ("ip:6.6.6.6",)], eps)
    [('e1',), ('',), ()]
    """
    by_subject: dict[str, list[Episode]] = {}
    for ep in episodes:
        for s in ep.subjects:
            by_subject.setdefault(s, []).append(ep)
    out: list[tuple[str, ...]] = []
    for t, subs in zip(times_ms, subjects, strict=True):
        mine = [ep for s in subs for ep in by_subject.get(s, ())]
        if not mine:
            out.append((BENIGN,))
            continue
        out.append(tuple(sorted({ep.id for ep in mine if ep.start_ms <= t <= ep.end_ms})))
    return out


def score_run(
    times_ms: Sequence[int],
    subjects: Sequence[tuple[str, ...]],
    flagged: Sequence[bool],
    episodes: Sequence[Episode],
    end_ms: int | None = None,
) -> dict[str, Any]:
    """Per scenario detection and benign false positives of per-request verdicts, counted the way
    `pipeline.evaluation.score` counts gatewatch's decisions.

    A request carrying a subject of an episode, within the episode's span, is that episode's; its
    other subjects (a flooding consumer's key, ...) are *associated* with the attack and are
    neither attacker nor benign, unless they also appear in other requests. Benign subjects are
    all others; one is a false positive when a blocked request carries it. `end_ms` is the end of
    the run (default: the last request).

    >>> eps = [Episode("e1", "scan", frozenset({"ip:6.6.6.6"}), 10_000, 20_000)]
    >>> subjects = [("ip:1.1.1.1", "key:s"), ("ip:6.6.6.6", "key:k"), ("ip:6.6.6.6", "key:s"),
    ...     ("consumer:c", "ip:2.2.2.2")]
    >>> r = score_run([0, 12_000, 15_000, 3_600_000], subjects, [False, False, True, True], eps)
    >>> r["scenarios"]["scan"]["detected"], r["scenarios"]["scan"]["median_time_to_detect_s"]
    (1, 5.0)
    >>> b = r["benign"]  # key:k is the attack's; key:s, seen in benign traffic too, is benign
    >>> b["subjects"], b["false_positive_subjects"], b["subject_hours"], b["subjects_by_kind"]
    (4, 2, 2.0, {'ip': 2, 'key': 1, 'consumer': 1})
    """
    attackers = frozenset().union(*(e.subjects for e in episodes)) if episodes else frozenset()
    end = end_ms if end_ms is not None else max(times_ms, default=0)
    owners_of = request_scenarios(times_ms, subjects, episodes)

    first_flag: dict[str, int] = {}  # episode id -> time of its first blocked request
    ep_requests: Counter[str] = Counter()
    ep_flagged: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    associated: set[str] = set()
    benign_seen: set[str] = set()
    blocked_subjects: set[str] = set()
    benign_requests = benign_flagged = 0
    for t, subs, hit, owners in zip(times_ms, subjects, flagged, owners_of, strict=True):
        for s in subs:
            if s not in first_seen or t < first_seen[s]:
                first_seen[s] = t
        if owners and owners != (BENIGN,):
            associated.update(s for s in subs if s not in attackers)
            for eid in owners:
                ep_requests[eid] += 1
                if hit:
                    ep_flagged[eid] += 1
                    first_flag[eid] = min(t, first_flag.get(eid, t))
            continue
        benign_seen.update(subs)
        if hit:
            blocked_subjects.update(subs)
        if owners == (BENIGN,):
            benign_requests += 1
            benign_flagged += hit

    scenarios: dict[str, dict[str, Any]] = {}
    delays: dict[str, list[float]] = {}
    for ep in episodes:
        row = scenarios.setdefault(
            ep.scenario, {"episodes": 0, "detected": 0, "requests": 0, "requests_flagged": 0}
        )
        row["episodes"] += 1
        row["requests"] += ep_requests[ep.id]
        row["requests_flagged"] += ep_flagged[ep.id]
        if ep.id in first_flag:
            row["detected"] += 1
            delays.setdefault(ep.scenario, []).append((first_flag[ep.id] - ep.start_ms) / 1000)
    for name, row in scenarios.items():
        ttd = delays.get(name, [])
        row["recall"] = round(row["detected"] / row["episodes"], 4)
        row["median_time_to_detect_s"] = round(statistics.median(ttd), 2) if ttd else None
        row["p90_time_to_detect_s"] = nearest_rank(ttd, 0.9)

    # A subject also seen outside the attack (an app key shared by real users that an attacker
    # lifted) is benign.
    associated -= benign_seen
    benign = [s for s in first_seen if s not in attackers and s not in associated]
    fps = [s for s in benign if s in blocked_subjects]
    hours = sum(max(0, end - first_seen[s]) for s in benign) / 3_600_000

    def kinds(items: Iterable[str]) -> dict[str, int]:
        return dict(Counter(s.partition(":")[0] for s in items))

    return {
        "requests": len(times_ms),
        "requests_flagged": sum(flagged),
        "scenarios": dict(sorted(scenarios.items())),
        "benign": {
            "requests": benign_requests,
            "requests_flagged": benign_flagged,
            "subjects": len(benign),
            "subjects_by_kind": kinds(benign),
            "false_positive_subjects": len(fps),
            "false_positive_subjects_by_kind": kinds(fps),
            "subject_hours": round(hours, 3),
            "fp_per_1000_subject_hours": round(1000 * len(fps) / hours, 3) if hours else None,
        },
    }


def without_method_policy(flagged: Sequence[bool], audit: dict[int, AuditEntry]) -> list[bool]:
    """The verdicts had CRS allowed PUT, PATCH and DELETE (as a REST API must): a request blocked
    by 911100's points alone passes. Exact in anomaly scoring mode, where 911100 only adds its
    points to the score that 949110 compares with the threshold.

    >>> audit = {0: AuditEntry(("911100",), {}, 5), 1: AuditEntry(("911100", "942100"), {}, 10)}
    >>> without_method_policy([True, True, True, False], audit)
    [False, True, True, False]
    """
    out = []
    for i, hit in enumerate(flagged):
        entry = audit.get(i)
        if hit and entry and METHOD_RULE in entry.rules and entry.score is not None:
            hit = entry.score - METHOD_RULE_POINTS >= ANOMALY_THRESHOLD
        out.append(hit)
    return out


def blocked_rules(
    traffic: Traffic, flagged: Sequence[bool], episodes: Sequence[Episode],
    audit: dict[int, AuditEntry], top: int = 12,
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Which CRS rules scored on the blocked requests of benign traffic (key "benign") and of each
    scenario: one count per request and rule, with the rule's message and an example request."""
    scenario_of = {ep.id: ep.scenario for ep in episodes}
    owners_of = request_scenarios(traffic.times_ms, traffic.subjects, episodes)
    counts: dict[str, Counter[str]] = {}
    messages: dict[str, str] = {}
    example: dict[tuple[str, str], str] = {}
    for i, hit in enumerate(flagged):
        if not hit or not owners_of[i]:
            continue
        groups = {"benign" if o == BENIGN else scenario_of[o] for o in owners_of[i]}
        entry = audit.get(i)
        for rule in entry.rules if entry else ("(not in the audit log)",):
            if entry:
                messages.setdefault(rule, entry.messages[rule])
            for group in groups:
                counts.setdefault(group, Counter())[rule] += 1
                if (group, rule) not in example:
                    line = traffic.wires[i].split(b"\r\n", 1)[0].decode(errors="replace")
                    example[group, rule] = line[:120]
    return {
        group: [
            {"rule": r, "requests": n, "message": messages.get(r, ""), "example": example[group, r]}
            for r, n in c.most_common(top)
        ]
        for group, c in sorted(counts.items())
    }


def crs_corpus_figures(
    cases: Sequence[Any], flagged: dict[tuple[int, int], bool]
) -> dict[str, Any]:
    """Blocked share of the observable attack cases per CRS family, and of the negative ones,
    counted exactly as gatewatch's own corpus report counts its findings."""
    from pipeline.evaluation.crs import corpus_figures

    return corpus_figures(list(cases), flagged)


def run_crs_corpus(gateway: ModSecurityNginx, connections: int) -> dict[str, Any]:
    from pipeline.evaluation.crs import load_cases

    cases = [c for c in load_cases() if not c.observable or c.polarity in ("attack", "negative")]
    replayable = [c for c in cases if c.observable]
    wires = []
    for i, case in enumerate(replayable):
        entry = {
            "request": {"method": case.method, "uri": case.uri, "headers": case.headers},
            "started_at": 0,
        }
        wires.append(to_wire(entry, -1 - i))  # negative ids: apart from the traffic's
    statuses, _ = run_replay(gateway, wires, connections, "CRS corpus")
    flagged = {
        (c.rule_id, c.test_id): s == BLOCKED for c, s in zip(replayable, statuses, strict=True)
    }
    return crs_corpus_figures(cases, flagged)


# --- gatewatch's side and the report -------------------------------------------------------------


def gatewatch_figures(traffic_dir: Path) -> dict[str, Any] | None:
    """gatewatch's evaluation of the same run: `pipeline.evaluation.score.evaluate_run` when the
    tree has it, else the steps of `gatewatch replay --labels --spec` (parse, replay through the
    workers' processor on the event clock, score); None when neither is available."""
    traffic, labels = traffic_dir / "traffic.ndjson", traffic_dir / "labels.json"
    try:
        from pipeline.evaluation.score import evaluate_run  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        result: dict[str, Any] = evaluate_run(traffic, labels)
        return result
    try:
        from detectors.openapi import load_spec
        from pipeline.config import Settings
        from pipeline.evaluation.replay import ReplayResult, parse_lines, replay
        from pipeline.evaluation.score import Scorer
        from pipeline.worker.processor import build_processor
    except ImportError as exc:
        log.warning("gatewatch.evaluation_missing", error=str(exc))
        return None
    settings = Settings()
    # The run's OpenAPI document feeds the spec-drift detector, as `gatewatch evaluate` does.
    spec = traffic_dir / "openapi.json"
    specs = [load_spec(spec)] if spec.is_file() else None
    processor = build_processor(settings, event_clock=True, specs=specs)
    scorer = Scorer(orjson.loads(labels.read_bytes()), processor.auth_routes)
    replayed = ReplayResult()
    redactor = Redactor(settings.redaction_key.get_secret_value().encode())
    with traffic.open("rb") as f:
        events = parse_lines(f, "kong", redactor, replayed)
        replay(events, processor, observe=scorer.observe, result=replayed)
    report: dict[str, Any] = scorer.report(replayed.decisions)
    report["replay"] = replayed.summary()
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def side_by_side(modsec: dict[str, Any], ours: dict[str, Any] | None) -> list[Table]:
    """The comparison tables: detection per scenario, then benign false positives.

    `ours` is `pipeline.evaluation.score.evaluate_run`'s dict: {"scenarios": {name: {episodes,
    detected, recall, median_time_to_detect_s, p90_time_to_detect_s}}, "benign": {subject_hours,
    false_positive_subjects, fp_per_1000_subject_hours}}; None shows ModSecurity alone.
    """
    detection = Table(title="Attack episodes detected (ModSecurity: any request blocked)")
    detection.add_column("scenario")
    detection.add_column("episodes", justify="right")
    if ours is not None:
        for col in ("gatewatch detected", "recall", "median s", "p90 s"):
            detection.add_column(col, justify="right", style="cyan")
    for col in ("ModSecurity detected", "recall", "median s", "p90 s", "requests blocked"):
        detection.add_column(col, justify="right", style="magenta")
    detection.add_column("top CRS rules", style="magenta")
    our_scenarios = (ours or {}).get("scenarios", {})
    for name in sorted(set(modsec["scenarios"]) | set(our_scenarios)):
        theirs = modsec["scenarios"].get(name, {})
        mine = our_scenarios.get(name, {})
        row = [name, _fmt(theirs.get("episodes", mine.get("episodes")))]
        if ours is not None:
            row += [_fmt(mine.get(k)) for k in ("detected", "recall")]
            row += [_fmt(mine.get(k)) for k in ("median_time_to_detect_s", "p90_time_to_detect_s")]
        row += [_fmt(theirs.get(k)) for k in ("detected", "recall")]
        row += [_fmt(theirs.get(k)) for k in ("median_time_to_detect_s", "p90_time_to_detect_s")]
        row.append(f"{_fmt(theirs.get('requests_flagged'))} / {_fmt(theirs.get('requests'))}")
        row.append(" ".join(r["rule"] for r in modsec.get("rules", {}).get(name, [])[:3]))
        detection.add_row(*row)

    benign = Table(title="Benign traffic: false positives")
    benign.add_column("")
    benign.add_column("subject-hours", justify="right")
    benign.add_column("FP subjects", justify="right")
    benign.add_column("FP / 1000 subject-hours", justify="right")
    benign.add_column("requests blocked", justify="right")
    if ours is not None:
        b = ours.get("benign", {})
        benign.add_row(
            "gatewatch",
            *(_fmt(b.get(k)) for k in ("subject_hours", "false_positive_subjects")),
            _fmt(b.get("fp_per_1000_subject_hours")),
            "-",
            style="cyan",
        )
    m = modsec["benign"]
    benign.add_row(
        "ModSecurity + CRS PL1",
        _fmt(m["subject_hours"]),
        f"{_fmt(m['false_positive_subjects'])} of {_fmt(m['subjects'])}",
        _fmt(m["fp_per_1000_subject_hours"]),
        f"{_fmt(m['requests_flagged'])} / {_fmt(m['requests'])}",
        style="magenta",
    )
    if (r := modsec.get("rest_methods_allowed")) is not None:
        rb = r["benign"]
        benign.add_row(
            "  same, PUT/PATCH/DELETE allowed*",
            _fmt(rb["subject_hours"]),
            f"{_fmt(rb['false_positive_subjects'])} of {_fmt(rb['subjects'])}",
            _fmt(rb["fp_per_1000_subject_hours"]),
            f"{_fmt(rb['requests_flagged'])} / {_fmt(rb['requests'])}",
            style="magenta",
        )
        benign.caption = (
            "* CRS's tx.allowed_methods is GET HEAD POST OPTIONS: a REST API adds the others. "
            "Derived from the audit log (911100's 5 points taken off each score)."
        )
    return [detection, benign]


def rules_table(rules: list[dict[str, Any]], limit: int = 12) -> Table:
    table = Table(title="CRS rules that scored on blocked benign requests")
    for col in ("rule", "requests", "message", "example request"):
        table.add_column(col, overflow="fold")
    for r in rules[:limit]:
        table.add_row(r["rule"], _fmt(r["requests"]), r["message"], r["example"])
    return table


def crs_table(modsec: dict[str, Any], ours: dict[str, Any] | None) -> Table:
    table = Table(title="CRS regression corpus, query-string cases (recall = share blocked)")
    table.add_column("family")
    table.add_column("attacks", justify="right")
    if ours is not None:
        table.add_column("gatewatch recall", justify="right", style="cyan")
    table.add_column("ModSecurity recall", justify="right", style="magenta")
    mine = (ours or {}).get("categories", {})
    for name, row in modsec["categories"].items():
        cells = [name, _fmt(row["attacks"])]
        if ours is not None:
            cells.append(_fmt(mine.get(name, {}).get("recall")))
        cells.append(_fmt(row["recall"]))
        table.add_row(*cells)
    cells = ["SQLi+XSS+LFI+RCE", _fmt(modsec["core_attacks"])]
    if ours is not None:
        cells.append(_fmt(ours.get("combined_recall")))
    table.add_row(*cells, _fmt(modsec["combined_recall"]), style="bold")
    cells = ["negative tests flagged", _fmt(modsec["negatives"])]
    if ours is not None:
        cells.append(_fmt(ours.get("negative_rate")))
    table.add_row(*cells, _fmt(modsec["negative_rate"]))
    return table


# --- main ----------------------------------------------------------------------------------------


def simulated_run(seed: int, minutes: float, out: Path) -> Path:
    try:
        from pipeline.simulator import simulate
    except ImportError as exc:
        raise SystemExit(
            f"--seed/--minutes need pipeline.simulator ({exc}); use --traffic"
        ) from exc
    simulate(out, seed=seed, minutes=minutes, format="kong")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--traffic", type=Path, help="a simulator output folder")
    source.add_argument("--seed", type=int, help="simulate a run with this seed (and --minutes)")
    parser.add_argument("--minutes", type=float, default=20.0, help="simulated minutes (--seed)")
    parser.add_argument("--limit", type=int, help="replay at most this many requests")
    parser.add_argument("--crs", action="store_true", help="also the CRS query-string corpus")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="nginx workers")
    parser.add_argument("--connections", type=int, default=32, help="client connections")
    parser.add_argument(
        "--allowed-methods",
        help="CRS tx.allowed_methods (default CRS: GET HEAD POST OPTIONS; a REST API would add "
        "PUT PATCH DELETE)",
    )
    parser.add_argument("--keep", action="store_true", help="keep nginx's prefix (audit log)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("info")
    console = Console()

    if missing := missing_packages():
        console.print(f"[red]missing Debian packages: {' '.join(missing)}[/]\n  {APT_LINE}")
        raise SystemExit(2)
    if args.limit is not None and args.limit <= 0:
        parser.error("--limit must be positive")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")

    with contextlib.ExitStack() as stack:
        if args.traffic is not None:
            folder = args.traffic
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewatch-sim-"))
            folder = simulated_run(args.seed, args.minutes, Path(tmp))
        for name in ("traffic.ndjson", "labels.json"):
            if not (folder / name).is_file():
                raise SystemExit(f"{folder}: no {name} (expected a simulator output folder)")
        try:
            episodes, end_ms = load_labels(folder / "labels.json")
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        traffic = load_traffic(folder / "traffic.ndjson", args.limit)
        if not traffic.wires:
            raise SystemExit(f"{folder / 'traffic.ndjson'}: no replayable request")

        gateway = ModSecurityNginx(workers=args.workers, allowed_methods=args.allowed_methods)
        try:
            gateway.start()
        except StackError as exc:
            raise SystemExit(f"nginx + ModSecurity did not start: {exc}") from exc
        stack.callback(gateway.close, args.keep)
        if args.keep:
            console.print(f"nginx prefix kept: {gateway.prefix}", style="dim")
        client0, nginx0 = time.process_time(), gateway.cpu_s()
        statuses, wall_s = run_replay(gateway, traffic.wires, args.connections, "replay")
        client_cpu_s, nginx_cpu_s = time.process_time() - client0, gateway.cpu_s() - nginx0
        crs = run_crs_corpus(gateway, args.connections) if args.crs else None
        audit = read_audit(gateway.audit_log)
        ours = None
        if args.limit is None:
            ours = gatewatch_figures(folder)
        else:
            log.warning(
                "gatewatch.skipped", why="--limit: only the whole run compares like for like"
            )

    flagged = [s == BLOCKED for s in statuses]
    modsec = score_run(traffic.times_ms, traffic.subjects, flagged, episodes, end_ms)
    modsec["statuses"] = {str(k): v for k, v in sorted(Counter(statuses).items())}
    modsec["rules"] = blocked_rules(traffic, flagged, episodes, audit)
    modsec["skipped_entries"] = dict(traffic.skipped)
    if not args.allowed_methods:
        rest = without_method_policy(flagged, audit)
        modsec["rest_methods_allowed"] = score_run(
            traffic.times_ms, traffic.subjects, rest, episodes, end_ms
        )
    if crs is not None:
        modsec["crs_corpus"] = crs
    ours_crs = None
    if crs is not None:
        with contextlib.suppress(ImportError):
            from pipeline.evaluation.crs import crs_report

            ours_crs = crs_report()
    config = {
        "modsecurity": "libmodsecurity 3 (Debian libnginx-mod-http-modsecurity)",
        "crs": "Debian modsecurity-crs (3.3)",
        "paranoia_level": PARANOIA_LEVEL,
        "inbound_anomaly_score_threshold": ANOMALY_THRESHOLD,
        "allowed_methods": args.allowed_methods or "CRS default",
        "traffic": str(folder)
        if args.traffic
        else f"simulated: seed {args.seed}, {args.minutes} min",
        "requests": len(traffic.wires),
        "replay_s": round(wall_s, 2),
        "requests_per_s": round(len(traffic.wires) / wall_s, 1) if wall_s else None,
        "nginx_workers": args.workers,
        "client_connections": args.connections,
        "client_cpu_s": round(client_cpu_s, 2),
        "nginx_cpu_s": round(nginx_cpu_s, 2),
        # What ModSecurity + CRS cost inline, per request (nginx's proxying included).
        "nginx_cpu_ms_per_request": round(1000 * nginx_cpu_s / len(traffic.wires), 3),
    }

    if args.json:
        out = {"modsecurity": modsec, "gatewatch": ours, "config": config}
        if crs is not None:
            out["gatewatch_crs_corpus"] = ours_crs
        print(orjson.dumps(out).decode())
        return
    for table in side_by_side(modsec, ours):
        console.print(table)
    if modsec["rules"].get("benign"):
        console.print(rules_table(modsec["rules"]["benign"]))
    if crs is not None:
        console.print(crs_table(crs, ours_crs))
    console.print(
        f"{config['requests']:,} requests replayed in {config['replay_s']} s "
        f"({config['requests_per_s']:,} req/s, {args.workers} nginx workers, "
        f"{args.connections} connections); statuses {modsec['statuses']}",
        style="dim",
    )


if __name__ == "__main__":
    main()
