"""Memory planners: functions from intervals to a MemoryPlan.

``arena`` planners give every buffer an offset in one storage (CPU, CUDA);
``shared_buffers`` reuses whole storages, for devices that cannot offset a
pointer on the host (OpenCL).  ``PLANNERS`` is the one place that names them.
"""

from __future__ import annotations

import random

import numpy as np

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
    n = len(ordered)
    starts = np.fromiter((iv.start for iv in ordered), np.int64, n)
    ends = np.fromiter((iv.end for iv in ordered), np.int64, n)
    sizes = np.fromiter((iv.nbytes for iv in ordered), np.int64, n)
    offsets = np.zeros(n, np.int64)
    placement, top = {}, 0
    for i, iv in enumerate(ordered):
        # Already-placed buffers live at the same time, by offset.
        live = np.flatnonzero((starts[:i] <= iv.end) & (ends[:i] >= iv.start))
        live = live[np.argsort(offsets[live], kind="stable")]
        best, best_gap, cursor = None, None, 0
        for j in live.tolist():
            gap = int(offsets[j]) - cursor
            if gap >= iv.nbytes and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, int(offsets[j] + sizes[j]))
        offsets[i] = cursor if best is None else best
        placement[iv.name] = (0, int(offsets[i]))
        top = max(top, int(offsets[i]) + iv.nbytes)
    return MemoryPlan([top], placement, name)


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


def best_arena(intervals, effort: int = 20000, seed: int = 0) -> MemoryPlan:
    """Every arena heuristic, then a randomized search until the live-set bound is met.

    XLA keeps the better of two orders; here, when no heuristic reaches the
    bound, best fit also runs on sizes jittered by up to +-50% and on random
    orders, alternately (a cheap way out of the fragmentation one fixed order
    gets stuck in).  ``effort`` bounds the work: about
    ``effort / len(intervals)`` extra runs, with a fixed seed, so plans are
    reproducible.
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
    return MemoryPlan([s for s, _ in storages], placement, "shared_buffers")


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
