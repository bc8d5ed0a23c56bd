"""`gatewatch demo`: the whole pipeline on one machine, with an attack to watch being blocked.

Starts the embedded broker and Redis (unless given URLs), a collector and a worker as child
processes, plays Kong http-log traffic into the collector over HTTP (batches, bearer token, like
Kong's queue), switches the attacks on after a baseline period, follows the decision stream in
Redis the way a gateway would, and reports what was blocked and how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from pipeline.config import Settings, TopicNames, to_environment
from pipeline.decisions import RedisDecisions
from pipeline.demo.incidents import DemoIncidents
from pipeline.demo.traffic import TrafficModel
from pipeline.ingest.redaction import Redactor
from pipeline.stack import EmbeddedStack, free_port

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

TICK_S = 0.1
BATCH = 200  # entries per POST, like Kong's queue.max_batch_size
PREFIX = "gw:"


@dataclass
class DemoOptions:
    kafka: str | None = None
    redis_url: str | None = None
    seed: int = 7
    baseline_s: float = 20.0
    attack_s: float = 15.0
    cooldown_s: float = 3.0
    partitions: int = 4
    startup_timeout_s: float = 90.0
    report: Path | None = None  # where the HTML report goes (default: next to the logs)


@dataclass
class DemoResult:
    events_sent: int = 0
    events_processed: int = 0
    attack_subjects: list[str] = field(default_factory=list)
    blocked_subjects: list[str] = field(default_factory=list)
    false_blocks: int = 0
    false_blocked_subjects: list[str] = field(default_factory=list)
    # Benign subjects that got a milder action (tag or challenge): near-misses worth watching.
    benign_flagged: dict[str, str] = field(default_factory=dict)
    time_to_block_s: dict[str, float] = field(default_factory=dict)
    # Every subject that belongs to an attacker (their addresses, keys): blocking these is right.
    attributable: list[str] = field(default_factory=list)
    throughput_eps: float = 0.0
    duration_s: float = 0.0
    ingest_errors: int = 0
    # The alerts the worker wrote (distinct ids), the incidents they became, the report's path.
    alerts: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)
    report: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class _Live:
    phase: str = "starting"
    sent: int = 0
    processed: int = 0
    decisions: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    attack_started: float | None = None
    blocked_at: dict[str, float] = field(default_factory=dict)
    eps: float = 0.0


async def run_demo(options: DemoOptions, console: Console) -> DemoResult:
    stack = None
    if options.kafka is None or options.redis_url is None:
        console.log("starting the embedded stack (Tansu broker + Redis)")
        stack = await asyncio.to_thread(EmbeddedStack().start)
    kafka = options.kafka or (stack.kafka if stack else "")
    redis_url = options.redis_url or (stack.redis_url if stack else "")
    token, redaction_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="gatewatch-demo-"))
    # A fresh worker group and prefix per run, so a shared broker or Redis holds nothing of ours.
    run_id = secrets.token_hex(3)
    settings = Settings(
        kafka=kafka,
        redis_url=redis_url,
        ingest_token=token,
        redaction_key=redaction_key,
        mode="enforce",
        partitions=options.partitions,
        redis_prefix=f"{PREFIX}{run_id}:",
        worker_id=f"gatewatch-demo-{run_id}",
        web_port=free_port(),
        # The collector's spool lives with this run's logs: its broker is gone after the run.
        spool_dir=str(logdir / "spool"),
        # Its own alerts topic: on a shared broker the incidents are this run's alone.
        topics=TopicNames(alerts=f"gatewatch.alerts.demo-{run_id}"),
    )
    env = os.environ | to_environment(settings)
    procs: list[asyncio.subprocess.Process] = []
    redis = Redis.from_url(redis_url)
    incidents = DemoIncidents(settings, redis)
    try:
        await incidents.start()
        for name, args in (
            ("collector", ["collector", "--port", str(port)]),
            ("worker", ["worker"]),
        ):
            out = open(logdir / f"{name}.log", "wb")  # noqa: ASYNC230 - once, at startup
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "pipeline",
                    *args,
                    env=env,
                    stdout=out,
                    stderr=out,
                    stdin=asyncio.subprocess.DEVNULL,
                )
            )
            out.close()
        console.log(f"collector on 127.0.0.1:{port}, worker starting; logs in {logdir}")
        decisions = RedisDecisions(redis, f"{PREFIX}{run_id}:")
        result = await _play(
            options, console, port, token, Redactor(redaction_key.encode()), decisions, procs
        )
        await incidents.drain()
        result.alerts = incidents.alert_count
        result.incidents = await incidents.summaries(set(result.attributable))
        report = options.report or logdir / "report.html"
        await incidents.write_report(report)
        result.report = str(report)
        return result
    finally:
        await incidents.stop()
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await redis.aclose()
        if stack is not None:
            await asyncio.to_thread(stack.stop)


async def _play(
    options: DemoOptions,
    console: Console,
    port: int,
    token: str,
    redactor: Redactor,
    decisions: RedisDecisions,
    procs: list[asyncio.subprocess.Process],
) -> DemoResult:
    model = TrafficModel(seed=options.seed)
    stuffer_ip = model.stuffer.ips[0]
    flooder = model.flooder
    attack_subjects = [f"ip:{stuffer_ip}", f"consumer:{flooder.consumer_id}"]
    # Subjects that belong to the attackers: blocking these is right; any other block is false.
    attributable = set(attack_subjects) | {f"ip:{ip}" for ip in flooder.ips}
    attributable.add(f"key:{redactor.fingerprint(flooder.api_key or '')}")
    live = _Live()
    result = DemoResult(attack_subjects=attack_subjects, attributable=sorted(attributable))
    url = f"http://127.0.0.1:{port}/v1/ingest/kong"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async with aiohttp.ClientSession(headers=headers) as http:
        await _wait_healthy(
            http, f"http://127.0.0.1:{port}/healthz", procs, options.startup_timeout_s
        )
        watcher = asyncio.create_task(_watch(decisions, live, attack_subjects))
        display = (
            Live(
                _render(live, attack_subjects),
                console=console,
                refresh_per_second=4,
                transient=False,
                redirect_stderr=False,
            )
            if console.is_terminal
            else None
        )
        try:
            if display:
                display.start()
            await _drive(options, model, http, url, live, result, procs, display, attack_subjects)
            live.phase = "draining"
            deadline = time.monotonic() + 20
            # The worker's counter lives in Redis; the watcher refreshes it, so poll it here.
            while live.processed < live.sent and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # let the watcher read the last decisions
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if display:
                display.update(_render(live, attack_subjects))
                display.stop()

    result.events_sent = live.sent
    result.events_processed = live.processed
    blocked = sorted(s for s, (action, _, _) in live.decisions.items() if action == "block")
    result.blocked_subjects = blocked
    result.false_blocked_subjects = [s for s in blocked if s not in attributable]
    result.false_blocks = len(result.false_blocked_subjects)
    result.benign_flagged = {
        s: action
        for s, (action, _, _) in sorted(live.decisions.items())
        if action in ("tag", "challenge") and s not in attributable
    }
    if live.attack_started is not None:
        result.time_to_block_s = {
            s: round(t - live.attack_started, 3) for s, t in live.blocked_at.items()
        }
    result.duration_s = round(time.monotonic() - live.started, 1)
    result.throughput_eps = round(live.processed / max(result.duration_s, 1e-9), 1)
    return result


async def _drive(
    options: DemoOptions,
    model: TrafficModel,
    http: aiohttp.ClientSession,
    url: str,
    live: _Live,
    result: DemoResult,
    procs: list[asyncio.subprocess.Process],
    display: Live | None,
    attack_subjects: list[str],
) -> None:
    loop_start = time.monotonic()
    phase_start = None
    last_count, last_t = 0, loop_start
    next_tick = loop_start
    while True:
        now = time.monotonic()
        for proc in procs:
            if proc.returncode is not None:
                raise RuntimeError(f"a gatewatch process exited early with {proc.returncode}")
        if live.phase == "starting":
            if live.processed > 0:
                live.phase, phase_start = "baseline", now
            elif now - loop_start > options.startup_timeout_s:
                raise RuntimeError("the worker processed nothing before the startup timeout")
        elif live.phase == "baseline" and phase_start and now - phase_start >= options.baseline_s:
            model.start_attack()
            live.phase, phase_start, live.attack_started = "attack", now, now
        elif live.phase == "attack" and phase_start and now - phase_start >= options.attack_s:
            model.stop_attack()
            live.phase, phase_start = "cooldown", now
        elif live.phase == "cooldown" and phase_start and now - phase_start >= options.cooldown_s:
            return

        entries = model.tick(int(time.time() * 1000), TICK_S)
        batches = [entries[i : i + BATCH] for i in range(0, len(entries), BATCH)]
        sent = await asyncio.gather(*(_post(http, url, b) for b in batches))
        live.sent += sum(sent)
        result.ingest_errors += sum(len(b) - n for b, n in zip(batches, sent, strict=True))
        if now - last_t >= 1.0:
            live.eps = (live.sent - last_count) / (now - last_t)
            last_count, last_t = live.sent, now
            if display:
                display.update(_render(live, attack_subjects))
        next_tick += TICK_S
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


async def _post(http: aiohttp.ClientSession, url: str, batch: list[dict[str, Any]]) -> int:
    """POST one batch as Kong's http-log does; retry a few times on a non-2xx like Kong would."""
    for attempt in range(5):
        try:
            async with http.post(url, json=batch) as resp:
                if resp.status == 200:
                    body = await resp.json()
                    return int(body["accepted"])
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2 * (attempt + 1))
    return 0


