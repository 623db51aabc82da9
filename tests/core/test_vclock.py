"""Version vectors, clock sets and cloud compaction (SPEC §4.4 and §7.2).

The cases of Phoenix's ``clock_test.exs``, restated with :class:`ReplicaRef` keys, plus the quirks
the tracker relies on: the size short-cut of :func:`dominates`, the first-argument-only
comparison of :func:`dominates_or_equal`, and Phoenix's compaction rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from presence_core import InvalidArgument
from presence_core._vclock import (
    Clock,
    Context,
    ReplicaRef,
    append_clock,
    compact_cloud,
    dominates,
    dominates_or_equal,
    filter_replicas,
    lowerbound,
    upperbound,
)

A = ReplicaRef("a", 1)
B = ReplicaRef("b", 1)
C = ReplicaRef("c", 1)
D = ReplicaRef("d", 1)

# The three clocks of the upstream clock tests: CLOCK_A knows more than CLOCK_C, and CLOCK_B is
# concurrent with both.
CTX_A: dict[ReplicaRef, int] = {A: 1, B: 2, C: 3}
CTX_B: dict[ReplicaRef, int] = {B: 2, C: 3, D: 1}
CTX_C: dict[ReplicaRef, int] = {A: 1, B: 2}
CLOCK_A: Clock = (A, CTX_A)
CLOCK_B: Clock = (B, CTX_B)
CLOCK_C: Clock = (C, CTX_C)

Bound = Callable[[Context, Context], dict[ReplicaRef, int]]


def ordered(clocks: Iterable[Clock]) -> list[Clock]:
    """A clock set in a canonical order (append_clock promises a set, not an order)."""
    return sorted(clocks, key=lambda clock: clock[0])


def refs(clocks: Iterable[Clock]) -> list[ReplicaRef]:
    return sorted(replica for replica, _ in clocks)


# ---------------------------------------------------------------------------- dominates


def test_a_bigger_clock_dominates_its_prefix() -> None:
    assert dominates(CTX_A, CTX_C)


def test_a_prefix_does_not_dominate_the_bigger_clock() -> None:
    assert not dominates(CTX_C, CTX_A)


def test_concurrent_clocks_do_not_dominate_each_other() -> None:
    assert not dominates(CTX_A, CTX_B)
    assert not dominates(CTX_B, CTX_A)


def test_a_clock_dominates_itself() -> None:
    assert dominates(CTX_A, CTX_A)
    assert dominates({}, {})


def test_dominates_needs_at_least_as_many_replicas() -> None:
    # The size short-cut: a zero entry still counts as an entry.
    assert not dominates({A: 1}, {A: 1, B: 0})
    assert dominates({A: 1, B: 0}, {A: 1})


def test_dominates_treats_a_missing_replica_as_zero_once_sizes_allow_it() -> None:
    # Same size, different keys: B is missing from the left side and counts as 0 >= 0.
    assert dominates({A: 1, C: 0}, {A: 1, B: 0})
    assert not dominates({A: 1, C: 0}, {A: 1, B: 1})


def test_anything_dominates_the_empty_clock() -> None:
    assert dominates(CTX_B, {})
    assert not dominates({}, CTX_B)


# ---------------------------------------------------------------------------- dominates_or_equal


def test_dominates_or_equal_on_two_empty_contexts() -> None:
    assert dominates_or_equal({}, {})


def test_an_empty_context_never_dominates_or_equals_a_non_empty_one() -> None:
    assert not dominates_or_equal({}, {A: 0})
    assert not dominates_or_equal({}, {A: 3})


def test_a_non_empty_context_dominates_or_equals_the_empty_one() -> None:
    assert dominates_or_equal({A: 0}, {})
    assert dominates_or_equal(CTX_A, {})


def test_dominates_or_equal_ignores_replicas_only_the_second_knows() -> None:
    assert dominates_or_equal({A: 1}, {A: 1, B: 5})
    assert dominates_or_equal({A: 2}, {A: 1, B: 5})


def test_dominates_or_equal_compares_every_replica_of_the_first() -> None:
    assert dominates_or_equal(CTX_A, CTX_A)
    assert dominates_or_equal(CTX_A, CTX_C)
    assert not dominates_or_equal({A: 1}, {A: 2})
    # CTX_C's A and B are covered by CTX_A, so only A and B are looked at.
    assert dominates_or_equal(CTX_C, CTX_A)
    # A replica of the first side that the second lacks counts against 0.
    assert dominates_or_equal({A: 1, D: 0}, {A: 1})
    assert not dominates_or_equal({A: 0, B: 1}, {A: 1})


# ---------------------------------------------------------------------------- append_clock


def test_a_clock_below_the_upper_bound_of_the_set_is_not_added() -> None:
    # No single member dominates CLOCK_A, but their upper bound {a:1, b:2, c:3, d:1} does.
    assert ordered(append_clock([CLOCK_B, CLOCK_C], CLOCK_A)) == [CLOCK_B, CLOCK_C]


def test_a_clock_dominated_by_a_member_is_not_added() -> None:
    assert ordered(append_clock([CLOCK_A, CLOCK_B], CLOCK_C)) == [CLOCK_A, CLOCK_B]


def test_appending_a_member_again_changes_nothing() -> None:
    assert ordered(append_clock([CLOCK_A, CLOCK_B], CLOCK_A)) == [CLOCK_A, CLOCK_B]
    assert ordered(append_clock([CLOCK_A, CLOCK_B], CLOCK_B)) == [CLOCK_A, CLOCK_B]


def test_a_concurrent_clock_is_added_and_nothing_is_dropped() -> None:
    assert ordered(append_clock([CLOCK_A, CLOCK_C], CLOCK_B)) == [CLOCK_A, CLOCK_B, CLOCK_C]


def test_the_replicas_of_a_trimmed_set() -> None:
    assert refs(append_clock([CLOCK_B, CLOCK_C], CLOCK_A)) == [B, C]


def test_a_clock_that_dominates_the_whole_set_replaces_it() -> None:
    big: Clock = (D, {A: 5, B: 5, C: 5, D: 5})
    assert append_clock([CLOCK_A, CLOCK_B, CLOCK_C], big) == [big]


def test_a_clock_dominating_some_members_replaces_them() -> None:
    # {a:2, b:2} dominates CLOCK_C but not CLOCK_B: CLOCK_C goes, the newcomer and CLOCK_B stay.
    newer: Clock = (D, {A: 2, B: 2})
    assert ordered(append_clock([CLOCK_B, CLOCK_C], newer)) == [CLOCK_B, newer]


def test_an_empty_context_is_never_added() -> None:
    assert append_clock([CLOCK_A], (D, {})) == [CLOCK_A]
    assert append_clock([], (D, {})) == []


def test_the_first_clock_of_an_empty_set_is_added() -> None:
    assert append_clock([], CLOCK_B) == [CLOCK_B]


def test_append_clock_never_mutates_the_set() -> None:
    clockset = [CLOCK_B, CLOCK_C]
    append_clock(clockset, CLOCK_A)
    append_clock(clockset, (D, {A: 9, B: 9, C: 9, D: 9}))
    assert clockset == [CLOCK_B, CLOCK_C]


# ---------------------------------------------------------------------------- bounds


def test_upperbound_is_the_key_wise_maximum() -> None:
    assert upperbound({A: 1, B: 2, C: 2}, {A: 3, B: 1, D: 2}) == {A: 3, B: 2, C: 2, D: 2}


@pytest.mark.parametrize("bound", [upperbound, lowerbound])
def test_a_bound_with_an_empty_side_is_the_other_side(bound: Bound) -> None:
    other = {A: 3, B: 1, D: 2}
    assert bound({}, other) == other
    assert bound(other, {}) == other
    assert bound({}, {}) == {}


def test_lowerbound_is_the_key_wise_minimum_keeping_one_sided_keys() -> None:
    assert lowerbound({A: 1, B: 2, C: 2}, {A: 3, B: 1, D: 2}) == {A: 1, B: 1, C: 2, D: 2}


def test_bounds_do_not_mutate_their_arguments() -> None:
    left = {A: 1, B: 2}
    right = {A: 3, C: 1}
    upperbound(left, right)
    lowerbound(left, right)
    assert left == {A: 1, B: 2}
    assert right == {A: 3, C: 1}


def test_contexts_may_be_any_mapping_but_must_be_mappings() -> None:
    """Past the fast path for two dicts, any mapping is a context; anything else is refused."""
    frozen = MappingProxyType({A: 2, B: 1})
    assert dominates(frozen, {A: 1}) is True
    assert dominates({A: 3}, frozen) is False
    assert dominates_or_equal(frozen, MappingProxyType({A: 2})) is True
    assert upperbound(frozen, {A: 3, C: 1}) == {A: 3, B: 1, C: 1}
    assert lowerbound({A: 3}, frozen) == {A: 2, B: 1}
    pairs: Any = [(A, 1)]
    with pytest.raises(InvalidArgument, match=r"^b must be a context mapping, not list$"):
        dominates(frozen, pairs)


# ---------------------------------------------------------------------------- filter / replicas


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ([A, B], {A: 1, B: 2}),
        ([A, C], {A: 1, C: 3}),
        ([A, D], {A: 1}),
        ([D], {}),
        ([], {}),
    ],
)
def test_filter_replicas_takes_only_known_keys(
    wanted: list[ReplicaRef], expected: Mapping[ReplicaRef, int]
) -> None:
    assert filter_replicas(CTX_A, wanted) == expected


def test_the_replicas_of_a_clock_are_its_keys() -> None:
    empty: dict[ReplicaRef, int] = {}
    assert sorted(empty) == []
    assert sorted({A: 1}) == [A]
    assert sorted({B: 2, A: 1}) == [A, B]


# ---------------------------------------------------------------------------- compact_cloud


@pytest.mark.parametrize(
    ("base", "cloud", "expected"),
    [
        # Contiguous dots fold into the context, whatever the order of the input.
        (0, [3, 1, 2], (3, set())),
        # Dots beyond a gap stay in the cloud.
        (0, [1, 2, 4], (2, {4})),
        (5, [7, 9], (5, {7, 9})),
        (5, [6, 8], (6, {8})),
        # Dots at or below the context are dropped.
        (5, [3, 4, 5], (5, set())),
        (5, [2, 6], (6, set())),
        # Nothing to fold.
        (4, [], (4, set())),
        # A replica without a context entry starts one at dot 1 ...
        (None, [1, 2, 3], (3, set())),
        (None, [1, 3], (1, {3})),
        # ... and only at dot 1.
        (None, [2, 3], (None, {2, 3})),
        (None, [], (None, set())),
    ],
)
def test_compact_cloud(
    base: int | None, cloud: list[int], expected: tuple[int | None, set[int]]
) -> None:
    assert compact_cloud(base, cloud) == expected


def test_compact_cloud_accepts_any_iterable_and_leaves_it_alone() -> None:
    cloud = frozenset({1, 2, 5})
    assert compact_cloud(0, cloud) == (2, {5})
    assert compact_cloud(0, iter([2, 1])) == (2, set())
    assert cloud == frozenset({1, 2, 5})


# ---------------------------------------------------------------------------- ReplicaRef


def test_replica_ref_is_a_hashable_ordered_value() -> None:
    assert ReplicaRef("a", 1) == A
    assert hash(ReplicaRef("a", 1)) == hash(A)
    assert ReplicaRef("a", 2) != A
    assert sorted([ReplicaRef("b", 0), ReplicaRef("a", 2), ReplicaRef("a", 1)]) == [
        ReplicaRef("a", 1),
        ReplicaRef("a", 2),
        ReplicaRef("b", 0),
    ]
    assert A.name == "a"
    assert A.vsn == 1


def test_replica_ref_repr_is_valid_python() -> None:
    ref = ReplicaRef("node-1", 1700000000)
    assert repr(ref) == "ReplicaRef('node-1', 1700000000)"
    assert eval(repr(ref)) == ref


def test_replica_ref_accepts_vsn_zero() -> None:
    assert ReplicaRef("a", 0).vsn == 0


@pytest.mark.parametrize(
    ("name", "vsn"),
    [
        (1, 1),
        (None, 1),
        (b"a", 1),
        ("a", "1"),
        ("a", 1.0),
        ("a", None),
        # bool is an int subclass, but a vsn of True is a bug, not an incarnation.
        ("a", True),
    ],
)
def test_replica_ref_rejects_wrong_types(name: object, vsn: object) -> None:
    with pytest.raises(InvalidArgument):
        ReplicaRef(name, vsn)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "vsn"), [("", 1), ("a", -1)])
def test_replica_ref_rejects_bad_values(name: str, vsn: int) -> None:
    with pytest.raises(InvalidArgument, match=r"name|vsn"):
        ReplicaRef(name, vsn)
