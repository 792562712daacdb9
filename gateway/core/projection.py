"""Field projection: only the fields a contract allows leave the building, in the form it says.

The contract's ``fields`` map dot paths (``customer.country``; ``items[].sku`` for every element
of a list) to rules. They are compiled once into a tree; a record value is then rebuilt from the
tree, never copied and pruned, so a field nobody listed cannot slip through. A ``clear`` node
keeps its whole subtree except children that have rules of their own; a node without a rule
keeps only its listed children. ``encrypt``, ``hash`` and ``mask`` leaves go through the
stream's protector with the field's concrete path (``items[2].sku``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.core.contracts import FieldAction, FieldRule


class _Missing:
    __slots__ = ()


MISSING: Final = _Missing()


class Protector(Protocol):
    def protect(self, rule: FieldRule, value: Any, path: str) -> Any:
        """The protected form of ``value`` at ``path``, or ``MISSING`` if it cannot be made."""


@dataclass(slots=True)
class FieldNode:
    rule: FieldRule | None = None
    children: dict[str, FieldNode] = field(default_factory=dict)
    #: The path said ``name[]``: the rule and children apply to each element of a list.
    each: bool = False

    @property
    def clear(self) -> bool:
        return self.rule is not None and self.rule.action is FieldAction.CLEAR


@dataclass(frozen=True, slots=True)
class CompiledFields:
    root: FieldNode
    #: Whether any rule needs the protector (encrypt, hash, mask).
    protected: bool
    encrypted: bool


_PLAIN = (FieldAction.CLEAR, FieldAction.DROP)


def compile_fields(fields: Mapping[str, FieldRule]) -> CompiledFields:
    root = FieldNode()
    for path, rule in fields.items():
        node = root
        for part in path.split("."):
            name = part.removesuffix("[]")
            node = node.children.setdefault(name, FieldNode())
            node.each = node.each or part.endswith("[]")
        node.rule = rule
    actions = {rule.action for rule in fields.values()}
    return CompiledFields(root, bool(actions - set(_PLAIN)), FieldAction.ENCRYPT in actions)


def project(value: Any, node: FieldNode, protector: Protector | None, path: str) -> Any:
    """The part of ``value`` that ``node`` allows, or ``MISSING`` when nothing is allowed."""
    if node.each:
        if not isinstance(value, list):
            return MISSING  # the contract promised a list here: fail closed
        out = []
        for index, element in enumerate(value):
            projected = _one(element, node, protector, f"{path}[{index}]")
            if projected is not MISSING:
                out.append(projected)
        return out
    return _one(value, node, protector, path)


def _one(value: Any, node: FieldNode, protector: Protector | None, path: str) -> Any:
    rule = node.rule
    if not node.children:
        if rule is None or rule.action is FieldAction.DROP:
            return MISSING
        if rule.action is FieldAction.CLEAR:
            return value
        return MISSING if protector is None else protector.protect(rule, value, path)
    if not isinstance(value, dict):
        # Child rules cannot apply to a scalar, which a clear node may keep; a list could hide
        # the very fields a child rule governs, so it is withheld (fail closed).
        keep = node.clear and not isinstance(value, list)
        return value if keep else MISSING
    keep_rest = node.clear
    out: dict[str, Any] = {}
    if keep_rest:
        for key, child_value in value.items():
            child = node.children.get(key)
            if child is None:
                out[key] = child_value
            elif (
                projected := project(
                    child_value, child, protector, f"{path}.{key}" if path else key
                )
            ) is not MISSING:
                out[key] = projected
    else:  # only listed fields can appear: walk the (usually shorter) list of rules
        for key, child in node.children.items():
            if key not in value:
                continue
            if not child.children and not child.each:
                if child.clear:
                    out[key] = value[key]
                    continue
                if child.rule is None or child.rule.action is FieldAction.DROP:
                    continue
            child_path = f"{path}.{key}" if path else key
            if (projected := project(value[key], child, protector, child_path)) is not MISSING:
                out[key] = projected
    # An object none of whose listed fields is present says nothing: leave it out entirely.
    return out if out or keep_rest else MISSING


def project_value(
    value: Any, fields: CompiledFields, protector: Protector | None = None
) -> dict[str, Any]:
    """Project a record value (a JSON object) to what the contract allows."""
    projected = _one(value, fields.root, protector if fields.protected else None, "")
    return projected if isinstance(projected, dict) else {}
