"""Times as the gateway writes them: RFC 3339, UTC, with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime, *, milliseconds: bool = False) -> str:
    """``2026-11-21T10:00:00Z`` (or ``…00.123Z`` with ``milliseconds``)."""
    spec = "milliseconds" if milliseconds else "auto"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")
