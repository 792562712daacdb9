"""Field projection: only the fields a contract allows leave the building, in the form it says.

The contract's ``fields`` map dot paths (``customer.country``; ``items[].sku`` for every element
of a list) to rules. They are compiled once into a tree; a record value is then rebuilt from the
tree, never copied and pruned, so a field nobody listed cannot slip through. A ``clear`` node
keeps its whole subtree except children that have rules of their own; a node without a rule
keeps only its listed children. ``encrypt``, ``hash`` and ``mask`` leaves go through the
stream's protector with the field's concrete path (``items[2].sku``).

``ValueProjector`` is the hot path: msgspec decodes a record's JSON straight into Struct types
built from the same tree, so only the fields the contract lists are materialised (the rest is
skipped unparsed), and encodes the result without an intermediate dict. Whatever the structs
cannot state (a list of objects, a ``clear`` object with exceptions, a protected leaf) is
handed to ``project`` at its concrete path; a value whose shape differs from the tree's (a
scalar where the contract lists an object's fields) fails the decode and takes the generic
path, which decides it exactly as before. Both paths parse with msgspec, so they agree on
every input (a property test holds them to it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

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


#: The JSON codec of record values (both paths): exact integers of any size, UTF-8 strings.
decode_json: Final = msgspec.json.Decoder().decode
encode_json: Final = msgspec.json.Encoder().encode

_UNSET: Final = msgspec.UNSET
_struct_names = itertools.count()


@dataclass(frozen=True, slots=True)
class _Fixup:
    """A field of a struct that is finished in Python after the decode."""

    attribute: str
    node: FieldNode
    path: str
    #: The nested struct's own fixups (only for a nested struct).
    nested: tuple[_Fixup, ...] | None
    #: The nested struct's fields all unset: it says nothing (only for a nested struct).
    empty: tuple[Any, ...] = ()
    #: The rule of a protected leaf (the protector is called directly).
    protect: FieldRule | None = None


def _nameable(node: FieldNode) -> bool:
    """Whether msgspec can name every child of ``node`` (no quote, backslash or control)."""
    return not any(
        '"' in key or "\\" in key or any(ord(c) < 0x20 for c in key) for key in node.children
    )


def _struct_for(node: FieldNode, path: str) -> tuple[type[msgspec.Struct], tuple[_Fixup, ...]]:
    """A Struct with a field per listed child (in the rules' order, as ``_one`` writes them)."""
    members: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    fixups: list[_Fixup] = []
    for index, (key, child) in enumerate(node.children.items()):
        attribute = f"f{index}"
        child_path = f"{path}.{key}" if path else key
        plain_leaf = not child.children and not child.each
        if plain_leaf and (child.rule is None or child.rule.action is FieldAction.DROP):
            continue  # never listed: the decoder skips it unparsed
        rename[attribute] = key
        if plain_leaf and child.clear:
            members.append((attribute, Any, _UNSET))
        elif child.children and not child.each and not child.clear and _nameable(child):
            nested, nested_fixups = _struct_for(child, child_path)
            members.append((attribute, nested | msgspec.UnsetType, _UNSET))
            empty = (_UNSET,) * len(nested.__struct_fields__)
            fixups.append(_Fixup(attribute, child, child_path, nested_fixups, empty))
        elif plain_leaf:  # protected: encrypt, hash, mask
            members.append((attribute, Any, _UNSET))
            fixups.append(_Fixup(attribute, child, child_path, None, protect=child.rule))
        else:  # a list of elements, a clear object with exceptions
            members.append((attribute, Any, _UNSET))
            fixups.append(_Fixup(attribute, child, child_path, None))
    struct = msgspec.defstruct(f"Projected{next(_struct_names)}", members, rename=rename, gc=False)
    return struct, tuple(fixups)


Finisher = Callable[[Any, "Protector | None"], None]


def _finisher(fixups: tuple[_Fixup, ...]) -> Finisher | None:
    """The fixups as one straight-line function (as ``dataclasses`` makes ``__init__``): the
    hot path pays no loop, no dispatch and no recursion per record. Only generated names and
    attribute names ``f<n>`` appear in the source; rules, nodes and paths are passed in."""
    if not fixups:
        return None
    constants: dict[str, Any] = {
        "UNSET": _UNSET,
        "MISSING": MISSING,
        "project": project,
        "astuple": msgspec.structs.astuple,
    }
    lines = ["def finish(s0, protector):"]

    def emit(fixups: tuple[_Fixup, ...], depth: int) -> None:
        pad, struct, value = "    " * depth, f"s{depth - 1}", f"v{depth}"
        for fixup in fixups:
            n = len(constants)
            constants[f"node{n}"], constants[f"path{n}"] = fixup.node, fixup.path
            constants[f"rule{n}"], constants[f"empty{n}"] = fixup.protect, fixup.empty
            field = f"{struct}.{fixup.attribute}"
            lines.append(f"{pad}{value} = {field}")
            lines.append(f"{pad}if {value} is not UNSET:")
            if fixup.nested is not None:
                lines.append(f"{pad}    s{depth} = {value}")
                emit(fixup.nested, depth + 1)
                lines.append(f"{pad}    if astuple(s{depth}) == empty{n}:")
                lines.append(f"{pad}        {field} = UNSET")
                continue
            if fixup.protect is not None:
                lines.append(
                    f"{pad}    {value} = MISSING if protector is None"
                    f" else protector.protect(rule{n}, {value}, path{n})"
                )
            else:
                lines.append(f"{pad}    {value} = project({value}, node{n}, protector, path{n})")
            lines.append(f"{pad}    {field} = UNSET if {value} is MISSING else {value}")

    emit(fixups, 1)
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), constants, namespace)  # noqa: S102 - generated from names only
    finish: Finisher = namespace["finish"]
    return finish


class ValueProjector:
    """One contract's projection from a record value's JSON bytes to the partner's JSON bytes."""

    def __init__(self, fields: CompiledFields) -> None:
        self._decode: Callable[[bytes | str], Any] | None = None
        self._finish: Finisher | None = None
        self._protected = fields.protected
        if _nameable(fields.root):
            struct, fixups = _struct_for(fields.root, "")
            self._decode = msgspec.json.Decoder(struct).decode
            self._finish = _finisher(fixups)

    def __call__(self, raw: bytes | str, protector: Protector | None) -> bytes | None:
        """The projected value's JSON, or ``None`` when the value's shape is not the one the
        rules describe (or it is not a JSON object): the caller then takes the generic path."""
        if self._decode is None:
            return None
        try:
            struct = self._decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if self._finish is not None:
            self._finish(struct, protector if self._protected else None)
        return encode_json(struct)
