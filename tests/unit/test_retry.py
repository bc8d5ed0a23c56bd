"""until_done: retries only what it is told to, backs off, and reports each retry."""

from __future__ import annotations

import pytest

from pipeline.retry import until_done


async def test_retries_until_the_operation_succeeds() -> None:
    calls: list[int] = []
    retries: list[BaseException] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")

    await until_done(
        flaky,
        retry_on=ConnectionError,
        event="t.retry",
        max_backoff_s=0.001,
        on_retry=retries.append,
    )
    assert len(calls) == 3 and len(retries) == 2


async def test_other_errors_propagate_at_once() -> None:
    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await until_done(broken, retry_on=ConnectionError, event="t.retry")
    assert calls == [1]
