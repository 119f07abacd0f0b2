"""Memory planners: functions from intervals to a MemoryPlan.

``arena`` planners give every buffer an offset in one storage (CPU, CUDA);
``shared_buffers`` reuses whole storages, for devices that cannot offset a
pointer on the host (OpenCL).  ``PLANNERS`` is the one place that names them.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from . import exact
from .plan import Interval, MemoryPlan, live_set_peak


def linear(intervals) -> MemoryPlan:
    """No reuse: each buffer after the previous one (FluidML's 'linear' baseline)."""
    placement, top = {}, 0
    for iv in intervals:
        placement[iv.name] = (0, top)
        top += iv.nbytes
    return MemoryPlan([top], placement, "linear")


def best_fit(intervals, order_key, name: str) -> MemoryPlan:
    """Place buffers in ``order_key`` order, each in the tightest gap that fits.

    A gap is free address space among already-placed buffers whose lifetimes
    overlap this one; without a fitting gap the buffer goes on top of them.
    """
    ordered = sorted(intervals, key=order_key)
    neighbours = overlapping(ordered)
    offsets = [0] * len(ordered)
    tops = [0] * len(ordered)
    placed = [False] * len(ordered)
    placement, top = {}, 0
    for i, iv in enumerate(ordered):
        below = sorted((offsets[j], tops[j]) for j in neighbours[i] if placed[j])
        best, best_gap, cursor = None, None, 0
        for offset, end in below:
            gap = offset - cursor
            if gap >= iv.nbytes and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, end)
        offsets[i] = cursor if best is None else best
        tops[i] = offsets[i] + iv.nbytes
        placed[i] = True
        placement[iv.name] = (0, offsets[i])
        top = max(top, tops[i])
    return MemoryPlan([top], placement, name)


def overlapping(intervals) -> list:
    """For each interval, the indices of the others live at a common step (a sweep, not all pairs)."""
    n = len(intervals)
    starts = np.fromiter((iv.start for iv in intervals), np.int64, n)
    ends = np.fromiter((iv.end for iv in intervals), np.int64, n)
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    # In start order, i overlaps exactly the later intervals that start before it ends.
    first = np.arange(1, n + 1)
    count = np.maximum(np.searchsorted(s, e, side="right") - first, 0)
    src = np.repeat(np.arange(n), count)
    dst = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count) + np.repeat(first, count)
    a, b = order[src], order[dst]
    pairs = np.concatenate((a, b)), np.concatenate((b, a))
    by = np.argsort(pairs[0], kind="stable")
    bounds = np.searchsorted(pairs[0][by], np.arange(n + 1))
    other = pairs[1][by].tolist()
    return [other[bounds[i]:bounds[i + 1]] for i in range(n)]


def greedy_by_size(intervals) -> MemoryPlan:
    """TFLite / FluidML: largest first, best fit."""
    return best_fit(intervals, lambda iv: (-iv.nbytes, iv.start, iv.name), "greedy_by_size")


def greedy_by_start(intervals) -> MemoryPlan:
    """XLA's other order: by first use, larger first on ties."""
    return best_fit(intervals, lambda iv: (iv.start, -iv.nbytes, iv.name), "greedy_by_start")


def greedy_by_duration(intervals) -> MemoryPlan:
    """Long-lived buffers first: they fragment the arena least at the bottom."""
    return best_fit(intervals, lambda iv: (iv.start - iv.end, -iv.nbytes, iv.start, iv.name),
                    "greedy_by_duration")


def greedy_by_area(intervals) -> MemoryPlan:
    """Largest bytes x lifetime first."""
    return best_fit(intervals, lambda iv: (-iv.nbytes * (iv.end - iv.start + 1), iv.start, iv.name),
                    "greedy_by_area")


