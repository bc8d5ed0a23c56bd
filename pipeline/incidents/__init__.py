"""Incidents: alerts that belong together (one subject, campaign trait, range or route, within a
quiet window), with a deterministic summary a person can act on. See `builder.py`."""

from pipeline.incidents.builder import IncidentBuilder
from pipeline.incidents.model import Incident
from pipeline.incidents.store import IncidentStore, MemoryIncidentStore, RedisIncidentStore
from pipeline.incidents.summary import Summary, status_of, summarize

__all__ = [
    "Incident",
    "IncidentBuilder",
    "IncidentStore",
    "MemoryIncidentStore",
    "RedisIncidentStore",
    "Summary",
    "status_of",
    "summarize",
]
