"""RFC 8785 canonical JSON, fast where it can be.

``rfc8785.dumps`` is written in Python: about 50 µs for a ledger entry, which the ledger's
writer pays for every entry it chains (a thousand streams record a thousand progress entries a
second). For values made only of text, integers within ±(2^53 - 1), booleans, null, lists and
objects whose keys sort the same in UTF-16 code units as in code points, RFC 8785's output is
exactly msgspec's with sorted keys (its text escaping is the same: ``\\b \\t \\n \\f \\r``,
``\\u00xx`` for the other controls, nothing else escaped): about 1.5 µs. Anything else (a float,
whose ES6 form differs; a key beyond U+E000; a type RFC 8785 refuses) goes through
``rfc8785.dumps``, errors included. ``tests/core/test_canonical.py`` checks the two agree on
generated values.
"""

from __future__ import annotations

from typing import Any

import msgspec
import rfc8785

MAX_SAFE_INTEGER = 2**53 - 1

_SORTED = msgspec.json.Encoder(order="sorted")


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical form of ``value`` (raises what ``rfc8785.dumps`` raises)."""
    if _plain(value):
        try:
            return _SORTED.encode(value)
        except (UnicodeEncodeError, RecursionError):  # a lone surrogate, or deep nesting
            pass
    return bytes(rfc8785.dumps(value))


def _plain(value: Any) -> bool:
    """Whether msgspec's sorted encoding of ``value`` is its RFC 8785 form (iteratively: a
    value nested deeper than Python's recursion limit is looked at too)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is dict:
            for key in item:
                # Code point order is UTF-16 order below U+E000 (surrogates are not text).
                if type(key) is not str or (not key.isascii() and max(key) >= "\ue000"):
                    return False
            pending.extend(item.values())
        elif kind is list or kind is tuple:
            pending.extend(item)
        else:
            return False
    return True
