"""Detector families. Each reads a subject's state and returns `Signal`s with reasons."""

from detectors.anomaly import BehaviourAnomaly
from detectors.bots import BrowserMimicry, CrawlerPace, ScannerAgent
from detectors.base import Detector, EventDetector, Signal, StatefulDetector, SubjectContext
from detectors.bruteforce import BruteForce, DistributedStuffing
from detectors.fusion import Fusion, Verdict
from detectors.injection import InjectionDetector
from detectors.key_sharing import KeySharing
from detectors.policy import Policy, RoutePolicy
from detectors.probing import SensitiveProbing
from detectors.rate import RateAnomaly
from detectors.routes import AuthRoutes
from detectors.scraping import ObjectWalk
from detectors.useragents import UserAgentClassifier

__all__ = [
    "AuthRoutes",
    "BehaviourAnomaly",
    "BrowserMimicry",
    "BruteForce",
    "CrawlerPace",
    "Detector",
    "DistributedStuffing",
    "EventDetector",
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
    "StatefulDetector",
    "SubjectContext",
    "Verdict",
    "default_detectors",
]


def default_detectors(auth_routes: AuthRoutes | None = None) -> list[Detector]:
    """Every detector family, sharing the processor's idea of which routes are logins."""
    auth_routes = auth_routes if auth_routes is not None else AuthRoutes()
    agents = UserAgentClassifier()  # one cache of user-agent verdicts for both bot detectors
    return [
        BruteForce(),
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
