"""Sink name -> the module that builds it. Each module exposes `build(settings) -> Sink`; modules
are imported only when their sink is asked for, so one sink's client library never loads for
another."""

from __future__ import annotations

import importlib
from typing import Protocol

from pydantic import SecretStr

from pipeline.config import Settings
from sinks.base import Sink, SinkConfigError

__all__ = ["SINKS", "build_sink", "require"]

# One line per sink.
SINKS: dict[str, str] = {
    "apigee": "sinks.apigee",
    "cef": "sinks.cef",
    "elastic": "sinks.elastic",
    "incidents": "sinks.incidents",
    "kafka": "sinks.kafka",
    "ocsf": "sinks.ocsf",
    "splunk": "sinks.splunk",
    "webhook": "sinks.webhook",
}


class _Module(Protocol):
    def build(self, settings: Settings) -> Sink: ...


def build_sink(name: str, settings: Settings) -> Sink:
    """The sink called `name`, configured from `settings`; `SinkConfigError` says what is wrong."""
    module_name = SINKS.get(name)
    if module_name is None:
        raise SinkConfigError(f"unknown sink {name!r}; one of: {', '.join(sorted(SINKS))}")
    module: _Module = importlib.import_module(module_name)  # type: ignore[assignment]
    return module.build(settings)


def require(settings: Settings, field: str) -> str:
    """The value of a required setting, or a `SinkConfigError` naming its variable."""
    value = getattr(settings, field)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value:
        info = Settings.model_fields[field].description
        why = f" ({info})" if info else ""
        raise SinkConfigError(f"set GATEWATCH_{field.upper()}{why}")
    return str(value)
