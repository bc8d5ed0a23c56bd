"""Detector families. Each reads a subject's state and returns `Signal`s with reasons."""

from detectors.base import Detector, Signal, SubjectContext
from detectors.bruteforce import BruteForce
from detectors.fusion import Fusion, Verdict
from detectors.rate import RateAnomaly

__all__ = [
    "BruteForce",
    "Detector",
    "Fusion",
    "RateAnomaly",
    "Signal",
    "SubjectContext",
    "Verdict",
    "default_detectors",
]


def default_detectors() -> list[Detector]:
    return [BruteForce(), RateAnomaly()]