def greedy_by_breadth(intervals) -> MemoryPlan:
    """TFLite's greedy-by-breadth: buffers of the fullest steps first."""
    # Live totals between consecutive lifetime boundaries (time is sparse).
    points = sorted({iv.start for iv in intervals} | {iv.end + 1 for iv in intervals})
    index = {p: i for i, p in enumerate(points)}
    delta = [0] * (len(points) + 1)
    for iv in intervals:
        delta[index[iv.start]] += iv.nbytes
        delta[index[iv.end + 1]] -= iv.nbytes
    live, running = [], 0
    for d in delta[:-1]:
        running += d
        live.append(running)
    # A buffer inherits the fullest moment it is live at.
    weight = {iv.name: max(live[index[iv.start]:index[iv.end + 1]]) for iv in intervals}
    return best_fit(intervals, lambda iv: (-weight[iv.name], -iv.nbytes, iv.start, iv.name),
                    "greedy_by_breadth")


def best_arena(intervals, effort: int = 20000, seed: int = 0, solve_seconds: float = 0.0) -> MemoryPlan:
    """Every arena heuristic, a randomized search, then the exact solver, until the live-set bound is met.

    XLA keeps the better of two orders; here, when no heuristic reaches the
    bound, best fit also runs on sizes jittered by up to +-50% and on random
    orders, alternately (a cheap way out of the fragmentation one fixed order
    gets stuck in).  ``effort`` bounds that work: about
    ``effort / len(intervals)`` extra runs, with a fixed seed.  If the bound is
    still missed, :func:`~fluidml_tvm.memory.exact.solve` searches for up to
    ``solve_seconds`` from the best plan so far.  The plan's ``lower_bound``
    says what is proved: the live-set bound, or what the solver proved above it.
    """
    intervals = list(intervals)
    best = min((p(intervals) for p in HEURISTICS), key=lambda p: (p.total_bytes, p.strategy))
    bound = live_set_peak(intervals)
    rng = random.Random(seed)
    for i in range(effort // max(len(intervals), 1)):
        if best.total_bytes <= bound:
            break
        if i % 2:
            key = {iv.name: -iv.nbytes * rng.uniform(0.5, 1.5) for iv in intervals}
        else:
            key = {iv.name: rng.random() for iv in intervals}
        plan = best_fit(intervals, lambda iv: (key[iv.name], iv.name), "randomized_best_fit")
        if plan.total_bytes < best.total_bytes:
            best = plan
    best = replace(best, lower_bound=bound)
    if best.total_bytes > bound and solve_seconds > 0:
        best = exact.solve(intervals, solve_seconds, best)
    return best


def shared_buffers(intervals) -> MemoryPlan:
    """Offset-free reuse: buffers share whole storages; a storage is as big as its largest.

    Largest first; each buffer takes the smallest storage that is free for its
    whole lifetime and big enough, else grows the largest free one, else a new one.
    """
    storages: list = []  # [nbytes, [intervals]]
    placement = {}
    for iv in sorted(intervals, key=lambda iv: (-iv.nbytes, iv.start, iv.name)):
        free = [i for i, (_, users) in enumerate(storages) if not any(iv.overlaps(u) for u in users)]
        fits = [i for i in free if storages[i][0] >= iv.nbytes]
        if fits:
            idx = min(fits, key=lambda i: storages[i][0])
        elif free:
            idx = max(free, key=lambda i: storages[i][0])
            storages[idx][0] = iv.nbytes
        else:
            storages.append([iv.nbytes, []])
            idx = len(storages) - 1
        storages[idx][1].append(iv)
        placement[iv.name] = (idx, 0)
    return MemoryPlan([s for s, _ in storages], placement, "shared_buffers", live_set_peak(intervals))


HEURISTICS = (greedy_by_size, greedy_by_start, greedy_by_breadth, greedy_by_duration, greedy_by_area)

PLANNERS = {
    "best": best_arena,
    "greedy_by_duration": greedy_by_duration,
    "greedy_by_area": greedy_by_area,
    "greedy_by_size": greedy_by_size,
    "greedy_by_start": greedy_by_start,
    "greedy_by_breadth": greedy_by_breadth,
    "linear": linear,
    "shared_buffers": shared_buffers,
}


def get_planner(name: str):
    try:
        return PLANNERS[name]
    except KeyError:
        raise ValueError(f"unknown memory planner {name!r}; choose one of {sorted(PLANNERS)}") from None


__all__ = ["Interval", "MemoryPlan", "PLANNERS", "get_planner"] + list(PLANNERS)
