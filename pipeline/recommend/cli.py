"""`gatewatch recommend`: learned baselines -> rate-limit configuration for operators to review."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from pipeline.config import Settings
from pipeline.evaluation.replay import SOURCES
from pipeline.logs import configure_logging
from pipeline.recommend.apigee import write_apigee
from pipeline.recommend.baselines import WARMUP_WINDOWS, from_replay
from pipeline.recommend.deck import render_deck

__all__ = ["recommend_command"]

FORMATS = ("deck", "apigee", "json")


def recommend_command(
    from_file: Annotated[
        Path | None,
        typer.Option("--from", help="Replay this log file (gatewatch replay's formats) to learn "
                     "the baselines"),
    ] = None,
    source: Annotated[str, typer.Option(help=f"Log format: {', '.join(SOURCES)}")] = "kong",
    format: Annotated[str, typer.Option("--format", help="deck | apigee | json")] = "deck",
    out: Annotated[
        Path | None,
        typer.Option(help="deck/json: a file (default stdout); apigee: the directory the "
                     "gatewatch-limits shared flow bundle is written under (required)"),
    ] = None,
    top: Annotated[int, typer.Option(help="At most this many consumers, busiest first")] = 100,
) -> None:
    """Turn learned per-consumer baselines into rate limits to review: Kong rate-limiting
    (decK), Apigee SpikeArrest + Quota (a shared flow), or JSON; each cites its baseline."""
    if format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    if source not in SOURCES:
        raise typer.BadParameter(f"--source must be one of {', '.join(SOURCES)}")
    if format == "apigee" and out is None:
        raise typer.BadParameter("--format apigee writes a bundle: give --out DIR")
    if top < 1:
        raise typer.BadParameter("--top must be at least 1")
    if from_file is None:
        # Baselines live in worker memory only until per-subject checkpoints reach Redis.
        raise typer.BadParameter("give --from traffic.ndjson: baselines are learned by replaying "
                                 "a log (no checkpointed baselines to read from Redis yet)")
    if not from_file.is_file():
        raise typer.BadParameter(f"--from {from_file}: no such file")
    configure_logging("warning")
    settings = Settings()
    err = Console(stderr=True)
    with err.status(f"replaying {from_file} through the detectors..."):
        found, replayed = from_replay(from_file, source, settings)
    if format != "json":
        # A Kong consumer id means nothing to Apigee and an app name nothing to Kong.
        gateway = "kong" if format == "deck" else "apigee"
        mine = [r for r in found if r.gateway in (gateway, None)]
        if found and not mine:
            err.print(f"no consumer seen on {gateway} in {from_file}: nothing to recommend")
        found = mine
    chosen = found[:top]
    cited = f"replay of {from_file.name} ({replayed.events:,} events)"
    if format == "json":
        text = orjson.dumps(
            {"source": cited, "warmup_windows": WARMUP_WINDOWS,
             "recommendations": [r.as_dict() for r in chosen]},
            option=orjson.OPT_INDENT_2,
        ).decode() + "\n"  # fmt: skip
        _emit(text, out)
    elif format == "deck":
        _emit(render_deck(chosen, source=cited), out)
    else:
        assert out is not None
        bundle = write_apigee(chosen, out, source=cited)
        err.print(f"wrote {bundle}")
    err.print(
        f"{len(chosen)} of {len(found)} consumers with a learned baseline "
        f"(>= {WARMUP_WINDOWS} windows) from {replayed.events:,} events; "
        f"{sum(1 for r in chosen if r.decided_against)} were decided against: review those first"
    )


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
