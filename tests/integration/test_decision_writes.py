"""Decision writes in a real Redis apply once per envelope: processed twice (redelivered after a
crash) or sent twice by redis-py itself (retrying after a timeout), the stream gets one entry per
change and the counters count once."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeout

from pipeline.config import Settings
from pipeline.decisions import Decision, RedisDecisions

SOURCE = "gatewatch-worker/gatewatch.events/3"


def decision(subject: str = "ip:198.51.100.7", action: str = "block") -> Decision:
    return Decision(
        subject=subject,
        score=0.9,
        action=action,
        reasons=["bruteforce: 13 failed logins of 13 attempts"],
        detector="bruteforce",
        model_version="t",
        mode="enforce",
        updated_at=1_800_000_000_000,
        expires_at=1_800_000_600_000,
    )


async def test_an_envelope_written_twice_counts_once(settings: Settings, redis: Redis) -> None:
    decisions = RedisDecisions(redis, settings.redis_prefix)
    assert await decisions.write([decision()], events_processed=40, source=(SOURCE, 17))
    # The same envelope again (a replay after a crash), then an older one: nothing changes.
    assert not await decisions.write([decision()], events_processed=40, source=(SOURCE, 17))
    assert not await decisions.write([], events_processed=5, source=(SOURCE, 16))
    assert await redis.xlen(decisions.stream) == 1
    assert await decisions.stats() == {"events_processed": 40, "decisions_written": 1}
    # The next envelope, and another partition's envelope at a lower offset, do count.
    assert await decisions.write([], events_processed=2, source=(SOURCE, 18))
    assert await decisions.write([decision("ip:203.0.113.1")], events_processed=3,
                                 source=("gatewatch-worker/gatewatch.events/0", 2))  # fmt: skip
    assert await decisions.stats() == {"events_processed": 45, "decisions_written": 2}
    stored = await decisions.get("ip:198.51.100.7")
    assert stored is not None and stored.action == "block"
    assert 0 < await redis.pttl(decisions.key("ip:198.51.100.7"))


async def test_a_write_redis_py_resends_after_a_timeout_applies_once(
    settings: Settings, redis: Redis
) -> None:
    # A client that gives up on an answer after 0.2 s and sends the command again, as redis-py's
    # retry does; the server is paused meanwhile, so the first send still runs when it resumes.
    url = settings.redis_url.get_secret_value()
    flaky = Redis.from_url(
        url, socket_timeout=0.2, retry=Retry(NoBackoff(), 3), retry_on_error=[RedisTimeout]
    )
    try:
        await flaky.ping()  # connected before the server stalls: the write itself times out
        naive = f"{settings.redis_prefix}naive"
        await _paused(redis, flaky.hincrby(naive, "events_processed", 10))
        # The setup does make redis-py send twice: a plain increment counts twice or more.
        assert int(await redis.hget(naive, "events_processed")) >= 20
        decisions = RedisDecisions(flaky, settings.redis_prefix)
        await decisions.write([], events_processed=1, source=(SOURCE, 1))  # loads the script
        await _paused(redis, decisions.write([decision()], events_processed=10,
                                             source=(SOURCE, 2)))  # fmt: skip
        assert await redis.xlen(decisions.stream) == 1
        assert await RedisDecisions(redis, settings.redis_prefix).stats() == {
            "events_processed": 11,
            "decisions_written": 1,
        }
    finally:
        await flaky.aclose()


# Keeps the server busy for ARGV[1] ms: it reads no other client meanwhile (as a slow command,
# a fork or a swap would), so a command sent now runs only afterwards.
_BUSY = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000 + (now[2] - start[2]) / 1000 > tonumber(ARGV[1]) then break end
end
"""


async def _paused(redis: Redis, write: object) -> None:
    """Run `write` while the server is busy for 0.5 s."""
    busy = asyncio.create_task(redis.eval(_BUSY, 0, 500))
    # The busy script must reach the server first; the naive control shows it did.
    await asyncio.sleep(0.05)
    try:
        await write  # type: ignore[misc]
    finally:
        await busy
