"""A readable difference between two contract versions, for people (CLI and legal pages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.core.contracts import Contract

_IGNORED = {"signatures", "version", "supersedes"}


@dataclass(frozen=True, slots=True)
class Change:
    what: str  # "field" or a top-level member
    name: str
    before: Any
    after: Any

    @property
    def before_text(self) -> str | None:
        return None if self.before is None else _text(self.before)

    @property
    def after_text(self) -> str | None:
        return None if self.after is None else _text(self.after)

    def describe(self) -> str:
        if self.before is None:
            return f"+ {self.what} {self.name}: {self.after_text}"
        if self.after is None:
            return f"- {self.what} {self.name}: {self.before_text}"
        return f"~ {self.what} {self.name}: {self.before_text} -> {self.after_text}"


def _text(value: Any) -> str:
    """Nested members as ``key: value; …`` and lists as ``a; b``, for people."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    return str(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def diff_contracts(a: Contract, b: Contract) -> list[Change]:
    """Field rules first (added, removed, changed action), then every other changed member."""
    changes: list[Change] = []
    for path in sorted(set(a.fields) | set(b.fields)):
        before, after = a.fields.get(path), b.fields.get(path)
        if before != after:
            changes.append(Change("field", path, before and str(before), after and str(after)))
    for name in Contract.model_fields:
        if name in _IGNORED or name == "fields":
            continue
        before, after = _plain(getattr(a, name)), _plain(getattr(b, name))
        if before != after:
            changes.append(Change("member", name, before or None, after or None))
    return changes
