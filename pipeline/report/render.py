"""The report data (`data.py`) as one self-contained HTML file, Markdown or JSON.

The HTML has no script and loads nothing: styles inline, charts inline SVG. It opens offline, in a
mail client's viewer, and from a ticket attachment alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

import orjson

from pipeline.report.charts import bar_chart, stacked_bars

__all__ = ["FORMATS", "render"]

FORMATS = ("html", "md", "json")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;
color:#1b1f24;padding:0 1rem}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.3rem}table{border-collapse:collapse;width:100%;
margin:.5rem 0}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eaeef2;
vertical-align:top}th{background:#f6f8fa}.kpis{display:flex;gap:1rem;flex-wrap:wrap}
.kpi{background:#f6f8fa;border-radius:6px;padding:.6rem 1rem}.kpi b{display:block;font-size:1.4rem}
.incident{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem;margin:.6rem 0}
.open{color:#cf222e}.next{background:#fff8c5;padding:.2rem .4rem;border-radius:4px}
figure.chart{margin:1rem 0}figure.chart svg{max-width:100%;height:auto}.muted{color:#57606a}
"""


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(data: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if fmt == "md":
        return _markdown(data).encode()
    if fmt == "html":
        return _html(data).encode()
    raise ValueError(f"format must be one of {FORMATS}")


def _title(data: dict[str, Any]) -> str:
    return f"gatewatch posture report, {_when(data['since_ms'])} to {_when(data['until_ms'])}"


def _kpis(data: dict[str, Any]) -> list[tuple[str, Any]]:
    t = data["totals"]
    return [
        ("incidents", t["incidents"]),
        ("alerts", t["alerts"]),
        ("decisions", t["decisions"]),
        ("findings", t["findings"]),
        ("subjects", t["subjects"]),
        ("operator actions", t["operator"]),
    ]


# Each section: title, columns, row getter. Shared by HTML and Markdown.
def _sections(data: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    def join(items: Iterable[Any]) -> str:
        return ", ".join(str(i) for i in items)

    return [
        (
            "Top subjects",
            ["subject", "strongest action", "mode", "alerts", "requests", "families", "routes"],
            [
                [
                    r["subject"],
                    r["action"],
                    r["mode"],
                    str(r["alerts"]),
                    str(r["requests"]),
                    join(r["families"]),
                    join(r["routes"]),
                ]
                for r in data["top_subjects"]
            ],
        ),
        (
            "Top routes",
            ["route", "alerts", "subjects", "families"],
            [
                [
                    r["route"],
                    str(r["alerts"]),
                    str(r["subjects"]),
                    join(f"{k} {v}" for k, v in r["families"].items()),
                ]
                for r in data["top_routes"]
            ],
        ),
        (
            "Would have blocked in shadow, per route (the evidence to enforce)",
            [
                "route",
                "would block",
                "would challenge",
                "enforced for others",
                "modes",
                "families",
                "examples",
            ],
            [
                [
                    r["route"],
                    str(r["would_block"]),
                    str(r["would_challenge"]),
                    str(r["enforced_elsewhere"]),
                    join(r["modes"]),
                    join(r["families"]),
                    join(r["examples"]),
                ]
                for r in data["would_block"]
            ],
        ),
        (
            "False-positive candidates (allow-listed or dismissed by an operator)",
            [
                "subject",
                "operator action",
                "by",
                "why",
                "when",
                "alerts before",
                "strongest action",
                "families",
            ],
            [
                [
                    r["subject"],
                    r["operator_action"],
                    r["actor"],
                    r["reason"],
                    _when(r["at_ms"]),
                    str(r["alerts_before"]),
                    r["strongest_action"],
                    join(r["families"]),
                ]
                for r in data["false_positive_candidates"]
            ],
        ),
        (
            "Recommended limits",
            [
                "subject",
                "routes",
                "peak req/s",
                "baseline req/s",
                "limit crossed",
                "recommended req/s",
            ],
            [
                [
                    r["subject"],
                    join(r["routes"]),
                    _num(r["peak_per_s"]),
                    _num(r["baseline_per_s"]),
                    _num(r["crossed_limit_per_s"]),
                    _num(r["recommended_per_s"]),
                ]
                for r in data["recommended_limits"]
            ],
        ),
        (
            "API-surface findings",
            ["route", "code", "alerts", "requests", "first seen", "example"],
            [
                [
                    r["route"],
                    r["code"],
                    str(r["alerts"]),
                    str(r["requests"]),
                    _when(r["first_ms"]),
                    r["text"],
                ]
                for r in data["api_surface"]
            ],
        ),
    ]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}".removesuffix(".0")


def _incident_lines(i: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (k, i[k]) for k in ("what", "who", "where", "how_much", "since", "done", "operator") if i[k]
    ]


def _html(data: dict[str, Any]) -> str:
    sources = ", ".join(f"{k}: {v}" for k, v in data["sources"].items())
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{escape(_title(data))}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(_title(data))}</h1>",
        f"<p class=muted>sources: {escape(sources)}</p>",
        "<div class=kpis id=kpis>",
        *(
            f'<div class=kpi data-kpi="{escape(k)}"><b>{v:,}</b>{escape(k)}</div>'
            for k, v in _kpis(data)
        ),
        "</div>",
        "<h2>Top incidents</h2>",
    ]
    if not data["incidents"]:
        out.append("<p class=muted>No incident in this window.</p>")
    for i in data["incidents"]:
        status = f'<span class="{escape(i["status"])}">{escape(i["status"])}</span>'
        out.append(
            f'<div class=incident id="{escape(i["id"])}"><b>{escape(i["title"])}</b> '
            f"<span class=muted>{escape(i['id'])}</span> {status}<table>"
        )
        out.extend(
            f"<tr><th>{escape(k.replace('_', ' '))}</th><td>{escape(v)}</td></tr>"
            for k, v in _incident_lines(i)
        )
        out.append(
            "<tr><th>next</th><td>"
            + "<br>".join(f"<span class=next>{escape(s)}</span>" for s in i["steps"])
            + "</td></tr></table></div>"
        )
    out.append("<h2>Detections over time</h2>")
    out.extend(_charts(data))
    for title, columns, rows in _sections(data):
        out.append(f"<h2>{escape(title)}</h2>")
        out.append(_html_table(columns, rows))
    out.append("</body></html>\n")
    return "\n".join(out)


