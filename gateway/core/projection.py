"""Field projection: only the fields a contract allows leave the building.

The contract's ``fields`` map dot paths to actions. They are compiled once into a tree; a record
value is then rebuilt from the tree, never copied and pruned, so a field nobody listed cannot
slip through. A ``clear`` node keeps its whole subtree except children that have rules of their
own; a node without an action keeps only its listed children.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.core.contracts import FieldAction


@dataclass(slots=True)
class FieldNode:
    action: FieldAction | None = None
    children: dict[str, FieldNode] = field(default_factory=dict)


class _Missing:
    __slots__ = ()


MISSING: Final = _Missing()


def compile_fields(fields: Mapping[str, FieldAction]) -> FieldNode:
    root = FieldNode()
    for path, action in fields.items():
        node = root
        for part in path.split("."):
            node = node.children.setdefault(part, FieldNode())
        node.action = action
    return root


def project(value: Any, node: FieldNode) -> Any:
    """The part of ``value`` that ``node`` allows, or ``MISSING`` when nothing is allowed."""
    if not node.children:
        return value if node.action is FieldAction.CLEAR else MISSING
    if not isinstance(value, dict):
        # Child rules cannot apply to a scalar, which a clear node may keep; a list could hide
        # the very fields a child rule drops, so it is withheld (fail closed).
        keep = node.action is FieldAction.CLEAR and not isinstance(value, list)
        return value if keep else MISSING
    keep_rest = node.action is FieldAction.CLEAR
    out: dict[str, Any] = {}
    if keep_rest:
        for key, child_value in value.items():
            child = node.children.get(key)
            if child is None:
                out[key] = child_value
            elif (projected := project(child_value, child)) is not MISSING:
                out[key] = projected
    else:  # only listed fields can appear: walk the (usually shorter) list of rules
        for key, child in node.children.items():
            if key not in value:
                continue
            if not child.children:
                if child.action is FieldAction.CLEAR:
                    out[key] = value[key]
            elif (projected := project(value[key], child)) is not MISSING:
                out[key] = projected
    # An object none of whose listed fields is present says nothing: leave it out entirely.
    return out if out or keep_rest else MISSING


def project_value(value: Any, root: FieldNode) -> dict[str, Any]:
    """Project a record value (a JSON object) to what the contract allows."""
    projected = project(value, root)
    return projected if isinstance(projected, dict) else {}
