"""Anchoring the ledger outside itself: signed checkpoints handed to someone else.

A checkpoint proves a chain up to its head only as long as the ledger still holds it: whoever can
delete a chain's tail, checkpoints included, or the whole chain, leaves nothing inside the ledger
to notice. An anchor keeps checkpoints where the gateway's operators cannot change them (a
partner, a timestamping service, a transparency log); ``gateway ledger verify --anchored FILE``
then checks that every anchored checkpoint is still in the ledger as signed.

The plug-in point is ``CheckpointAnchor``; ``adapters/anchors.py`` has the HTTP one (a JSON POST
of each checkpoint to a URL the receiver controls). Every ``anchor_seconds`` the newest
checkpoint Kafka has acknowledged is handed to each anchor; one that fails is tried again at the
next round, and each hand-over is recorded in the ledger (``anchored``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import anyio.to_thread

log = logging.getLogger(__name__)


class CheckpointAnchor(Protocol):
    #: Names the anchor in logs and in the ledger (never a credential).
    name: str

    def publish(self, checkpoint: str) -> None:
        """Hand over a checkpoint (its compact JWS). Blocking; ``GatewayError`` when it fails."""


async def anchor_checkpoints(
    latest: Callable[[], str | None],
    anchors: Sequence[CheckpointAnchor],
    interval: float,
    record: Callable[[str, str], None],
) -> None:
    """Every ``interval`` seconds, hand the newest acknowledged checkpoint to each anchor that
    does not have it yet; ``record(anchor name, checkpoint)`` after each hand-over."""
    handed: dict[str, str] = {}
    while True:
        await anyio.sleep(interval)
        checkpoint = latest()
        if checkpoint is None:
            continue
        for anchor in anchors:
            if handed.get(anchor.name) == checkpoint:
                continue
            try:
                await anyio.to_thread.run_sync(anchor.publish, checkpoint)
            except Exception as exc:
                log.warning("anchor %s: the checkpoint was not handed over: %s", anchor.name, exc)
                continue
            handed[anchor.name] = checkpoint
            record(anchor.name, checkpoint)
