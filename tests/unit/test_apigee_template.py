"""The MessageLogging template and the parser agree: what the policy renders, the parser reads.

Apigee cannot run here, so the template is rendered the way Apigee's message templates do it:
`{escapeJSON(var)}` becomes the JSON-escaped value of the flow variable, "" when it is unset.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest

from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.syslog_wire import parse_line

ROOT = Path(__file__).resolve().parent.parent.parent
POLICY = (
    ROOT
    / "apigee-messagelogging/gatewatch-logging/sharedflowbundle/policies/ML-gatewatch-syslog.xml"
)
FIXTURES = ROOT / "tests" / "fixtures" / "apigee"
PLACEHOLDER = re.compile(r"\{escapeJSON\(([A-Za-z0-9_.\-]+)\)\}")


def template() -> str:
    message = ET.parse(POLICY).getroot().find("./Syslog/Message")
    assert message is not None and message.text
    return message.text


def render(variables: dict[str, str]) -> str:
    """Apigee's escapeJSON: the value as the inside of a JSON string literal."""
    return PLACEHOLDER.sub(lambda m: json.dumps(variables.get(m.group(1), ""))[1:-1], template())


def fixture(name: str) -> dict[str, str]:
    doc: dict[str, str] = json.loads((FIXTURES / name).read_text())
    return doc


def test_template_is_one_line_of_self_describing_json() -> None:
    text = template()
    assert "\n" not in text and "\r" not in text  # one record per line on the TCP stream
    keys = list(json.loads(PLACEHOLDER.sub("", text)))
    # Every key is the variable it carries, so a typo cannot map a value to the wrong field.
    assert PLACEHOLDER.findall(text) == keys
    # No variable goes into the record without escapeJSON (no bare {var} placeholders).
    assert re.findall(r"\{(?!escapeJSON\()[A-Za-z_][A-Za-z0-9_.\-]*\}", text) == []


def test_policy_settings() -> None:
    syslog = ET.parse(POLICY).getroot().find("./Syslog")
    assert syslog is not None
    assert syslog.findtext("Protocol") == "TCP"
    assert syslog.findtext("FormatMessage") == "true"
    assert syslog.findtext("Port", "").isdigit()


@pytest.mark.parametrize("name", ["messagelogging-200.json", "messagelogging-401-invalid-key.json"])
def test_fixtures_are_renderings_of_the_template(name: str) -> None:
    values = fixture(name)
    assert json.loads(render(values)) == values


@pytest.mark.parametrize("name", ["messagelogging-200.json", "messagelogging-401-invalid-key.json"])
def test_parser_reads_what_the_template_renders(redactor: Redactor, name: str) -> None:
    parser = ApigeeParser(redactor)
    rendered = parser.parse_payload(render(fixture(name)).encode())
    direct = parser.parse_payload(orjson.dumps(fixture(name)))
    assert rendered.rejects == []
    assert [e.model_dump() for e in rendered.events] == [e.model_dump() for e in direct.events]


def test_hostile_values_stay_inside_their_field(redactor: Redactor) -> None:
    values = fixture("messagelogging-200.json")
    values["request.header.User-Agent"] = 'x", "client.ip": "10.6.6.6\n\u0000}'
    values["request.path"] = '/a"b\\c'
    text = render(values)
    assert "\n" not in text
    event = ApigeeParser(redactor).parse_payload(text.encode()).events[0]
    assert event.client_ip == "203.0.113.24"
    assert event.user_agent == values["request.header.User-Agent"]
    assert event.path == '/a"b\\c'


def test_formatmessage_lines_carry_the_fixtures() -> None:
    lines = (FIXTURES / "formatmessage-true.log").read_bytes().split(b"\n")
    assert lines[-1] == b""
    messages = [parse_line(line) for line in lines[:-1]]
    assert [m.payload for m in messages if m] == [
        orjson.dumps(fixture("messagelogging-200.json")),
        orjson.dumps(fixture("messagelogging-401-invalid-key.json")),
    ]
    assert [(m.app, m.severity) for m in messages if m] == [("Apigee", 6), ("Apigee", 3)]
