"""Watching where contracts and keys come from: changes take effect without a restart.

A change is picked up within one interval. A reload that fails keeps the previous registry
(and says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import anyio
import anyio.to_thread

log = logging.getLogger(__name__)


async def watch(
    fingerprint: Callable[[], Hashable],
    interval: float,
    reload: Callable[[], None],
    tick: Callable[[], None],
) -> None:
    """Call ``reload`` (in a worker thread) whenever ``fingerprint`` changes, and ``tick``
    every interval otherwise (for what changes with time alone)."""
    last = await anyio.to_thread.run_sync(fingerprint)
    while True:
        await anyio.sleep(interval)
        current = await anyio.to_thread.run_sync(fingerprint)
        if current == last:
            await anyio.to_thread.run_sync(tick)
            continue
        last = current
        try:
            await anyio.to_thread.run_sync(reload)
        except Exception as exc:  # keep serving with what we had
            log.error("reload failed, keeping the previous contracts: %s", exc)


async def follow(read: Callable[[], None], interval: float) -> None:
    """Call ``read`` (in a worker thread) every ``interval`` seconds: the ledger's news
    reaches the archive, and a change there reloads the contracts at the next watch."""
    while True:
        await anyio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(read)
        except Exception:  # a defect: say so, keep following
            log.exception("following the ledger failed; trying again")
