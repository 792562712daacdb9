"""Watching the contracts and keys directories: changes take effect without a restart.

Polling (file names, sizes, modification times) works the same on every filesystem, including
the network and container volumes operators use to distribute contracts; a change is picked up
within one interval. A reload that fails keeps the previous registry (and says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import anyio.to_thread

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(directories: Iterable[Path]) -> Fingerprint:
    entries = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            try:
                stat = path.stat()
            except OSError:  # removed while listing
                continue
            if path.is_file():
                entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


async def watch(
    directories: list[Path],
    interval: float,
    reload: Callable[[], None],
    tick: Callable[[], None],
) -> None:
    """Call ``reload`` (in a worker thread) whenever the directories' contents change, and
    ``tick`` every interval otherwise (for what changes with time alone)."""
    last = await anyio.to_thread.run_sync(fingerprint, directories)
    while True:
        await anyio.sleep(interval)
        current = await anyio.to_thread.run_sync(fingerprint, directories)
        if current == last:
            await anyio.to_thread.run_sync(tick)
            continue
        last = current
        try:
            await anyio.to_thread.run_sync(reload)
        except Exception as exc:  # keep serving with what we had
            log.error("reload failed, keeping the previous contracts: %s", exc)
