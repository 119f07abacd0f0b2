"""Memory planners: functions from intervals to a MemoryPlan.

``arena`` planners give every buffer an offset in one storage (CPU, CUDA);
``shared_buffers`` reuses whole storages, for devices that cannot offset a
pointer on the host (OpenCL).  ``PLANNERS`` is the one place that names them.
"""

from __future__ import annotations

import bisect

from .plan import Interval, MemoryPlan


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
    placed: list = []  # (offset, Interval), kept sorted by offset
    placement, top = {}, 0
    for iv in sorted(intervals, key=order_key):
        best, best_gap, cursor = None, None, 0
        for offset, other in placed:
            if not iv.overlaps(other):
                continue
            gap = offset - cursor
            if gap >= iv.nbytes and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, offset + other.nbytes)
        offset = cursor if best is None else best
        bisect.insort(placed, (offset, iv), key=lambda p: p[0])
        placement[iv.name] = (0, offset)
        top = max(top, offset + iv.nbytes)
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
    live: dict = {}
    for iv in intervals:
        for s in range(iv.start, iv.end + 1):
            live[s] = live.get(s, 0) + iv.nbytes
    # A buffer inherits the fullest step it is live at.
    weight = {iv.name: max(live[s] for s in range(iv.start, iv.end + 1)) for iv in intervals}
    return best_fit(intervals, lambda iv: (-weight[iv.name], -iv.nbytes, iv.start, iv.name),
                    "greedy_by_breadth")


def best_arena(intervals) -> MemoryPlan:
    """Run every arena heuristic and keep the smallest arena (XLA keeps the better of two)."""
    intervals = list(intervals)
    plans = [p(intervals) for p in HEURISTICS]
    return min(plans, key=lambda p: (p.total_bytes, p.strategy))


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
