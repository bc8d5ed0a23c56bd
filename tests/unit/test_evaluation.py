"""Replay and scoring: the numbers `gatewatch evaluate` reports must mean what they say."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from detectors import AuthRoutes
from pipeline.config import Settings
from pipeline.decisions import Decision
from pipeline.evaluation.replay import ReplayResult, parse_lines, replay
from pipeline.evaluation.score import Scorer
from pipeline.ingest.redaction import Redactor
from pipeline.worker.processor import build_processor
from tests.unit.conftest import T0_MS, kong_entry, make_event

STUFFER = "198.51.100.7"


def labels(*episodes: dict[str, Any]) -> dict[str, Any]:
    return {"seed": 1, "minutes": 60, "start_ms": T0_MS, "end_ms": T0_MS + 3_600_000,
            "episodes": list(episodes)}


def episode(id: str, scenario: str, subjects: list[str], start_s: int, end_s: int) -> dict[str, Any]:
    return {"id": id, "scenario": scenario, "subjects": subjects,
            "start_ms": T0_MS + start_s * 1000, "end_ms": T0_MS + end_s * 1000}


def decision(subject: str, action: str, at_s: float) -> Decision:
    at = T0_MS + int(at_s * 1000)
    return Decision(subject=subject, score=0.9, action=action, reasons=["r"], detector="d",
                    model_version="m", mode="enforce", updated_at=at, expires_at=at + 600_000)


def login(ip: str, at_s: float, status: int = 401, **kw: Any) -> Any:
    return make_event(ts_ms=T0_MS + int(at_s * 1000), client_ip=ip, method="POST",
                      path="/login", route="/login", status=status, **kw)


def test_detection_time_attempts_and_range_matches() -> None:
    scorer = Scorer(
        labels(
            episode("e1", "credential_stuffing", [f"ip:{STUFFER}"], 100, 200),
            episode("e2", "distributed_credential_stuffing", ["ip:203.0.113.5", "ip:203.0.113.9"],
                    300, 400),
        ),
        AuthRoutes(),
    )
    for i in range(12):
        scorer.observe(login(STUFFER, 100 + i))
    scorer.observe(login("203.0.113.5", 300))
    scorer.observe(make_event(ts_ms=T0_MS, client_ip="192.0.2.1"))  # benign, seen all run
    report = scorer.report([
        decision(f"ip:{STUFFER}", "tag", 103),  # a tag is not a detection
        decision(f"ip:{STUFFER}", "block", 107.5),
        decision("ip:203.0.113.0/24", "challenge", 305),  # the range of an attacker address
    ])
    stuffing = report["scenarios"]["credential_stuffing"]
    assert (stuffing["recall"], stuffing["median_time_to_detect_s"]) == (1.0, 7.5)
    assert stuffing["median_attempts_to_detect"] == 8
    assert stuffing["attempts_to_detect"] == [8]
    assert report["scenarios"]["distributed_credential_stuffing"]["detected"] == 1
    assert report["benign"]["false_positive_subjects"] == 0
    assert report["benign"]["subject_hours"] == 1.0
    assert report["missed"] == []


def test_false_positives_and_late_or_early_decisions() -> None:
    scorer = Scorer(labels(episode("e1", "scraping", ["ip:203.0.113.5"], 100, 200)), AuthRoutes())
    scorer.observe(make_event(ts_ms=T0_MS, client_ip="192.0.2.1"))
    scorer.observe(make_event(ts_ms=T0_MS + 1_800_000, client_ip="192.0.2.2"))
    report = scorer.report([
        decision("ip:203.0.113.5", "block", 99),  # before the episode: not its detection
        decision("ip:203.0.113.5", "block", 261),  # past the 60 s grace
        decision("ip:192.0.2.1", "challenge", 50),  # a benign subject
        decision("ip:192.0.2.0/24", "block", 50),  # a range with no attacker in it
        decision("ip:192.0.2.2", "tag", 1900),  # tagged, not a false positive
    ])
    assert report["scenarios"]["scraping"]["recall"] == 0.0
    assert report["missed"][0]["id"] == "e1"
    benign = report["benign"]
    assert benign["false_positive_subjects"] == 2
    assert benign["tagged_subjects"] == 1
    assert benign["subject_hours"] == 1.5
    assert benign["fp_per_1000_subject_hours"] == pytest.approx(1333.333)


def test_subjects_carried_by_attack_requests_are_not_benign() -> None:
    scorer = Scorer(labels(episode("e1", "key_sharing", ["consumer:c9"], 100, 200)), AuthRoutes())
    scorer.observe(make_event(ts_ms=T0_MS + 150_000, consumer="c9", credential="hmac:k",
                              client_ip="203.0.113.77"))
    report = scorer.report([decision("key:hmac:k", "block", 160)])
    assert report["benign"]["false_positive_subjects"] == 0
    assert report["benign"]["subjects"] == 0


def test_a_labelled_consumers_key_is_that_consumer() -> None:
    """Its owner's own requests carry the key too: a block on the key during the episode detects
    it, and is no false positive."""
    scorer = Scorer(labels(episode("e1", "consumer_flood", ["consumer:c9"], 100, 200)), AuthRoutes())
    scorer.observe(make_event(ts_ms=T0_MS + 50_000, consumer="c9", credential="hmac:k",
                              client_ip="203.0.113.77"))
    scorer.observe(make_event(ts_ms=T0_MS + 150_000, consumer="c9", credential="hmac:k",
                              client_ip="203.0.113.77"))
    report = scorer.report([decision("key:hmac:k", "challenge", 152)])
    assert report["benign"]["false_positive_subjects"] == 0
    assert report["scenarios"]["consumer_flood"]["delays_s"] == [52.0]
    # Another consumer's key is not an alias of the labelled one.
    scorer.observe(make_event(ts_ms=T0_MS + 60_000, consumer="c1", credential="hmac:other"))
    report = scorer.report([decision("key:hmac:other", "challenge", 152)])
    assert report["benign"]["false_positive_subjects"] == 1


def test_replay_of_kong_lines_blocks_stuffing_on_the_event_clock() -> None:
    settings = Settings()
    processor = build_processor(settings, event_clock=True)
    lines = []
    for i in range(40):
        entry = kong_entry("3.8")
        entry["client_ip"] = STUFFER
        entry["started_at"] = T0_MS + i * 250
        entry["request"]["method"] = "POST"
        entry["request"]["uri"] = entry["request"]["url"] = "/login"
        entry["request"].pop("querystring", None)
        entry["response"]["status"] = 401
        entry["request"]["id"] = f"r{i}"
        lines.append(orjson.dumps(entry))
    lines.append(b"{not json")
    result = ReplayResult()
    events = parse_lines(lines, "kong", Redactor(b"k"), result)
    traces: list[Any] = []
    replay(events, processor, on_event=traces.append, result=result)
    assert result.events == 40 and sum(result.rejects.values()) == 1
    blocks = [d for d in result.decisions if d.action == "block" and d.subject == f"ip:{STUFFER}"]
    assert blocks and T0_MS < blocks[0].updated_at < T0_MS + 10_000  # stamped in event time
    assert traces[-1].verdict.action == "block"
    assert any(s.detector == "bruteforce" for s in traces[-1].signals)


def test_replay_refuses_a_wall_clock_processor() -> None:
    with pytest.raises(ValueError, match="event clock"):
        replay([], build_processor(Settings()))


def test_a_subject_shared_with_benign_traffic_stays_benign() -> None:
    """Stuffing through the phone app's key: blocking the app's consumer hits every real user."""
    scorer = Scorer(labels(episode("e1", "credential_stuffing", [f"ip:{STUFFER}"], 100, 200)),
                    AuthRoutes())
    scorer.observe(make_event(ts_ms=T0_MS + 50_000, consumer="myshop-ios", client_ip="100.64.0.9"))
    scorer.observe(login(STUFFER, 150, consumer="myshop-ios"))
    report = scorer.report([decision("consumer:myshop-ios", "block", 160)])
    assert report["benign"]["false_positive_subjects"] == 1
