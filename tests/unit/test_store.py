"""StateStore and SubjectBudget: one bound per worker across its partitions, and the changes a
checkpoint writer takes."""

from __future__ import annotations

from detectors import Fusion, default_detectors
from pipeline.worker.processor import Processor
from pipeline.worker.store import StateStore, SubjectBudget
from tests.unit.conftest import T0_MS, make_event


def test_a_worker_with_four_partitions_holds_at_most_its_bound() -> None:
    processor = Processor(detectors=default_detectors(), fusion=Fusion())
    budget = SubjectBudget(100)
    stores = [StateStore(budget=budget) for _ in range(4)]
    for i in range(1_000):
        event = make_event(ts_ms=T0_MS + i, client_ip=f"10.{i // 250}.{i % 250}.1")
        processor.process([event], stores[i % 4])
    assert budget.held == sum(len(s) for s in stores) == 100
    # Per partition it would have been 4 x 100; the survivors are the worker's most recent.
    survivors = {subject for store in stores for subject in store}
    assert survivors == {f"ip:10.{i // 250}.{i % 250}.1" for i in range(900, 1_000)}


def test_the_oldest_subject_of_the_worker_goes_whichever_store_holds_it() -> None:
    budget = SubjectBudget(2)
    quiet, busy = StateStore(budget=budget), StateStore(budget=budget)
    quiet.get("ip:old").sustained_ts = 1.0
    busy.get("ip:a").sustained_ts = 5.0
    busy.get("ip:b").sustained_ts = 6.0
    assert list(quiet) == [] and list(busy) == ["ip:a", "ip:b"]
    # A new subject in an empty store does not evict itself.
    quiet.get("ip:new").sustained_ts = 7.0
    assert list(quiet) == ["ip:new"] and list(busy) == ["ip:b"]


def test_closing_a_store_returns_its_share_of_the_budget() -> None:
    budget = SubjectBudget(10)
    a, b = StateStore(budget=budget), StateStore(budget=budget)
    for i in range(6):
        a.get(f"ip:{i}")
    b.get("ip:x")
    a.close()
    assert budget.held == 1 and budget.stores == [b]
    for i in range(9):
        b.get(f"ip:y{i}")
    assert len(b) == 10


def test_changes_are_what_a_checkpoint_must_write_and_delete() -> None:
    processor = Processor(detectors=default_detectors(), fusion=Fusion())
    store = StateStore(2, track_changes=True)
    processor.process([make_event(client_ip="10.0.0.1"), make_event(client_ip="10.0.0.2")], store)
    assert store.take_changes() == ({"ip:10.0.0.1", "ip:10.0.0.2"}, set())
    processor.process([make_event(client_ip="10.0.0.3")], store)
    # 10.0.0.1 was evicted: its checkpoint entry must go, and it is no longer a change.
    assert store.take_changes() == ({"ip:10.0.0.3"}, {"ip:10.0.0.1"})
    assert store.take_changes() == (set(), set())


def test_an_untracked_store_has_no_changes() -> None:
    store = StateStore(5)
    store.get("ip:1")
    assert store.changed is None and store.take_changes() == (set(), set())


def test_put_takes_a_state_in_as_the_most_recent_without_marking_it_changed() -> None:
    store = StateStore(2, track_changes=True)
    store.get("ip:a")
    store.take_changes()
    loaded = store.get("ip:b")
    store.take_changes()
    store.put("ip:c", loaded)
    assert list(store) == ["ip:b", "ip:c"]
    assert store.take_changes() == (set(), {"ip:a"})
