"""Presence metadata: JSON-compatible mappings, validated and copied on the way in.

A meta is stored as a private deep copy, so a caller who mutates their dict afterwards cannot
change replicated state behind the core's back. Metas handed out by queries and events are the
stored objects themselves: treat them as read-only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Union

from ._errors import LocalProtocolError

__all__ = ["JSONValue", "Meta", "copy_meta"]

JSONValue = Union[  # noqa: UP007 (a runtime alias with forward references needs Union on 3.10)
    None, bool, int, float, str, Sequence["JSONValue"], Mapping[str, "JSONValue"]
]
"""A value that JSON can carry: null, booleans, numbers, strings, arrays and objects."""

Meta = Mapping[str, JSONValue]
"""A presence's metadata: a JSON object."""

MAX_DEPTH = 32
"""Nesting deeper than this is refused (it protects the recursive copy and the codec)."""

_SCALARS = frozenset({str, int, bool, type(None)})


def copy_meta(meta: object) -> dict[str, JSONValue]:
    """Validate ``meta`` as a JSON object and return a private deep copy.

    Tuples become lists; any mapping becomes a ``dict``.

    Raises:
        LocalProtocolError: ``meta`` is not a mapping with ``str`` keys whose values JSON can
            carry (non-finite floats, bytes, sets and other objects are refused), or it nests
            deeper than ``MAX_DEPTH``.
    """
    if type(meta) is not dict and not isinstance(meta, Mapping):
        raise LocalProtocolError(f"meta must be a mapping, not {type(meta).__name__}")
    # Fast path: the usual flat meta of strings and numbers needs only a shallow copy.
    for key, item in meta.items():
        if type(key) is not str or type(item) not in _SCALARS:
            return _copy_object(meta, "meta", 0)
    return dict(meta)


def _copy_object(value: Mapping[object, object], path: str, depth: int) -> dict[str, JSONValue]:
    if depth >= MAX_DEPTH:
        raise LocalProtocolError(f"{path} nests deeper than {MAX_DEPTH} levels")
    result: dict[str, JSONValue] = {}
    for key, item in value.items():
        if type(key) is not str:
            raise LocalProtocolError(f"{path} keys must be str, found {key!r}")
        if type(item) in _SCALARS:
            result[key] = item  # type: ignore[assignment]
        else:
            result[key] = _copy_value(item, f"{path}[{key!r}]", depth + 1)
    return result


def _copy_value(value: object, path: str, depth: int) -> JSONValue:
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LocalProtocolError(f"{path} must be a finite number, not {value!r}")
        return value
    if isinstance(value, Mapping):
        return _copy_object(value, path, depth)
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise LocalProtocolError(f"{path} nests deeper than {MAX_DEPTH} levels")
        return [_copy_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise LocalProtocolError(f"{path} is not JSON-compatible: {type(value).__name__}")
