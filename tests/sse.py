"""A strict reader of raw SSE bytes for tests: only complete events count, as in browsers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    event: str
    id: str | None
    data: str
    comment: bool = False

    def json(self) -> Any:
        return json.loads(self.data)


def parse_events(buffer: bytes) -> list[Event]:
    """Events whose terminating blank line arrived; a trailing partial event is ignored."""
    text = buffer.decode("utf-8", errors="replace")
    complete, _, _ = text.rpartition("\n\n")
    events = []
    for block in filter(None, complete.split("\n\n")):
        fields: dict[str, list[str]] = {}
        comment = True
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            comment = False
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        events.append(
            Event(
                event=fields.get("event", ["message"])[-1],
                id=fields.get("id", [None])[-1],
                data="\n".join(fields.get("data", [])),
                comment=comment,
            )
        )
    return events
