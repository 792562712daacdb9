"""What the services need of the ledger (``core/ledger.py``, ``adapters/kafka/ledger.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Ledger(Protocol):
    def record(self, time: str, kind: str, details: Mapping[str, Any]) -> None:
        """Queue an entry; never blocks the caller."""

    def problem(self) -> str | None:
        """Why entries cannot be written now; ``None`` when they can."""
