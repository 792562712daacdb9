"""Reading contract and product documents, and their RFC 8785 canonical form.

Documents are YAML whose data model is JSON: timestamps stay strings (exactly as written, so
every party canonicalises the same bytes) and a key given twice is an error, not a silent
override. What both parties sign is the RFC 8785 canonical JSON of the document without
``signatures``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785
import yaml

from gateway.core.canonical import canonical_json
from gateway.errors import DocumentInvalid

#: The largest document read (a contract with many fields is a few KiB), and its deepest nesting.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 64


class _JsonModelLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver, refusing duplicate keys, anchors and aliases.

    No document here has a use for anchors (``&a``) and aliases (``*a``); refused, they cannot
    make a few hundred bytes expand into gigabytes (the "billion laughs").
    """

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise DocumentInvalid(f"line {line}: YAML anchors and aliases are not allowed")
        if self.depth >= MAX_DEPTH:  # "[[[[…" would otherwise recurse until Python gives up
            raise DocumentInvalid(f"line {line}: nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_JsonModelLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping_without_duplicates(loader: _JsonModelLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise DocumentInvalid(f"line {line}: key {key!r} is given twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_JsonModelLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside quoted text, in one pass."""
    depth = deepest = 0
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def load_yaml(text: str, *, source: str) -> dict[str, Any]:
    """Parse one YAML document into a JSON-model mapping; errors name the source and line."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DocumentInvalid(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes")
    if _flow_depth(text) > MAX_DEPTH:  # before parsing: PyYAML's scanner is quadratic in it
        raise DocumentInvalid(f"{source}: nested deeper than {MAX_DEPTH} levels")
    try:
        data = yaml.load(text, Loader=_JsonModelLoader)  # noqa: S506 (a SafeLoader subclass)
    except DocumentInvalid as exc:
        raise DocumentInvalid(f"{source}: {exc.detail}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DocumentInvalid(f"{source}:{where} not valid YAML") from None
    except RecursionError:  # "[[[[…": nested deeper than any document needs
        raise DocumentInvalid(f"{source}: nested too deeply") from None
    if not isinstance(data, dict):
        raise DocumentInvalid(f"{source}: expected a mapping at the top level")
    return data


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of ``document`` without its ``signatures`` (the signed bytes)."""
    unsigned = {k: v for k, v in document.items() if k != "signatures"}
    try:
        return canonical_json(unsigned)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise DocumentInvalid(f"cannot be canonicalised as JSON ({exc})") from None


def canonical_hash(document: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical bytes: names one contract version everywhere."""
    return "sha256:" + hashlib.sha256(canonical_bytes(document)).hexdigest()


def with_signatures(text: str, signatures: list[str]) -> str:
    """``text`` with its top-level ``signatures`` replaced, keeping every other line (and comment).

    Signatures cover the canonical JSON, not the YAML text, so comments and layout stay free.
    """
    kept: list[str] = []
    in_block = False
    for line in text.splitlines():
        if line.startswith("signatures:"):
            in_block = True
            continue
        if in_block and (line.startswith((" ", "-", "\t")) or not line.strip()):
            continue
        in_block = False
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    block = ["signatures:", *(f"  - {s}" for s in signatures)] if signatures else ["signatures: []"]
    return "\n".join([*kept, *block]) + "\n"


def amended(text: str, *, version: int, supersedes: str) -> str:
    """The next version of a contract document's ``text``: ``version`` and ``supersedes`` set,
    signatures cleared, every other line (and comment) kept for the parties to edit."""
    lines = with_signatures(text, []).splitlines()
    out: list[str] = []
    for line in lines:
        if line.startswith("supersedes:"):
            continue
        if line.startswith("version:"):
            out += [f"version: {version}", f"supersedes: {supersedes}"]
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """The line of every key (and list item) in a YAML document, by path: for error messages."""
    try:
        root = yaml.compose(text, Loader=_JsonModelLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node | None, path: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value))
                lines[here] = key.start_mark.line + 1
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                here = (*path, index)
                lines[here] = value.start_mark.line + 1
                walk(value, here)

    walk(root, ())
    return lines