def _charts(data: dict[str, Any]) -> list[str]:
    ts = data["timeseries"]
    if not ts["buckets"]:
        return ["<p class=muted>No detection in this window.</p>"]
    labels = data["families"]
    charts = [
        (
            "by-family",
            stacked_bars(
                "by-family",
                "Detections by family",
                ts["buckets"],
                ts["bucket_ms"],
                {labels.get(f, f): v for f, v in ts["by_family"].items()},
                "family",
            ),
            list(ts["by_family"]),
        ),
    ]
    if ts["by_action"]:
        charts.append(
            (
                "by-action",
                stacked_bars(
                    "by-action",
                    "Decisions by action (shadow: 'would')",
                    ts["buckets"],
                    ts["bucket_ms"],
                    ts["by_action"],
                    "action",
                ),
                list(ts["by_action"]),
            )
        )
    shadow = data["would_block"][:15]
    if shadow:
        charts.append(
            (
                "would-block",
                bar_chart(
                    "would-block",
                    "Subjects shadow mode would have blocked, per route",
                    [r["route"] for r in shadow],
                    [r["would_block"] for r in shadow],
                    "subjects",
                ),
                [r["route"] for r in shadow],
            )
        )
    return [
        f'<figure class=chart data-chart="{name}" data-series="{escape(",".join(series))}">'
        f"{svg}</figure>"
        for name, svg, series in charts
    ]


def _html_table(columns: Sequence[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p class=muted>None in this window.</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ") or " "


def _md_table(columns: Sequence[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["_None in this window._", ""]
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows),
        "",
    ]


def _markdown(data: dict[str, Any]) -> str:
    out = [
        f"# {_title(data)}",
        "",
        " · ".join(f"**{v:,}** {k}" for k, v in _kpis(data)),
        "",
        "## Top incidents",
        "",
    ]
    if not data["incidents"]:
        out += ["_No incident in this window._", ""]
    for i in data["incidents"]:
        out.append(f"### {i['title']} (`{i['id']}`, {i['status']})")
        out.extend(f"- **{k.replace('_', ' ')}**: {v}" for k, v in _incident_lines(i))
        out.extend(f"- **next**: {s}" for s in i["steps"])
        out.append("")
    ts = data["timeseries"]
    out += ["## Detections by family", ""]
    out += _md_table(
        ["family", "alerts"],
        [[data["families"].get(f, f), str(sum(v))] for f, v in ts["by_family"].items()],
    )
    out += ["## Decisions by action", ""]
    out += _md_table(["action", "alerts"], [[a, str(sum(v))] for a, v in ts["by_action"].items()])
    for title, columns, rows in _sections(data):
        out += [f"## {title}", ""]
        out += _md_table(columns, rows)
    return "\n".join(out)
