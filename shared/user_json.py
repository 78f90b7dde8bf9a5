"""JSON that users send: parsed within bounds, and every value they name (metadata,
options, a batch's defaults, a reprocess filter or override) held to one depth and one
size.

Why: a parser turns a few bytes into many objects (`{}` is 3 bytes and a 64-byte dict;
4,000,000 of them in a 12 MB batch body took 426 MB), and a value nested 256 deep was
stored, then could not be read back (every list of that tenant's jobs answered 500).
So a body's count of JSON values is bounded before it is parsed, from a count of the
bytes that open one (`{`, `[`, `,`: an upper bound, at C speed), and each named value
is checked once parsed, before anything stores it.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import InvalidInput, InvalidJson

# One limit for every value a user names: how deep it nests (an object or array is a
# level), and its size as compact JSON.
MAX_DEPTH = 16
MAX_VALUE_BYTES = 16 * 1024
# The JSON values in one edit request (a job, a quote, a comparison, a JSONL line):
# a real one holds a few dozen; its named values at most ~8,000 within their size.
MAX_REQUEST_VALUES = 32_768


def values_bound(raw: bytes | str) -> int:
    """At most how many JSON values `raw` holds: each but the first opens an object or
    array or follows a comma (counted in strings too, which only raises the bound)."""
    if isinstance(raw, str):
        return raw.count("{") + raw.count("[") + raw.count(",") + 1
    return raw.count(b"{") + raw.count(b"[") + raw.count(b",") + 1


def loads(raw: bytes | str, *, field: str, max_values: int = MAX_REQUEST_VALUES) -> Any:
    """`raw` parsed, or a 422 that names `field`: refused unparsed when it may hold more
    than `max_values` values; too deep for the parser is invalid JSON, not a crash."""
    if values_bound(raw) > max_values:
        raise InvalidInput(f"{field} holds more than {max_values} JSON values",
                           field=field, limit=max_values)
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise InvalidJson(f"{field} is nested too deeply to parse", field=field) from exc
    except ValueError as exc:  # JSONDecodeError, and bytes that are not UTF-8
        raise InvalidJson(f"{field} is not valid JSON: {str(exc)[:200]}",
                          field=field) from exc


def check(value: Any, *, field: str, max_bytes: int = MAX_VALUE_BYTES) -> Any:
    """`value`, if it nests at most MAX_DEPTH levels and is at most `max_bytes` as compact
    JSON; else a 422 naming `field`. (Iterative: no depth can make it recurse.)"""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth + 1 > MAX_DEPTH:
                raise InvalidInput(f"{field} nests deeper than {MAX_DEPTH} levels",
                                   field=field, limit=MAX_DEPTH)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    size = len(json.dumps(value, separators=(",", ":"), default=str))
    if size > max_bytes:
        raise InvalidInput(f"{field} is {size} bytes of JSON, over the limit of {max_bytes}",
                           field=field, limit=max_bytes)
    return value
