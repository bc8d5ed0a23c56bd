"""`gatewatch override`, `gatewatch feedback`, `gatewatch tuning`: operator actions from a shell.

The actor is `--actor`, else the OS user running the command. Each action is applied and audited
in Redis in one transaction, then its alert is published to the alerts topic; when Kafka cannot be
reached the alert stays queued in Redis (the command says so) and the workers publish it.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from detectors.fusion import Fusion
from detectors.policy import Policy
from pipeline.config import Settings
from pipeline.decisions import RedisDecisions
from pipeline.logs import configure_logging
from pipeline.operator.actions import OperatorActions, OperatorError
from pipeline.operator.audit import AuditTrail
from pipeline.operator.overrides import Override, Overrides
from pipeline.operator.subjects import ACCEPTED, SubjectError, canonical_subject
from pipeline.operator.tuning import TuningStore

__all__ = [
    "feedback_command", "operator_actions", "override_command", "parse_ttl", "tuning_command"
]

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
ActorOpt = Annotated[
    str | None, typer.Option(help="Who is acting, for the audit trail (default: the OS user)")
]
TtlOpt = Annotated[
    str | None,
    typer.Option(help="How long it lasts: 90s, 30m, 12h, 7d or never "
                 "(default GATEWATCH_OVERRIDE_TTL_S)"),
]  # fmt: skip
_TTL = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str | None, default_s: float) -> float | None:
    """Seconds from `90s`, `30m`, `12h`, `7d`, a bare number of seconds or `never` (None).

    >>> parse_ttl("12h", 0), parse_ttl(None, 60), parse_ttl("never", 60), parse_ttl(None, 0)
    (43200.0, 60, None, None)
    """
    if text is None:
        return default_s or None
    if text.strip().lower() in ("never", "0"):
        return None
    found = _TTL.fullmatch(text.strip().lower())
    if not found:
        raise typer.BadParameter(f"--ttl {text!r}: use 90s, 30m, 12h, 7d or never")
    return float(found[1]) * _UNIT[found[2]]


def override_command(
    action: Annotated[str, typer.Argument(help="allow | deny | clear | list")],
    subject: Annotated[str | None, typer.Argument(help=ACCEPTED)] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail)")] = "",
    ttl: TtlOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Operator overrides that gateways apply before any decision (allow wins, deny blocks);
    each one audited with who, why and until when."""
    if action not in ("allow", "deny", "clear", "list"):
        raise typer.BadParameter("action must be allow, deny, clear or list")
    configure_logging("warning")  # stdout carries the answer only
    settings = Settings()
    if action == "list":
        overrides = _run(settings, lambda redis: Overrides(redis, settings.redis_prefix).active())
        _print_overrides(overrides, as_json)
        return
    if subject is None:
        raise typer.BadParameter(f"give a subject: {ACCEPTED}")
    _check_subject(subject)
    if action in ("allow", "deny") and not reason.strip():
        raise typer.BadParameter("say why with --reason TEXT (it goes to the audit trail)")
    who = actor or getpass.getuser()
    ttl_s = parse_ttl(ttl, settings.override_ttl_s)

    async def act(redis: Redis) -> tuple[Override | None, int, dict[str, list[str]]]:
        actions = operator_actions(redis, settings)
        if action == "clear":
            done = await actions.clear(subject, actor=who, reason=reason)
        else:
            done = await actions.override(
                action, subject, actor=who, reason=reason, ttl_s=ttl_s  # type: ignore[arg-type]
            )
        return done, await _publish(actions.audit, settings), await actions.overrides.all()

    done, pending, current = _run(settings, act)
    if as_json:
        # The subjects in force per kind, as before overrides were audited, and what was done.
        _out(current | {"action": action, "override": done.model_dump() if done else None,
                        "audit_pending": pending})  # fmt: skip
    elif action == "clear":
        Console().print(f"{subject}: " + ("override cleared" if done else "had no override"))
    else:
        assert done is not None
        Console().print(f"{done.subject}: [bold]{done.kind}[/] by {done.actor} "
                        f"{_until(done.expires_at)} ({done.id})")  # fmt: skip
    _warn_pending(pending)


