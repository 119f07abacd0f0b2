from hypothesis import given, settings, strategies as st

from fluidml_tvm.memory.plan import Interval, live_set_peak
from fluidml_tvm.memory.planners import PLANNERS, best_arena, get_planner, linear

import pytest

intervals = st.lists(
    st.tuples(st.integers(1, 64), st.integers(0, 30), st.integers(0, 10)).map(
        lambda t: (t[0] * 64, t[1], t[1] + t[2])
    ),
    min_size=1, max_size=40,
).map(lambda xs: [Interval(f"t{i}", n, s, e) for i, (n, s, e) in enumerate(xs)])


def assert_valid(plan, ivs):
    by_name = {iv.name: iv for iv in ivs}
    assert set(plan.placement) == set(by_name)
    for a in ivs:
        sa, oa = plan.placement[a.name]
        assert oa + a.nbytes <= plan.storages[sa]
        for b in ivs:
            if a.name >= b.name or not a.overlaps(b):
                continue
            sb, ob = plan.placement[b.name]
            assert sa != sb or oa + a.nbytes <= ob or ob + b.nbytes <= oa, (a, b)


@settings(max_examples=150, deadline=None)
@given(intervals)
def test_every_planner_gives_a_valid_plan(ivs):
    for name, planner in PLANNERS.items():
        plan = planner(ivs)
        assert_valid(plan, ivs)
        if name != "shared_buffers":
            assert len(plan.storages) == 1
            assert plan.total_bytes >= live_set_peak(ivs)


@settings(max_examples=100, deadline=None)
@given(intervals)
def test_best_is_no_worse_than_each_heuristic_and_linear_is_the_sum(ivs):
    best = best_arena(ivs).total_bytes
    for name in ("greedy_by_size", "greedy_by_start", "greedy_by_breadth"):
        assert best <= PLANNERS[name](ivs).total_bytes
    assert linear(ivs).total_bytes == sum(iv.nbytes for iv in ivs)


def test_disjoint_lifetimes_share_the_same_bytes():
    ivs = [Interval("a", 128, 0, 1), Interval("b", 128, 2, 3), Interval("c", 64, 1, 2)]
    plan = best_arena(ivs)
    assert plan.total_bytes == live_set_peak(ivs) == 192


def test_unknown_planner_is_named():
    with pytest.raises(ValueError, match="unknown memory planner 'nope'"):
        get_planner("nope")
