"""The exact offset solver: optimal on instances with a known optimum, exhaustive search as the reference."""

import random
import sys
from pathlib import Path

import pytest

from fluidml_tvm.memory import exact
from fluidml_tvm.memory.plan import Interval, MemoryPlan, conflicts, live_set_peak
from fluidml_tvm.memory.planners import best_arena, greedy_by_size

sys.path.insert(0, str(Path(__file__).parent))
from zero_waste import UNIT, zero_waste  # noqa: E402


def brute_force_optimum(ivs) -> int:
    """The smallest top over every assignment of unit offsets (no canonical-placement argument)."""
    units = [iv.nbytes // UNIT for iv in ivs]
    order = sorted(range(len(ivs)), key=lambda i: -units[i])
    capacity = live_set_peak(ivs) // UNIT
    while True:
        offsets = {}

        def place(k):
            if k == len(order):
                return True
            i = order[k]
            for o in range(capacity - units[i] + 1):
                if all(not ivs[i].overlaps(ivs[j]) or o + units[i] <= offsets[j] or offsets[j] + units[j] <= o
                       for j in offsets):
                    offsets[i] = o
                    if place(k + 1):
                        return True
                    del offsets[i]
            return False

        if place(0):
            return capacity * UNIT
        capacity += 1


def tiny(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 7)
    ivs = []
    for i in range(n):
        start = rng.randint(0, 6)
        ivs.append(Interval(f"t{i}", rng.randint(1, 4) * UNIT, start, start + rng.randint(0, 4)))
    return ivs


@pytest.mark.parametrize("seed", range(60))
def test_matches_exhaustive_search_on_tiny_instances(seed):
    ivs = tiny(seed)
    plan = exact.solve(ivs, 30, greedy_by_size(ivs))
    assert not conflicts(plan, ivs)
    assert plan.optimal
    assert plan.total_bytes == brute_force_optimum(ivs)


def test_generated_instances_tile_their_rectangle():
    ivs, optimum = zero_waste(150, seed=7)
    assert len(ivs) == 150
    steps = max(iv.end for iv in ivs) + 1
    assert sum(iv.nbytes * (iv.end - iv.start + 1) for iv in ivs) == optimum * steps
    assert live_set_peak(ivs) == optimum
    assert all(iv.nbytes % UNIT == 0 for iv in ivs)


# Hard for the heuristics (best is 19-37% above), solved by the search; seeds kept as regression cases.
@pytest.mark.parametrize("n,seed", [(100, 0), (100, 1), (200, 2), (300, 3)])
def test_finds_the_optimum_the_heuristics_miss(n, seed):
    ivs, optimum = zero_waste(n, seed)
    heuristic = best_arena(ivs)
    assert heuristic.total_bytes > optimum * 1.1
    plan = best_arena(ivs, solve_seconds=60)
    assert not conflicts(plan, ivs)
    assert plan.total_bytes == optimum and plan.optimal and plan.strategy == "exact"


def test_out_of_time_keeps_the_best_plan_and_says_how_far_it_may_be():
    ivs, optimum = zero_waste(500, seed=4)
    start = best_arena(ivs)
    plan = exact.solve(ivs, 0.2, start)
    assert not conflicts(plan, ivs)
    assert plan.total_bytes <= start.total_bytes
    assert plan.lower_bound == optimum and not plan.optimal and plan.gap > 0


def test_conflicts_names_overlapping_buffers():
    ivs = [Interval("a", 128, 0, 2), Interval("b", 128, 2, 3)]
    bad = MemoryPlan([192], {"a": (0, 0), "b": (0, 64)})
    assert conflicts(bad, ivs) == ["a and b are live together and share bytes"]
    assert conflicts(MemoryPlan([256], {"a": (0, 0), "b": (0, 128)}), ivs) == []
