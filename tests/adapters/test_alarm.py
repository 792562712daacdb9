"""A stream's alarm: one timer across its waits, never later than a wait's own timeout."""

from __future__ import annotations

import asyncio

from gateway.adapters.kafka.shared import Alarm, _Signal


def test_a_wait_ends_by_its_timeout_whatever_the_alarm_was_set_to_before() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        signal, alarm, seen = _Signal(lambda: None), Alarm(), []

        def timers() -> int:  # set and not cancelled
            return sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]

        async def wait(timeout: float) -> float:
            started = loop.time()
            await signal.wait(signal.waiter(), timeout, alarm)
            return loop.time() - started

        # Woken by records before its timeout (15 s): the timer stays for the next wait.
        waiting = asyncio.create_task(wait(15.0))
        await asyncio.sleep(0)
        signal.fire()
        await waiting
        seen.append(f"timers {timers()}")
        # A later timeout keeps that timer (no new one); woken again by records.
        waiting = asyncio.create_task(wait(20.0))
        await asyncio.sleep(0.03)  # past the signal's coalescing
        signal.fire()
        await waiting
        seen.append(f"timers {timers()}")
        # A sooner timeout moves the alarm: the wait ends by it, with no wake-up.
        took = await wait(0.05)
        seen.append("by its timeout" if 0.04 <= took < 0.5 else f"after {took}")
        seen.append(f"timers {timers()}")  # rung: none until the next wait
        waiting = asyncio.create_task(wait(15.0))
        await asyncio.sleep(0.03)
        signal.fire()
        await waiting
        seen.append(f"timers {timers()}")
        alarm.cancel()  # the stream closed (SharedSource.close): no timer outlives it
        seen.append(f"timers {timers()}")
        return seen

    assert asyncio.run(scenario()) == [
        "timers 1", "timers 1", "by its timeout", "timers 0", "timers 1", "timers 0",
    ]  # fmt: skip
