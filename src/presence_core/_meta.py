"""Presence metadata: JSON-compatible mappings, validated, copied and frozen on the way in.

A meta is stored as a private deep copy (:func:`copy_meta`), so a caller who mutates their dict
afterwards cannot change replicated state behind the core's back. What queries and events hand
out is *read-only*: :attr:`Entry.meta <presence_core.Entry.meta>` is a :class:`FrozenDict` made
from the stored copy on each read, whose nested objects and arrays are the stored
:class:`FrozenDict` and :class:`FrozenList` themselves. So
``tracker.presences(topic)["k"]["metas"][0]["x"] = 1`` raises :class:`ReadOnlyError` instead of
silently changing what this replica stores and later sends (it would only change a copy, but
silently doing nothing is no better).

Why the top level is copied on each read rather than stored frozen: the garbage collector never
stops walking a ``dict`` subclass, but leaves alone a plain ``dict`` of strings and numbers. A
stored frozen meta doubled the objects each full collection walks per presence; a shallow copy of
a meta costs about 0.1 microsecond, paid only by whoever reads it.

The frozen types are ``dict`` and ``list`` subclasses with ``__slots__ = ()``, so they cost exactly
the memory of a ``dict`` or ``list``, compare equal to plain ones, print like them, and the C JSON
encoder writes them like them. Only the mutating methods are refused. What copying gives:

* ``dict(meta)``, ``meta.copy()``, ``copy.copy(meta)``, ``meta | other``: a plain, shallow copy
  (nested values are still frozen);
* ``copy.deepcopy(meta)`` and :func:`thaw_meta`: a plain, mutable deep copy: the one reason to
  copy a read-only value is to change the copy (:meth:`Tracker.update
  <presence_core.Tracker.update>` hands its callback such a copy);
* ``pickle``: the frozen value back, frozen (a round trip must not turn stored state mutable).

The freeze guards against accidents, not against code set on it: ``dict.__setitem__(meta, k, v)``
or ``meta.__init__(...)`` still write into the stored object, and void every guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Union

from ._errors import LocalProtocolError

__all__ = [
    "FrozenDict",
    "FrozenList",
    "JSONValue",
    "Meta",
    "ReadOnlyError",
    "copy_meta",
    "json_fits",
    "thaw_meta",
]

JSONValue = Union[  # noqa: UP007 (a runtime alias with forward references needs Union on 3.10)
    None, bool, int, float, str, Sequence["JSONValue"], Mapping[str, "JSONValue"]
]
"""A value that JSON can carry: null, booleans, numbers, strings, arrays and objects."""

Meta = Mapping[str, JSONValue]
"""A presence's metadata: a JSON object."""

MAX_DEPTH = 32
"""Nesting deeper than this is refused (it protects the recursive copy and the codec)."""

_SCALARS = frozenset({str, int, bool, type(None)})


class ReadOnlyError(LocalProtocolError, TypeError):
    """A stored meta (or an object or array nested in one) was asked to change.

    Metas handed out by queries and events are the replica's stored objects; changing one would
    change replicated state behind the core's back. Copy it first (``copy.deepcopy(meta)`` gives
    a mutable deep copy) and pass the copy to ``track`` or ``update``.

    A :class:`~presence_core.LocalProtocolError` (the caller broke the contract) that is also a
    ``TypeError``, what Python's own immutable containers raise (``tuple``, ``mappingproxy``), so
    code that probes for mutability with ``except TypeError`` keeps working.
    """

    def __init__(self, what: str, operation: str) -> None:
        super().__init__(
            f"cannot {operation}: this {what} belongs to a stored meta, which is read-only "
            "(copy.deepcopy(meta) gives a mutable copy)"
        )


class FrozenDict(dict[str, JSONValue]):
    """A read-only ``dict``: a stored meta, or an object nested in one.

    Reading works as on any ``dict``; every mutating method raises :class:`ReadOnlyError`. It is a
    real ``dict`` subclass with no instance attributes (``__slots__ = ()``): the same memory as a
    ``dict``, equal to a ``dict`` with the same items, written by ``json`` like one.
    """

    __slots__ = ()

    def __setitem__(self, key: str, value: JSONValue) -> NoReturn:
        raise ReadOnlyError("object", f"set {key!r}")

    def __delitem__(self, key: str) -> NoReturn:
        raise ReadOnlyError("object", f"delete {key!r}")

    def __ior__(self, other: Any) -> NoReturn:  # type: ignore[misc]
        raise ReadOnlyError("object", "update it with |=")

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ReadOnlyError("object", "update it")

    def pop(self, *args: Any) -> NoReturn:
        raise ReadOnlyError("object", "pop from it")

    def popitem(self) -> NoReturn:
        raise ReadOnlyError("object", "pop from it")

    def clear(self) -> NoReturn:
        raise ReadOnlyError("object", "clear it")

    def setdefault(self, *args: Any) -> NoReturn:
        raise ReadOnlyError("object", "setdefault on it")

    def __copy__(self) -> dict[str, JSONValue]:
        return dict(self)

    def __deepcopy__(self, memo: object) -> dict[str, JSONValue]:
        return thaw_meta(self)

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, JSONValue]]]:
        # dict's default reduction rebuilds the copy item by item with __setitem__, which refuses.
        return (FrozenDict, (dict(self),))


