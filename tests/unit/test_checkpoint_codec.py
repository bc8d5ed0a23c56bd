"""Checkpointed state comes back exactly: a processor restored from a checkpoint taken mid-stream
decides the rest of the stream exactly as one that never stopped, and ends in the same state, for
every detector's per-subject memory and every learned model. What is not a valid checkpoint is
refused with `StateFormatError`, never half-loaded."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from detectors import BehaviourAnomaly, Detector, Fusion, default_detectors
from detectors.base import SubjectContext
from detectors.codec import StateFormatError, StateVersionError
from detectors.state import FEATURE_NAMES, SubjectState
from detectors.state_codec import StateCodec, pack, unpack
from pipeline.decisions import Decision
from pipeline.evaluation.replay import ReplayResult, parse_lines
from pipeline.events import GatewayEvent
from pipeline.ingest.redaction import Redactor
from pipeline.simulator import Simulation
from pipeline.worker.processor import Processor
from pipeline.worker.store import StateStore

BATCH = 256
MJ12 = "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)"


@pytest.fixture(scope="module")
def traffic() -> tuple[list[GatewayEvent], dict[str, Any]]:
    """A minute of simulated Kong traffic with attacks (and its OpenAPI document), plus a
    declared crawler going too fast, which the simulation may not have."""
    sim = Simulation(seed=3, minutes=1)
    events = list(
        parse_lines(
            (orjson.dumps(e) for e in sim.kong_entries()), "kong", Redactor(b"t"), ReplayResult()
        )
    )
    t0 = events[0].ts_ms
    crawler = [
        GatewayEvent(
            ts_ms=t0 + i * 250,
            gateway="kong",
            client_ip="203.0.113.80",
            method="GET",
            path=f"/v1/products/{i}",
            route="/v1/products/{id}",
            status=200,
            user_agent=MJ12,
        )
        for i in range(200)
    ]
    merged = sorted(events + crawler, key=lambda e: e.ts_ms)
    return merged, sim.openapi()


def detectors(spec: dict[str, Any]) -> list[Detector]:
    # The anomaly model warms up sooner than by default, so a minute of traffic builds its trees.
    return [
        BehaviourAnomaly(warmup=200, min_windows=20) if d.name == "anomaly" else d
        for d in default_detectors(specs=[spec])
    ]


def processor(spec: dict[str, Any]) -> Processor:
    return Processor(detectors(spec), Fusion(), mode="enforce", event_clock=True)


def run(p: Processor, store: StateStore, events: Sequence[GatewayEvent]) -> list[Decision]:
    out: list[Decision] = []
    for i in range(0, len(events), BATCH):
        out.extend(p.process(events[i : i + BATCH], store))
    return out


def snapshot(codec: StateCodec, store: StateStore) -> dict[str, bytes]:
    return {subject: codec.encode(state) for subject, state in store.items()}


def restore(codec: StateCodec, saved: dict[str, bytes]) -> StateStore:
    store = StateStore(500_000)
    for subject, raw in saved.items():
        state, notes = codec.decode(raw)
        assert notes == []
        store.put(subject, state)
    return store


@pytest.fixture(scope="module")
def runs(traffic: tuple[list[GatewayEvent], dict[str, Any]]) -> dict[str, Any]:
    events, spec = traffic
    cut = len(events) // 2 + 37  # mid-stream, mid-window, mid-batch of the original
    # A: never stops.
    a = processor(spec)
    a_store = StateStore(500_000)
    a_first = run(a, a_store, events[:cut])
    a_rest = run(a, a_store, events[cut:])
    # B: runs to the cut and is checkpointed; C: a new process restored from it runs the rest.
    b = processor(spec)
    b_store = StateStore(500_000)
    b_first = run(b, b_store, events[:cut])
    b_codec = StateCodec(b.detectors)
    saved_states = snapshot(b_codec, b_store)
    # Through bytes, as Redis would hand them back.
    saved_models = {name: bytes(raw) for name, raw in b_codec.export_models().items()}
    c = processor(spec)
    c_codec = StateCodec(c.detectors)
    assert c_codec.load_models(saved_models) == []
    c_store = restore(c_codec, saved_states)
    c_rest = run(c, c_store, events[cut:])
    return {
        "events": events[cut:],
        "spec": spec,
        "b": b,
        "saved_states": saved_states,
        "saved_models": saved_models,
        "first": (a_first, b_first),
        "rest": (a_rest, c_rest),
        "final_states": (snapshot(StateCodec(a.detectors), a_store), snapshot(c_codec, c_store)),
        "final_models": (StateCodec(a.detectors).export_models(), c_codec.export_models()),
    }


def test_the_checkpoint_holds_every_kind_of_learned_state(runs: dict[str, Any]) -> None:
    # Otherwise the round trip below would prove nothing about the state left out.
    codec = StateCodec(runs["b"].detectors)
    memos: set[str] = set()
    baselines = evidence = 0
    for raw in runs["saved_states"].values():
        state, _ = codec.decode(raw)
        memos |= set(state.memo or ())
        baselines += state.baseline is not None
        evidence += state.evidence is not None
    assert memos == set(codec.memos), set(codec.memos) - memos
    assert baselines > 100 and evidence > 10
    learned = {d.name: d for d in runs["b"].detectors}
    assert learned["anomaly"].learned > 500 and learned["anomaly"].model.trees
    assert len(learned["injection"].shapes) > 10
    assert learned["probing"]._routes and learned["probing"]._recent
    assert learned["distributed_stuffing"]._traits
    assert learned["spec_drift"].calls and len(learned["spec_drift"].log) > 0
    assert learned["bot_behaviour"]._sources
    assert set(runs["saved_models"]) == {name for name, d in learned.items()
                                         if d.declares.model_version}  # fmt: skip


def test_a_restored_processor_decides_the_rest_as_one_that_never_stopped(
    runs: dict[str, Any],
) -> None:
    a_first, b_first = runs["first"]
    assert a_first == b_first
    a_rest, c_rest = runs["rest"]
    assert len(a_rest) > 20, "the rest of the stream must decide something"
    assert c_rest == a_rest


def test_a_restored_processor_ends_in_the_same_state(runs: dict[str, Any]) -> None:
    a_states, c_states = runs["final_states"]
    assert list(c_states) == list(a_states)  # the same subjects, in the same eviction order
    different = [s for s in a_states if a_states[s] != c_states[s]]
    assert different == []
    a_models, c_models = runs["final_models"]
    assert c_models == a_models


def test_restoring_without_the_models_would_show(runs: dict[str, Any]) -> None:
    # The property above can fail: subject states alone, with fresh models, end elsewhere.
    c = processor(runs["spec"])
    codec = StateCodec(c.detectors)
    store = restore(codec, runs["saved_states"])
    run(c, store, runs["events"])
    assert codec.export_models() != runs["final_models"][0]


def test_half_space_trees_score_alike_after_a_round_trip() -> None:
    rng = random.Random(5)
    detector = BehaviourAnomaly()
    for _ in range(1_234):
        detector.model.learn_one({f: rng.random() ** 2 for f in FEATURE_NAMES})
    detector.learned = 1_234
    copy = BehaviourAnomaly()
    copy.load_model(unpack(pack(detector.export_model())))
    points = [{f: rng.random() for f in FEATURE_NAMES} for _ in range(300)]
    assert [copy.model.score_one(x) for x in points] == [
        detector.model.score_one(x) for x in points
    ]
    assert any(detector.model.score_one(x) > 0 for x in points)
    # ... and keep learning alike, across the next window pivot.
    for x in points:
        detector.model.learn_one(x)
        copy.model.learn_one(x)
    assert copy.export_model() == detector.export_model()


def test_an_unbuilt_anomaly_model_round_trips() -> None:
    detector = BehaviourAnomaly()
    copy = BehaviourAnomaly()
    copy.load_model(unpack(pack(detector.export_model())))
    assert copy.model.trees == [] and copy.learned == 0


def test_anomaly_trees_of_another_seed_are_refused() -> None:
    trained = BehaviourAnomaly(seed=1)
    trained.model.learn_one(dict.fromkeys(FEATURE_NAMES, 0.5))
    data = trained.export_model()
    other = BehaviourAnomaly(seed=2)
    with pytest.raises(StateFormatError, match="other parameters"):
        other.load_model(data)
    data[0][3] = 2  # claims the seed, but its splits are seed 1's
    with pytest.raises(StateFormatError, match="split elsewhere"):
        other.load_model(data)
    assert other.model.trees == []  # left as it was


def _corrupt(value: Any, rng: random.Random) -> Any:
    """`value` (plain data) with one element somewhere replaced by a value of another kind."""
    junk = [None, 0, 0.0, -1, 2**63, -1.5, 1e15, -1e15, float("nan"), float("inf"), "x" * 3,
            b"\x00", [], {}, True]
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], _corrupt(value[i], rng), *value[i + 1 :]]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: _corrupt(value[key], rng)}
    return rng.choice(junk)


def test_a_corrupted_state_is_refused_or_safe_to_run(runs: dict[str, Any]) -> None:
    # Whatever a checkpoint holds, decoding either refuses it or gives a state the detectors can
    # run on: a bad checkpoint must never turn into crashes on the hot path.
    rng = random.Random(11)
    codec = StateCodec(runs["b"].detectors)
    p = runs["b"]
    saved = list(runs["saved_states"].items())
    refused = kept = 0
    for _ in range(3_000):
        subject, raw = rng.choice(saved)
        data = _corrupt(unpack(raw), rng)
        try:
            state, _ = codec.decode(pack(data))
        except StateFormatError:
            refused += 1
            continue
        kept += 1
        store = StateStore(10)
        store.put(subject, state)
        kind = subject.partition(":")[0]
        ip = subject.partition(":")[2].split("/")[0] if kind == "ip" else "192.0.2.1"
        later = runs["events"][0].ts_ms + 1000
        probe = GatewayEvent(
            ts_ms=later,
            gateway="kong",
            client_ip=ip,
            method="POST",
            path="/v1/auth/login",
            route="/v1/auth/login",
            status=401,
            consumer=subject[9:] if kind == "consumer" else None,
        )
        p.process([probe, probe.model_copy(update={"ts_ms": later + 1500})], store)
    assert refused > 1_000 and kept > 100


def test_truncated_or_foreign_bytes_are_refused() -> None:
    codec = StateCodec(default_detectors())
    good = codec.encode(SubjectState())
    for raw in (b"", good[:-3], b"\xc1", pack({"a": 1}), pack([1, 2, 3]), good + b"\x00"):
        with pytest.raises(StateFormatError):
            codec.decode(raw)


def test_a_memo_of_another_schema_or_detector_is_left_out_alone() -> None:
    codec = StateCodec(default_detectors())
    rate = next(d for d in default_detectors() if d.name == "rate")
    state = SubjectState()
    state.auth_failures = state.auth_attempts = 7.0
    state.memo = {"bruteforce": 5}
    e = GatewayEvent(ts_ms=1_000, gateway="kong", client_ip="10.0.0.1", consumer="c",
                     method="GET", path="/a", route="/a", status=200)  # fmt: skip
    rate.update(state, e, SubjectContext("consumer:c", "consumer", 1.0))
    data = unpack(codec.encode(state))
    data[-1]["bruteforce"][0] = 99  # a schema this code does not know
    data[-1]["retired_detector"] = [1, 2, 3]
    restored, notes = codec.decode(pack(data))
    assert restored.auth_failures == 7.0 and set(restored.memo or ()) == {"rate"}
    assert sorted(reason for reason, _ in notes) == ["foreign", "version"]


def test_models_of_another_version_or_detector_are_skipped_and_the_rest_loaded() -> None:
    source = default_detectors()
    injection = next(d for d in source if d.name == "injection")
    injection.shapes.learn("/v1/orders", "id", "42")
    exported = StateCodec(source).export_models()
    target = default_detectors()
    codec = StateCodec(target)
    exported["probing"] = pack([99, []])
    exported["retired"] = pack([1, []])
    exported["distributed_stuffing"] = b"\xc1\xc1"
    skipped = codec.load_models(exported)
    assert sorted((name, reason) for name, reason, _ in skipped) == [
        ("distributed_stuffing", "corrupt"),
        ("probing", "version"),
        ("retired", "foreign"),
    ]
    loaded = next(d for d in target if d.name == "injection")
    assert loaded.shapes.export() == injection.shapes.export()
    with pytest.raises(StateVersionError):
        codec.load_model("probing", exported["probing"])



def test_a_negative_spread_of_gaps_is_refused() -> None:
    # A bot's gap statistics with a negative sum of squares would reach a square root.
    codec = StateCodec(default_detectors())
    state = SubjectState()
    mimicry = next(d for d in default_detectors() if d.name == "bot_behaviour")
    chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36"
    for i in range(6):
        e = GatewayEvent(ts_ms=1_000_000 + i * 1_000 + i % 3 * 40, gateway="kong",
                         client_ip="203.0.113.2", method="GET", path=f"/p/{i}", route="/p/{id}",
                         status=200, user_agent=chrome)  # fmt: skip
        mimicry.update(state, e, SubjectContext("ip:203.0.113.2", "ip", e.ts_ms / 1000))
        state.observe(e, auth_route=False, baseline_after=5, fading_factor=0.05)
    data = unpack(codec.encode(state))
    fields = data[-1]["bot_behaviour"]
    assert fields[12] > 0  # lg_m2, after the version and 11 fields before it
    fields[12] = -0.5
    with pytest.raises(StateFormatError, match="lg_m2"):
        codec.decode(pack(data))
