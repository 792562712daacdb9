"""The send watch: one task for the process drops the streams whose client takes no data."""

from __future__ import annotations

from typing import Any, cast

from gateway.adapters.http.streaming import SendWatch, StreamResponse


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Response:
    def __init__(self, send_timeout: float) -> None:
        self.send_timeout = send_timeout
        self.dropped = 0

    def timed_out(self) -> None:
        self.dropped += 1


def watched(send_timeout: float) -> Any:
    return cast(StreamResponse, Response(send_timeout))


def test_only_a_write_waiting_past_its_timeout_is_dropped_and_only_once() -> None:
    clock = Clock()
    watch = SendWatch(clock)
    frozen, slow, done = watched(30), watched(30), watched(30)
    watch.started(frozen)
    clock.now += 10
    watch.started(slow)
    watch.started(done)
    watch.done(done)
    clock.now += 20  # frozen: 30 s into its write; slow: 20 s
    watch.check()
    assert (frozen.dropped, slow.dropped, done.dropped) == (1, 0, 0)
    clock.now += 60
    watch.check()
    assert (frozen.dropped, slow.dropped, done.dropped) == (1, 1, 0)


def test_a_write_that_completes_in_time_restarts_the_clock() -> None:
    clock = Clock()
    watch = SendWatch(clock)
    busy = watched(5)
    for _ in range(10):  # a stream that writes all the time, each write quick
        watch.started(busy)
        clock.now += 4
        watch.done(busy)
        watch.check()
    assert busy.dropped == 0
