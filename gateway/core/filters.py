"""Row filters: a small, safe expression language over record fields.

::

    filter  := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | test
    test    := "(" or ")" | path "is" ["not"] "null"
             | operand ("==" | "!=" | "<" | "<=" | ">" | ">=") operand
             | operand ["not"] "in" "[" [literal ("," literal)*] "]"
    operand := path | literal
    literal := string ('…' or "…") | number | true | false | null
    path    := name ("." name)*

Parsed once at contract load time into a tree of plain objects; evaluated by walking it, never
``eval``. Evaluation is total: a missing field is ``null``, comparing values of different types
is false (never an error), so no record can crash the gateway. ``str(expr)`` prints the canonical
form, which parses back to the same tree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import FilterSyntaxError

MAX_LENGTH = 4096
MAX_DEPTH = 32

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
      | (?P<word>[A-Za-z_$@][A-Za-z0-9_$@-]*(?:\.[A-Za-z_$@][A-Za-z0-9_$@-]*)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class Literal:
    value: Any

    def __str__(self) -> str:
        return json.dumps(self.value)

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.parts)

    def evaluate(self, record: Mapping[str, Any]) -> Any:
        value: Any = record
        for part in self.parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value


Operand = Literal | Path


def _same_kind(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return True
    return type(a) is type(b)


@dataclass(frozen=True)
class Compare:
    op: str
    left: Operand
    right: Operand

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"

    def evaluate(self, record: Mapping[str, Any]) -> bool:
        a, b = self.left.evaluate(record), self.right.evaluate(record)
        if self.op in ("==", "!="):
            equal = _same_kind(a, b) and a == b
            return equal if self.op == "==" else not equal
        if a is None or b is None or not _same_kind(a, b) or isinstance(a, dict | list | bool):
            return False
        return bool(_COMPARISONS[self.op](a, b))


@dataclass(frozen=True)
class In:
    operand: Operand
    options: tuple[Literal, ...]
    negated: bool = False

    def __str__(self) -> str:
        options = ", ".join(str(o) for o in self.options)
        return f"{self.operand} {'not in' if self.negated else 'in'} [{options}]"

    def evaluate(self, record: Mapping[str, Any]) -> bool:
        value = self.operand.evaluate(record)
        found = any(_same_kind(value, o.value) and value == o.value for o in self.options)
        return found != self.negated


@dataclass(frozen=True)
class IsNull:
    path: Path
    negated: bool = False

    def __str__(self) -> str:
        return f"{self.path} is {'not ' if self.negated else ''}null"

    def evaluate(self, record: Mapping[str, Any]) -> bool:
        return (self.path.evaluate(record) is None) != self.negated


@dataclass(frozen=True)
class Not:
    operand: Expr

    def __str__(self) -> str:
        return f"not ({self.operand})"

    def evaluate(self, record: Mapping[str, Any]) -> bool:
        return not self.operand.evaluate(record)


@dataclass(frozen=True)
class Junction:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]

    def __str__(self) -> str:
        return f" {self.op} ".join(f"({o})" for o in self.operands)

    def evaluate(self, record: Mapping[str, Any]) -> bool:
        if self.op == "and":
            return all(o.evaluate(record) for o in self.operands)
        return any(o.evaluate(record) for o in self.operands)


Expr = Compare | In | IsNull | Not | Junction


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterSyntaxError(
                f"filter: unexpected {text[position : position + 10].strip()!r}"
            )
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value in _KEYWORDS:
            kind = "keyword"
        tokens.append((kind, value))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        if len(text) > MAX_LENGTH:
            raise FilterSyntaxError(f"filter: longer than {MAX_LENGTH} characters")
        self.tokens = _tokens(text)
        self.position = 0
        self.depth = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if (
            token is None
            or (value is not None and token[1] != value)
            or (kind and token[0] != kind)
        ):
            expected = value or kind or "more"
            found = "the end" if token is None else repr(token[1])
            raise FilterSyntaxError(f"filter: expected {expected}, found {found}")
        self.position += 1
        return token

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == value and token[0] in ("keyword", "op")

    def parse(self) -> Expr:
        expr = self.or_()
        if self.peek() is not None:
            raise FilterSyntaxError(f"filter: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return expr

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterSyntaxError(f"filter: nested deeper than {MAX_DEPTH}")

    def junction(self, op: str, operand: Callable[[], Expr]) -> Expr:
        operands = [operand()]
        while self.at(op):
            self.take(op)
            operands.append(operand())
        return operands[0] if len(operands) == 1 else Junction(op, tuple(operands))

    def or_(self) -> Expr:
        return self.junction("or", self.and_)

    def and_(self) -> Expr:
        return self.junction("and", self.not_)

    def not_(self) -> Expr:
        if self.at("not"):
            self.take("not")
            self.nested()
            return Not(self.not_())
        return self.test()

    def test(self) -> Expr:
        if self.at("("):
            self.take("(")
            self.nested()
            expr = self.or_()
            self.take(")")
            self.depth -= 1
            return expr
        left = self.operand()
        if self.at("is"):
            self.take("is")
            negated = self.at("not")
            if negated:
                self.take("not")
            self.take("null")
            if not isinstance(left, Path):
                raise FilterSyntaxError("filter: 'is null' applies to a field")
            return IsNull(left, negated)
        negated = self.at("not")
        if negated:
            self.take("not")
            if not self.at("in"):
                raise FilterSyntaxError("filter: 'not' here must be followed by 'in'")
        if self.at("in"):
            self.take("in")
            self.take("[")
            options: list[Literal] = []
            while not self.at("]"):
                if options:
                    self.take(",")
                operand = self.operand()
                if not isinstance(operand, Literal):
                    raise FilterSyntaxError("filter: 'in' lists hold literals only")
                options.append(operand)
            self.take("]")
            return In(left, tuple(options), negated)
        token = self.peek()
        if token is None or token[1] not in _COMPARISONS:
            found = "the end" if token is None else repr(token[1])
            raise FilterSyntaxError(f"filter: expected a comparison after {left}, found {found}")
        self.take()
        return Compare(token[1], left, self.operand())

    def operand(self) -> Operand:
        if self.peek() is None:
            raise FilterSyntaxError("filter: expected a field or a value, found the end")
        kind, value = self.take()
        if kind == "number":
            number = float(value)
            if number in (float("inf"), float("-inf")):
                raise FilterSyntaxError(f"filter: number {value} is out of range")
            return Literal(int(value) if re.fullmatch(r"-?\d+", value) else number)
        if kind == "string":
            return Literal(_unquote(value))
        if kind == "keyword" and value in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[value])
        if kind == "word":
            return Path(tuple(value.split(".")))
        raise FilterSyntaxError(f"filter: expected a field or a value, found {value!r}")


def _unquote(token: str) -> str:
    body = token[1:-1]
    if token[0] == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    try:
        return str(json.loads(f'"{body}"'))
    except ValueError:
        raise FilterSyntaxError(f"filter: bad string {token}") from None


def parse_filter(text: str) -> Expr:
    """The expression tree of ``text``; ``FilterSyntaxError`` naming the problem otherwise."""
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise FilterSyntaxError("filter: nested too deeply") from None


def paths_of(expr: Expr) -> set[str]:
    """The record paths a filter reads (dot-separated)."""
    if isinstance(expr, Compare):
        return {str(o) for o in (expr.left, expr.right) if isinstance(o, Path)}
    if isinstance(expr, In):
        return {str(expr.operand)} if isinstance(expr.operand, Path) else set()
    if isinstance(expr, IsNull):
        return {str(expr.path)}
    if isinstance(expr, Not):
        return paths_of(expr.operand)
    return set().union(*(paths_of(o) for o in expr.operands))
