"""``json_fits``: the cheap bound that spares a track from writing its meta out as JSON.

It may only ever say "fits" for a meta whose compact JSON really is within the limit (a property
test against ``json.dumps`` over flat metas of every scalar kind, ASCII and not, and nested ones),
and it must say so for the usual small metas, or the tracker would pay for ``json.dumps`` again.
Through the tracker, a meta just over ``max_meta_bytes`` is refused whichever path measured it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import make_tracker
from presence_core import LimitExceeded, LocalProtocolError
from presence_core._meta import json_fits


def _size(meta: dict[str, Any]) -> int:
    return len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
)
metas = st.dictionaries(st.text(max_size=12), scalars | st.lists(scalars, max_size=2), max_size=6)


@given(metas, st.integers(min_value=1, max_value=2000))
def test_fits_is_never_wrong(meta: dict[str, Any], limit: int) -> None:
    if json_fits(meta, limit):
        assert _size(meta) <= limit


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"status": "online", "device": "web", "phx_ref": "F1aB2cD3eF4gH5iJ"},
        {"n": 1, "x": 1.5, "ok": True, "none": None, "big": (1 << 63) - 1, "small": -(1 << 63)},
    ],
)
def test_usual_metas_fit_without_being_written(meta: dict[str, Any]) -> None:
    assert json_fits(meta, 1024)


@pytest.mark.parametrize(
    "meta",
    [
        {"name": "é"},  # not ASCII: measured
        {"é": 1},
        {"n": 1 << 63},  # beyond 64 bits: measured
        {"tags": []},  # nested: measured
        {"x": object()},  # not JSON: left to the writer to refuse
    ],
)
def test_what_the_bound_does_not_cover_is_measured(meta: dict[str, Any]) -> None:
    assert not json_fits(meta, 1 << 20)


def test_a_close_meta_is_measured_not_guessed() -> None:
    meta = {"k": "x" * 10}  # 18 bytes of JSON, bounded by 2 + (6 + 4) + (6 * 10 + 2) = 74
    assert _size(meta) == 18
    assert not json_fits(meta, 73)
    assert json_fits(meta, 74)


@pytest.mark.parametrize("text", ["a", "é", "\U0001f600"])
def test_the_tracker_refuses_a_meta_one_byte_over_the_limit(text: str) -> None:
    meta = {"s": text * 50}
    limit = _size(meta)
    tracker = make_tracker("a", max_meta_bytes=limit)
    tracker.track(conn="c", topic="t", key="k", meta={}, now=0.0)
    ref_size = _size({"phx_ref": "x" * 16}) - _size({})
    fitting = make_tracker("b", max_meta_bytes=limit + ref_size + 1)
    fitting.track(conn="c", topic="t", key="k", meta=meta, now=0.0)
    with pytest.raises(LimitExceeded, match=f"over max_meta_bytes={limit}"):
        tracker.track(conn="c2", topic="t", key="k", meta=meta, now=0.0)


def test_a_lone_surrogate_in_a_meta_is_refused() -> None:
    tracker = make_tracker("a")
    with pytest.raises(LocalProtocolError, match="lone surrogate"):
        tracker.track(conn="c", topic="t", key="k", meta={"s": "\ud800"}, now=0.0)
