"""Where subject states live in a worker: one `StateStore` per partition it owns, all of them under
one `SubjectBudget`, so a worker holding N partitions keeps at most `max_subjects` states in all
(not N times that).

A store also remembers what a checkpoint needs (`pipeline/worker/checkpoints.py`): the subjects
changed and dropped since the last one, and `offset`, the Kafka offset of the last envelope its
states hold, so a new owner skips the envelopes that are already counted.

The processor fetches states from `_states` inline (it runs for every subject of every event);
whatever it does there, `get` does too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from detectors.state import SubjectState

__all__ = ["StateStore", "SubjectBudget"]


class SubjectBudget:
    """How many subject states a worker holds across its stores; past `max_subjects` the least
    recently seen goes, whichever partition it belongs to.

    Each store keeps its states in the order they were last seen, so the candidates are the
    stores' first states; between stores they are compared by the time of their latest event
    (`SubjectState.sustained_ts`). A worker owns a handful of partitions: the comparison costs a
    few steps, and only when the budget is full.

    >>> budget = SubjectBudget(3)
    >>> a, b = StateStore(budget=budget), StateStore(budget=budget)
    >>> for store, subject, t in ((a, "ip:1", 1.0), (b, "ip:2", 2.0), (a, "ip:3", 3.0)):
    ...     store.get(subject).sustained_ts = t
    >>> b.get("ip:4").sustained_ts = 4.0  # the fourth: the worker's oldest goes
    >>> sorted(a), sorted(b), budget.held
    (['ip:3'], ['ip:2', 'ip:4'], 3)
    """

    def __init__(self, max_subjects: int) -> None:
        if max_subjects < 1:
            raise ValueError("max_subjects must be at least 1")
        self.max_subjects = max_subjects
        self.held = 0
        self.stores: list[StateStore] = []

    def evict(self, inserting: StateStore, subject: str) -> None:
        """Drop the worker's least recently seen state, never `subject` (just inserted into
        `inserting`)."""
        stores = self.stores
        if len(stores) == 1:
            stores[0].drop_oldest()
            return
        oldest: StateStore | None = None
        oldest_t = float("inf")
        for store in stores:
            states = store._states
            if not states:
                continue
            first, state = next(iter(states.items()))
            if store is inserting and first == subject:
                continue  # it holds nothing older than what it is taking in
            if state.sustained_ts < oldest_t:
                oldest, oldest_t = store, state.sustained_ts
        if oldest is not None:
            oldest.drop_oldest()


class StateStore:
    """Subject states of one partition, least recently seen first, under a budget shared with
    the worker's other stores (its own one of `max_subjects` when none is given).

    `track_changes=True` keeps the sets a checkpoint writer takes with `take_changes`.
    """

    def __init__(
        self,
        max_subjects: int | None = None,
        *,
        budget: SubjectBudget | None = None,
        track_changes: bool = False,
    ) -> None:
        if budget is None:
            if max_subjects is None:
                raise ValueError("give max_subjects or a budget")
            budget = SubjectBudget(max_subjects)
        self.budget = budget
        budget.stores.append(self)
        self._states: OrderedDict[str, SubjectState] = OrderedDict()
        # Subjects whose state changed / that were evicted since the last `take_changes`.
        self.changed: set[str] | None = set() if track_changes else None
        self.dropped: set[str] | None = set() if track_changes else None
        self.offset = -1  # Kafka offset of the last envelope these states hold (-1: none)
        self.closed = False

    @property
    def max_subjects(self) -> int:
        return self.budget.max_subjects

    def get(self, subject: str) -> SubjectState:
        state = self._states.get(subject)
        if state is None:
            state = self._states[subject] = SubjectState()
            self._count_new(subject)
        else:
            self._states.move_to_end(subject)
        if self.changed is not None:
            self.changed.add(subject)
        return state

    def put(self, subject: str, state: SubjectState) -> None:
        """Take in a state (from a checkpoint) as the most recently seen; not a change."""
        if self._states.get(subject) is not None:
            self._states[subject] = state
            self._states.move_to_end(subject)
            return
        self._states[subject] = state
        self._count_new(subject)

    def _count_new(self, subject: str) -> None:
        budget = self.budget
        budget.held += 1
        if budget.held > budget.max_subjects:
            budget.evict(self, subject)

    def drop_oldest(self) -> None:
        subject, _ = self._states.popitem(last=False)
        self.budget.held -= 1
        if self.dropped is not None:
            self.dropped.add(subject)
        if self.changed is not None:
            self.changed.discard(subject)

    def take_changes(self) -> tuple[set[str], set[str]]:
        """The subjects changed and dropped since the last call (both empty when untracked)."""
        changed, dropped = self.changed, self.dropped
        if changed is None or dropped is None:
            return set(), set()
        self.changed, self.dropped = set(), set()
        return changed, dropped

    def close(self) -> None:
        """Give the states up (the partition went to another worker): they leave the budget."""
        if not self.closed:
            self.closed = True
            self.budget.held -= len(self._states)
            self.budget.stores.remove(self)
            self._states.clear()

    def peek(self, subject: str) -> SubjectState | None:
        return self._states.get(subject)

    def items(self) -> Iterator[tuple[str, SubjectState]]:
        return iter(self._states.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)
