"""A deterministic, labelled simulator of API gateway traffic, to judge gatewatch's detectors on.

>>> from pipeline.simulator import Simulation
>>> sim = Simulation(seed=7, minutes=1, consumers=40)
>>> first = next(sim.kong_entries())
>>> sorted(first)[:4]
['client_ip', 'latencies', 'request', 'response']

See `engine.Simulation` (the API), `output.simulate` (files), `cli.simulate_command` (the
`gatewatch simulate` command), `labels` (what the evaluator reads).
"""

from pipeline.simulator.engine import Simulation
from pipeline.simulator.labels import SCENARIOS
from pipeline.simulator.output import Summary, simulate

__all__ = ["SCENARIOS", "Simulation", "Summary", "simulate"]
