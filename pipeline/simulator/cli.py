"""`gatewatch simulate`: write a labelled simulator run (traffic, labels, OpenAPI) to a folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.simulator.labels import FORMATS

if TYPE_CHECKING:
    from pipeline.simulator.output import Summary

__all__ = ["simulate_command"]


def simulate_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the run into")] = Path(
        "sim-out"
    ),
    seed: Annotated[int, typer.Option(help="Everything random derives from it")] = 7,
    minutes: Annotated[float, typer.Option(help="Simulated minutes")] = 30.0,
    consumers: Annotated[
        int, typer.Option(help="Partner consumers (browser and app traffic scale with it)")
    ] = 2000,
    format: Annotated[
        str, typer.Option("--format", help="kong (http-log JSON lines) or apigee-syslog")
    ] = "kong",
    start_hour: Annotated[float, typer.Option(help="Time of day the run starts (UTC)")] = 9.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Simulate labelled gateway traffic: traffic.ndjson, labels.json and openapi.json."""
    # Imported here: `gatewatch` imports every command's module at startup.
    from pipeline.simulator.output import simulate

    if format not in FORMATS:
        raise typer.BadParameter(f"unknown format {format!r}; one of {', '.join(FORMATS)}")
    # With --json, stdout carries only the result; progress goes to stderr either way.
    console = Console(stderr=True)
    total_ms = int(minutes * 60_000)
    try:
        with Progress(
            TextColumn("[bold]simulating[/]"),
            BarColumn(),
            TextColumn("{task.fields[at]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("run", total=total_ms, at="")

            def advance(done_ms: int) -> None:
                progress.update(
                    task, completed=done_ms, at=f"{done_ms / 60_000:.1f} / {minutes:g} min"
                )

            summary = simulate(
                out,
                seed=seed,
                minutes=minutes,
                format=format,
                consumers=consumers,
                start_hour=start_hour,
                progress=advance,
            )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if as_json:
        sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    else:
        _print(Console(), summary)


def _print(console: Console, s: Summary) -> None:
    table = Table(title=f"simulated run -> {s.out_dir}", show_header=False)
    table.add_row("format", s.format)
    table.add_row("seed / minutes / consumers", f"{s.seed} / {s.minutes:g} / {s.consumers:,}")
    table.add_row("requests", f"{s.entries:,} ({s.entries / (s.minutes * 60):,.0f}/s simulated)")
    table.add_row("attack requests", f"{s.attack_entries:,}")
    table.add_row("benign subjects", f"{s.benign_subjects:,}")
    table.add_row("episodes", f"{s.episodes}")
    for scenario, n in s.episodes_by_scenario.items():
        table.add_row(f"  {scenario}", str(n))
    table.add_row("traffic.ndjson", f"{s.bytes / 1e6:,.1f} MB")
    table.add_row("CPU", f"{s.cpu_s:.1f} s ({s.entries / max(s.cpu_s, 1e-9):,.0f} requests/s)")
    console.print(table)
