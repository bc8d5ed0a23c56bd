"""Detector families. Each reads a subject's state and returns `Signal`s with reasons."""

from collections.abc import Mapping, Sequence
from typing import Any

from detectors.anomaly import BehaviourAnomaly
from detectors.base import Declaration, Detector, Signal, SubjectContext
from detectors.bots import BrowserMimicry, CrawlerPace, ScannerAgent
from detectors.bruteforce import BruteForce, DistributedStuffing
from detectors.fusion import Fusion, Verdict
from detectors.injection import InjectionDetector
from detectors.key_sharing import KeySharing
from detectors.policy import Policy, RoutePolicy
from detectors.probing import SensitiveProbing
from detectors.rate import RateAnomaly
from detectors.routes import AuthRoutes
from detectors.scraping import ObjectWalk
from detectors.spec_drift import SpecDrift
from detectors.spec_index import SpecIndex
from detectors.useragents import UserAgentClassifier

__all__ = [
    "AuthRoutes",
    "BehaviourAnomaly",
    "BrowserMimicry",
    "BruteForce",
    "CrawlerPace",
    "Declaration",
    "Detector",
    "DistributedStuffing",
    "Fusion",
    "InjectionDetector",
    "KeySharing",
    "ObjectWalk",
    "Policy",
    "RateAnomaly",
    "RoutePolicy",
    "ScannerAgent",
    "SensitiveProbing",
    "Signal",
    "SpecDrift",
    "SubjectContext",
    "Verdict",
    "default_detectors",
]


def default_detectors(
    auth_routes: AuthRoutes | None = None, specs: Sequence[Mapping[str, Any]] = ()
) -> list[Detector]:
    """Every detector family, sharing the processor's idea of which routes are logins; with
    OpenAPI documents (`specs`), API-spec drift too."""
    auth_routes = auth_routes if auth_routes is not None else AuthRoutes()
    agents = UserAgentClassifier()  # one cache of user-agent verdicts for both bot detectors
    drift: list[Detector] = [SpecDrift(SpecIndex(specs))] if specs else []
    return drift + [
        BruteForce(auth_routes=auth_routes),
        DistributedStuffing(auth_routes),
        RateAnomaly(),
        ObjectWalk(agents=agents),
        KeySharing(),
        BehaviourAnomaly(),
        ScannerAgent(classifier=agents),
        BrowserMimicry(classifier=agents),
        CrawlerPace(classifier=agents),
        SensitiveProbing(),
        InjectionDetector(),
    ]