class FrozenList(list[JSONValue]):
    """A read-only ``list``: an array nested in a stored meta.

    Reading, slicing and concatenating (which give plain lists) work as on any ``list``; every
    mutating method raises :class:`ReadOnlyError`.
    """

    __slots__ = ()

    def __setitem__(self, index: Any, value: Any) -> NoReturn:
        raise ReadOnlyError("array", "set an item")

    def __delitem__(self, index: Any) -> NoReturn:
        raise ReadOnlyError("array", "delete an item")

    def __iadd__(self, other: Any) -> NoReturn:  # type: ignore[misc]
        raise ReadOnlyError("array", "extend it with +=")

    def __imul__(self, other: Any) -> NoReturn:  # type: ignore[misc]
        raise ReadOnlyError("array", "repeat it with *=")

    def append(self, value: Any) -> NoReturn:
        raise ReadOnlyError("array", "append to it")

    def extend(self, values: Any) -> NoReturn:
        raise ReadOnlyError("array", "extend it")

    def insert(self, index: Any, value: Any) -> NoReturn:
        raise ReadOnlyError("array", "insert into it")

    def pop(self, index: Any = -1) -> NoReturn:
        raise ReadOnlyError("array", "pop from it")

    def remove(self, value: Any) -> NoReturn:
        raise ReadOnlyError("array", "remove from it")

    def clear(self) -> NoReturn:
        raise ReadOnlyError("array", "clear it")

    def sort(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ReadOnlyError("array", "sort it")

    def reverse(self) -> NoReturn:
        raise ReadOnlyError("array", "reverse it")

    def __copy__(self) -> list[JSONValue]:
        return list(self)

    def __deepcopy__(self, memo: object) -> list[JSONValue]:
        return [_thaw(item) for item in self]

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[JSONValue]]]:
        # list's default reduction rebuilds the copy with extend, which refuses.
        return (FrozenList, (list(self),))


_CONTAINERS = frozenset({dict, list, FrozenDict, FrozenList})


def copy_meta(
    meta: object, *, phx_ref: str | None = None, phx_ref_prev: str | None = None
) -> dict[str, JSONValue]:
    """Validate ``meta`` as a JSON object and return a private deep copy: the meta as stored.

    The copy is a plain ``dict`` whose nested objects and arrays are frozen (:class:`FrozenDict`,
    :class:`FrozenList`); tuples become lists and any mapping a ``dict``. The top level stays a
    plain ``dict`` because the collector leaves a ``dict`` of scalars alone (a ``dict`` subclass
    it walks at every full collection, a third of the cost of storing a presence); nobody outside
    the core ever holds it: :attr:`Entry.meta <presence_core.Entry.meta>` hands out a frozen copy.

    Args:
        meta: the meta to copy.
        phx_ref: when given, the copy's ``"phx_ref"``.
        phx_ref_prev: when given, the copy's ``"phx_ref_prev"``.

    Raises:
        LocalProtocolError: ``meta`` is not a mapping with ``str`` keys whose values JSON can
            carry (non-finite floats, bytes, sets and other objects are refused), or it nests
            deeper than ``MAX_DEPTH``.
    """
    if type(meta) is dict:
        stored = meta.copy()
    elif isinstance(meta, Mapping):
        stored = dict(meta)
    else:
        raise LocalProtocolError(f"meta must be a mapping, not {type(meta).__name__}")
    # The usual flat meta of strings and numbers needs only that shallow copy.
    for key, item in stored.items():
        if type(key) is not str or type(item) not in _SCALARS:
            stored = _copy_items(meta, "meta", 0)
            break
    if phx_ref is not None:
        stored["phx_ref"] = phx_ref
        if phx_ref_prev is not None:
            stored["phx_ref_prev"] = phx_ref_prev
    return stored


def json_fits(stored: Mapping[str, JSONValue], limit: int) -> bool:
    """True if the flat, all-ASCII meta ``stored`` is surely at most ``limit`` bytes as compact
    JSON; False means it must be written out and measured (nested, non-ASCII, or too close).

    Writing a meta out to measure it was a third of the cost of a track. No JSON character takes
    more than 6 bytes (``\\u001f``), an int within 64 bits takes 20, a float 24: the bound is
    loose, but usual metas are far below any sensible limit.
    """
    size = 2  # the braces
    for key, item in stored.items():
        kind = type(item)
        if kind is str:
            if not item.isascii():  # type: ignore[union-attr]
                return False
            value = 6 * len(item) + 2  # type: ignore[arg-type]
        elif kind is int:
            if not -(1 << 63) <= item < 1 << 63:  # type: ignore[operator]
                return False
            value = 20
        elif kind is float:
            value = 24
        elif item is None or kind is bool:
            value = 5
        else:
            return False
        if not key.isascii():
            return False
        size += 6 * len(key) + 4 + value  # quotes, colon and comma
    return size <= limit


def thaw_meta(meta: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """A plain, mutable deep copy of a meta (frozen or not): ``dict`` and ``list`` all the way down.

    What :meth:`Tracker.update <presence_core.Tracker.update>` gives its callback, and what
    ``copy.deepcopy`` of a frozen meta returns.
    """
    if _CONTAINERS.isdisjoint(map(type, meta.values())):
        return dict(meta)
    return {key: _thaw(item) for key, item in meta.items()}


def _thaw(value: JSONValue) -> JSONValue:
    if isinstance(value, Mapping):
        return thaw_meta(value)
    if isinstance(value, list):
        return [_thaw(item) for item in value]
    return value


def _copy_items(value: Mapping[object, object], path: str, depth: int) -> dict[str, JSONValue]:
    """A plain dict of ``value``'s items, its nested objects and arrays copied and frozen."""
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
        return FrozenDict(_copy_items(value, path, depth))
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise LocalProtocolError(f"{path} nests deeper than {MAX_DEPTH} levels")
        return FrozenList(
            [_copy_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        )
    raise LocalProtocolError(f"{path} is not JSON-compatible: {type(value).__name__}")