def feedback_command(
    subject: Annotated[str, typer.Argument(help=ACCEPTED)],
    false_positive: Annotated[
        bool, typer.Option("--false-positive", help="It was wrong: allow it, learn from it")
    ] = False,
    confirmed: Annotated[
        bool, typer.Option("--confirmed", help="It was right (recorded; changes nothing)")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (required; kept in the audit trail)")] = "",
    ttl: TtlOpt = None,
    detector: Annotated[
        str | None, typer.Option(help="The detector that was wrong (default: the decision's)")
    ] = None,
    route: Annotated[
        str | None, typer.Option(help="Route template or prefix whose thresholds move")
    ] = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tell gatewatch a decision was wrong (or right). A false positive becomes an allow override
    with who/why/expiry, its windows become learnable, and the detector's or route's thresholds
    rise a bounded, decaying step (README: Feedback)."""
    if false_positive == confirmed:
        raise typer.BadParameter("give exactly one of --false-positive or --confirmed")
    if not reason.strip():
        raise typer.BadParameter("say why with --reason TEXT (it goes to the audit trail)")
    _check_subject(subject)
    configure_logging("warning")  # stdout carries the answer only
    settings = Settings()
    ttl_s = parse_ttl(ttl, settings.override_ttl_s)

    async def act(redis: Redis) -> tuple[dict[str, Any], int]:
        actions = operator_actions(redis, settings)
        result = await actions.feedback(
            subject, "false_positive" if false_positive else "confirmed",
            actor=actor or getpass.getuser(), reason=reason, ttl_s=ttl_s,
            detector=detector, route=route,
        )  # fmt: skip
        return result.as_dict(), await _publish(actions.audit, settings)

    result, pending = _run(settings, act)
    if as_json:
        _out(result | {"audit_pending": pending})
    else:
        console = Console()
        console.print(f"{result['subject']}: {result['verdict'].replace('_', ' ')} "
                      f"recorded by {result['actor']}")  # fmt: skip
        if result["override"]:
            console.print(f"  allowed {_until(result['override']['expires_at'])}")
        if result["tuning"]:
            t = result["tuning"]
            scope = " on ".join(x for x in (t["detector"], t["route"]) if x)
            console.print(f"  thresholds for {scope}: adjustment {t['before']:.3f} -> "
                          f"{t['after']:.3f}")  # fmt: skip
        if result["note"]:
            console.print(f"  {result['note']}")
    _warn_pending(pending)


def tuning_command(as_json: JsonOpt = False) -> None:
    """Feedback's threshold adjustments in force (decayed to now)."""
    settings = Settings()
    store = _tuning_store(settings)
    entries = _run(settings, lambda redis: _tuning_store(settings, redis).entries())
    rows = [
        {"route": route, "detector": detector, **record}
        for (route, detector), record in sorted(entries.items(), key=lambda kv: str(kv[0]))
    ]
    if as_json:
        _out({"half_life_s": store.half_life_s, "adjustments": rows})
        return
    table = Table(title=f"threshold adjustments (halve every {store.half_life_s / 86400:g} d)")
    for column in ("route", "detector", "adjustment", "reports", "last by", "at"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["route"] or "*", row["detector"] or "*", f"{row['value']:.3f}",
                      str(row["reports"]), row["actor"], _when(row["at"]))  # fmt: skip
    Console().print(table)


def operator_actions(redis: Redis, settings: Settings) -> OperatorActions:
    """The operator actions as settings configure them (policy, thresholds, tuning bounds)."""
    prefix = settings.redis_prefix
    policy = Policy.from_file(Path(settings.policy_file)) if settings.policy_file else Policy()
    return OperatorActions(
        redis,
        overrides=Overrides(redis, prefix),
        audit=AuditTrail(redis, prefix=prefix, topic=settings.topics.alerts),
        tuning=_tuning_store(settings, redis),
        decisions=RedisDecisions(redis, prefix),
        policy=policy,
        base_thresholds=Fusion().thresholds,
        tuning_step=settings.tuning_step,
        tuning_cap=settings.tuning_max,
        mode=settings.mode,
    )


def _tuning_store(settings: Settings, redis: Any = None) -> TuningStore:
    return TuningStore(
        redis, prefix=settings.redis_prefix, half_life_s=settings.tuning_half_life_s
    )


async def _publish(audit: AuditTrail, settings: Settings) -> int:
    """Publish the queued audit alerts; returns how many are still queued (Kafka unreachable)."""
    from aiokafka.errors import KafkaError

    from pipeline.kafka import make_producer

    # aiokafka logs every failed connection attempt; the one line below says what matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    producer = make_producer(settings)
    try:
        async with asyncio.timeout(settings.kafka_timeout_s):
            await producer.start()
            await audit.flush(producer)
    except (KafkaError, OSError, TimeoutError):
        pass
    finally:
        await producer.stop()
    return await audit.pending()


def _run(settings: Settings, work: Callable[[Redis], Awaitable[T]]) -> T:
    async def go() -> T:
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(go())
    except OperatorError as exc:
        _fail(str(exc), 2)
    except (RedisError, OSError) as exc:
        _fail(f"Redis unavailable ({exc}): nothing was changed", 1)


def _check_subject(subject: str) -> None:
    """Refuse a subject no gateway can match before touching Redis."""
    try:
        canonical_subject(subject)
    except SubjectError as exc:
        _fail(str(exc), 2)


def _fail(message: str, code: int) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _warn_pending(pending: int) -> None:
    if pending:
        Console(stderr=True).print(
            f"[yellow]warning:[/] {pending} audit alert(s) queued in Redis: Kafka was not "
            "reachable; workers publish them once it is", soft_wrap=True,
        )  # fmt: skip


def _print_overrides(overrides: list[Override], as_json: bool) -> None:
    if as_json:
        _out({
            "allow": [o.subject for o in overrides if o.kind == "allow"],
            "deny": [o.subject for o in overrides if o.kind == "deny"],
            "overrides": [o.model_dump() for o in overrides],
        })  # fmt: skip
        return
    table = Table(title=f"{len(overrides)} overrides in force")
    for column in ("subject", "kind", "by", "since", "until", "reason"):
        table.add_column(column)
    for o in overrides:
        table.add_row(o.subject, o.kind, o.actor, _when(o.created_at), _until(o.expires_at),
                      o.reason)  # fmt: skip
    Console().print(table)


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "-"


def _until(ms: int | None) -> str:
    return f"until {_when(ms)}" if ms else "until cleared"


def _out(data: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(data).decode() + "\n")