async def _wait_healthy(
    http: aiohttp.ClientSession, url: str, procs: list[asyncio.subprocess.Process], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.returncode is not None for p in procs):
            raise RuntimeError("a gatewatch process exited during startup")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the collector did not answer {url} within {timeout_s} s")


async def _watch(decisions: RedisDecisions, live: _Live, attack_subjects: list[str]) -> None:
    """Follow the decision stream like a gateway's sync loop, and the worker's counters."""
    last_id = "0-0"
    last_stats = 0.0
    while True:
        resp = await decisions.redis.xread({decisions.stream: last_id}, count=1000, block=100)
        for _, entries in resp or []:
            for entry_id, fields in entries:
                last_id = entry_id
                f = {k.decode(): v.decode() for k, v in fields.items()}
                subject = f["subject"]
                live.decisions[subject] = (f["action"], float(f["score"]), "")
                if f["action"] == "block" and subject in attack_subjects:
                    live.blocked_at.setdefault(subject, time.monotonic())
        now = time.monotonic()
        if now - last_stats >= 0.25:
            live.processed = (await decisions.stats()).get("events_processed", 0)
            last_stats = now


def _render(live: _Live, attack_subjects: list[str]) -> Group:
    elapsed = time.monotonic() - live.started
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]phase[/] {live.phase}",
        f"[bold]t[/] {elapsed:5.1f}s",
        f"[bold]sent[/] {live.sent:,}",
        f"[bold]processed[/] {live.processed:,}",
        f"[bold]ingest[/] {live.eps:,.0f} ev/s",
        f"[bold]decisions[/] {len(live.decisions)}",
    )
    top = Table(title="riskiest subjects", expand=True)
    for col in ("subject", "action", "score", "attack?"):
        top.add_column(col)
    ranked = sorted(live.decisions.items(), key=lambda kv: kv[1][1], reverse=True)[:8]
    for subject, (action, score, _) in ranked:
        colour = {"block": "red", "challenge": "yellow", "tag": "cyan"}.get(action, "white")
        top.add_row(
            subject,
            f"[{colour}]{action}[/]",
            f"{score:.2f}",
            "yes" if subject in attack_subjects else "",
        )
    return Group(Panel(head, title="gatewatch demo"), top)
