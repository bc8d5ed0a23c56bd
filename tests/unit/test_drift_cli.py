"""`gatewatch drift`: traffic files against OpenAPI documents, as JSON or as tables; bad lines are
counted, bad documents are clear errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from typer.testing import CliRunner

from pipeline.evaluation.drift import drift_command
from tests.unit.conftest import T0_MS, kong_bytes
from tests.unit.test_spec_drift import SCANNER, SHOP, benign, event, scan

app = typer.Typer()
app.command("drift")(drift_command)


@app.callback()
def _main() -> None:
    """A group, so that `drift` is invoked by name as in `gatewatch drift`."""


def traffic(tmp_path: Path, *extra: bytes) -> Path:
    events = sorted([*benign(90), *scan(start_s=20.0)], key=lambda e: e.ts_ms)
    lines = [e.model_dump_json().encode() for e in events]
    path = tmp_path / "traffic.ndjson"
    path.write_bytes(b"\n".join([*lines, *extra]) + b"\n")
    return path


def run(*args: str) -> tuple[int, str]:
    # Wide enough that rich does not wrap error panels or table cells mid-word.
    result = CliRunner().invoke(app, ["drift", *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def test_json_report(tmp_path: Path) -> None:
    code, out = run(str(traffic(tmp_path)), "--spec", str(SHOP), "--source", "events", "--json")
    assert code == 0, out
    report = orjson.loads(out)
    assert report["specs"] == ["shop fixture"]
    assert report["discovery_subjects"][0]["subject"] == f"ip:{SCANNER}"
    assert report["discovery_subjects"][0]["first_challenged_ms"] <= T0_MS + 30_000
    assert report["input"] == {"rejects": 0, "reject_reasons": {}}


def test_tables_show_request_text_as_sent(tmp_path: Path) -> None:
    odd = event(95, "/v1/[red]x", status=200).model_dump_json().encode()
    code, out = run(str(traffic(tmp_path, odd)), "--spec", str(SHOP), "--source", "events")
    assert code == 0, out
    assert "API-spec drift" in out and "subjects discovering endpoints" in out
    assert "/v1/[red]x" in out  # escaped, not swallowed as rich markup
    assert "documented, never called" in out


def test_bad_lines_are_counted(tmp_path: Path) -> None:
    path = traffic(tmp_path, b"{not json", b'{"ts_ms": 1}')
    code, out = run(str(path), "--spec", str(SHOP), "--source", "events", "--json")
    assert code == 0
    assert orjson.loads(out)["input"]["rejects"] == 2
    only_bad = tmp_path / "bad.ndjson"
    only_bad.write_bytes(b"{not json\n")
    code, _ = run(str(only_bad), "--spec", str(SHOP), "--source", "events", "--json")
    assert code == 1


def test_kong_logs_are_read_like_replay_reads_them(tmp_path: Path) -> None:
    logs = tmp_path / "kong.ndjson"
    logs.write_bytes(orjson.dumps(orjson.loads(kong_bytes("3.8"))) + b"\n")
    code, out = run(str(logs), "--spec", str(SHOP), "--json")
    assert code == 0, out
    report = orjson.loads(out)
    assert report["events"] == 1
    assert report["findings"][0]["route"] == "/example-route"  # not under /v1 or /v2


def test_base_path_and_ignored_params(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_bytes(
        event(0, "/shop/products", query={"_": "1700000000"}).model_dump_json().encode()
    )
    args = ["--spec", str(SHOP), "--source", "events", "--json", "--base-path", "/shop"]
    code, out = run(str(path), *args, "--ignore-param", "_")
    assert code == 0, out
    assert orjson.loads(out)["findings"] == []
    _, out = run(str(path), *args)
    assert [f["kind"] for f in orjson.loads(out)["findings"]] == ["unknown_parameter"]


def test_bad_documents_and_files_are_clear_errors(tmp_path: Path) -> None:
    path = traffic(tmp_path)
    code, out = run(str(path), "--spec", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in out
    swagger = tmp_path / "swagger.json"
    swagger.write_bytes(b'{"swagger": "2.0", "paths": {}}')
    code, out = run(str(path), "--spec", str(swagger))
    assert code == 2 and "Swagger 2.0 is not supported" in out
    code, out = run(str(tmp_path / "nope.ndjson"), "--spec", str(SHOP))
    assert code == 2 and "No such file" in out
    code, out = run(str(path), "--spec", str(SHOP), "--source", "csv")
    assert code == 2 and "unknown source" in out
