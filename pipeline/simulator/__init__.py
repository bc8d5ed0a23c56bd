"""A deterministic, labelled simulator of API gateway traffic, to judge gatewatch's detectors on.

>>> from pipeline.simulator import Simulation
>>> sim = Simulation(seed=7, minutes=1, consumers=40)
>>> first = next(sim.kong_entries())
>>> sorted(first)[:4]
['client_ip', 'latencies', 'request', 'response']

See `engine.Simulation` (the API), `output.simulate` (files), `cli.simulate_command` (the
`gatewatch simulate` command), `labels` (what the evaluator reads), `apigee.syslog_line`.
The names below are imported on first use: `gatewatch` imports the command's module at startup,
and that must not build the simulator.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.simulator.engine import Simulation
    from pipeline.simulator.labels import SCENARIOS
    from pipeline.simulator.output import Summary, simulate

__all__ = ["SCENARIOS", "Simulation", "Summary", "simulate"]

_WHERE = {
    "SCENARIOS": "pipeline.simulator.labels",
    "Simulation": "pipeline.simulator.engine",
    "Summary": "pipeline.simulator.output",
    "simulate": "pipeline.simulator.output",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
