"""Hostile input for the boundary fuzz tests: hypothesis strategies, structure-aware.

A boundary's own well-formed messages (captured from Asterisk and from the
Realtime API) are the seeds; :func:`mutated` replaces fields anywhere in
them with values of the wrong type, nested thousands of levels deep, huge
strings and numbers, and :func:`raw_message` then damages the text itself:
truncation, invalid UTF-8, lone surrogates, NUL bytes, garbage. Every fuzz
test runs under :data:`FUZZ` (bounded examples, a deadline per example), so
the whole set stays well under a minute.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

DATA = Path(__file__).resolve().parents[1] / "data"

#: Every fuzz test's budget: a bounded number of examples, each quick.
FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# A marker that :func:`to_text` expands into ``depth`` levels of nesting after
# json.dumps (which would itself hit the recursion limit on such a value).
_DEEP = "\x00deep:"
_DEEP_TEXT = re.compile(r'"\\u0000deep:(\d+):([\[{])"')

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
deep_values = st.builds(
    lambda depth, kind: f"{_DEEP}{depth}:{kind}",
    st.integers(min_value=50, max_value=5000),
    st.sampled_from("[{"),
)
huge_strings = st.builds(
    lambda n, c: c * n,
    st.integers(min_value=10_000, max_value=300_000),
    st.sampled_from("a\n\x00é{"),
)
odd_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from("\n\r\x1b\x00\u2028\u202e{}%"),
    max_size=80,
)
#: A value for any field: the wrong type, deep nesting, huge, or odd text.
hostile_values = json_values | deep_values | huge_strings | odd_text | st.just(10**400)

#: Pieces of a template: plain fields, fields with str.format syntax, stray braces.
_TEMPLATE_PIECES = [
    "{caller_number}",
    "{caller_name}",
    "{dialed_number}",
    "{caller_number.__class__}",
    "{caller_number.x}",
    "{caller_name[0]}",
    "{caller_name[99]}",
    "{x[0]}",
    "{date!r}",
    "{call_id:>12}",
    "{0}",
    "{}",
    "{",
    "}",
    "{{",
    "}}",
    " text ",
]
templates = st.lists(st.sampled_from(_TEMPLATE_PIECES) | odd_text, max_size=8).map("".join)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += _paths(value, (*prefix, index))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """A seed with one to three fields (anywhere in it) replaced or removed."""
    obj: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(obj)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        if draw(st.integers(0, 5)) == 0 and isinstance(path[-1], str):
            parent = obj
            for part in path[:-1]:
                parent = parent[part]
            parent.pop(path[-1], None)  # a required field missing
        else:
            _set(obj, path, draw(hostile_values))
    return obj


def to_text(obj: Any) -> str:
    """``obj`` as JSON text, with deep-nesting markers expanded."""

    def expand(match: re.Match[str]) -> str:
        depth, kind = int(match.group(1)), match.group(2)
        if kind == "[":
            return "[" * depth + "]" * depth
        return '{"a":' * depth + "{}" + "}" * depth

    return _DEEP_TEXT.sub(expand, json.dumps(obj, ensure_ascii=True))


@st.composite
def raw_message(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> bytes:
    """A message as it comes off a socket: a mutated seed, often damaged as text."""
    text = to_text(draw(mutated(seeds))).encode("utf-8")
    damage = draw(st.integers(0, 9))
    if damage == 0 and text:
        return text[: draw(st.integers(0, len(text) - 1))]  # truncated
    if damage == 1:
        at = draw(st.integers(0, len(text)))
        return (
            text[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
            + text[at:]
        )
    if damage == 2:
        return text.replace(b'"', b'"\\ud800', 1)  # a lone surrogate escape
    if damage == 3:
        return draw(st.binary(max_size=64))
    if damage == 4:
        return b"[" + text + b"]"  # not an object
    return text
