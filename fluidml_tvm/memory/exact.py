"""The exact offset solver: the smallest arena for fixed lifetimes, proved, or the gap to the bound.

The buffers' lifetimes are fixed; only their offsets are chosen.  Any plan
can be pushed down until every buffer rests on another or on offset 0, and
then be built in order of offset.  So the search builds plans bottom-up over
a skyline (the top of what is placed, per time section): at the lowest live
section it either puts a buffer there whose whole lifetime sits at that
height, or declares the space wasted and raises the section to the next
height a buffer could reach.  Every plan is reachable that way, so a search
that ends without a plan proves that none fits the capacity.

Pruning: a section's height plus the bytes of the unplaced buffers live in it
must fit the capacity (so in an instance with no slack any waste fails at
once); identical buffers are placed in one order only; positions already
refuted are remembered.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
from dataclasses import replace

import numpy as np

from .plan import MemoryPlan, live_set_peak


class _OutOfTime(Exception):
    pass


class _Restart(Exception):
    pass


def _luby(i: int) -> int:
    """The i-th term (from 1) of the Luby sequence 1 1 2 1 1 2 4 1 1 2 ..."""
    k = 1
    while (1 << k) - 1 < i:
        k += 1
    return 1 << (k - 1) if i == (1 << k) - 1 else _luby(i - (1 << (k - 1)) + 1)


class _Skyline:
    RESTART_NODES = 100
    SHUFFLE = 0.2
    ORDER = staticmethod(lambda self, j: (self.lo[j] - self.hi[j], -int(self.size[j]), j))
    """The search state over one set of intervals; ``fits(capacity)`` decides one capacity."""

    def __init__(self, intervals):
        self.intervals = [iv for iv in intervals if iv.nbytes > 0]
        points = sorted({iv.start for iv in self.intervals} | {iv.end + 1 for iv in self.intervals})
        index = {p: i for i, p in enumerate(points)}
        n = len(self.intervals)
        self.sections = max(len(points) - 1, 0)
        self.lo = [index[iv.start] for iv in self.intervals]
        self.hi = [index[iv.end + 1] for iv in self.intervals]
        self.size = np.array([iv.nbytes for iv in self.intervals], np.int64)
        # Identical buffers (same bytes and lifetime) are interchangeable: one group, one order.
        keys: dict = {}
        self.group = [keys.setdefault((self.lo[j], self.hi[j], int(self.size[j])), len(keys)) for j in range(n)]
        # The buffers whose lifetime begins at each section, longest and then largest first:
        # they close the most of the lowest gap.
        self.starting = [[] for _ in range(self.sections)]
        self.ending = [[] for _ in range(self.sections)]
        for j in sorted(range(n), key=lambda j: self.ORDER(self, j)):
            self.starting[self.lo[j]].append(j)
            self.ending[self.hi[j] - 1].append(j)

    def fits(self, capacity: int, deadline: float):
        """Offsets for every interval within ``capacity``, or None when none exist.

        Raises _OutOfTime past ``deadline``.
        """
        n, big = len(self.intervals), np.iinfo(np.int64).max // 4
        self.capacity, self.deadline, self.nodes = capacity, deadline, 0
        self.floor = np.zeros(self.sections, np.int64)
        self.load = np.zeros(self.sections + 1, np.int64)  # bytes of unplaced buffers per section
        self.count = np.zeros(self.sections + 1, np.int64)
        np.add.at(self.load, self.lo, self.size)
        np.subtract.at(self.load, self.hi, self.size)
        np.add.at(self.count, self.lo, 1)
        np.subtract.at(self.count, self.hi, 1)
        self.load, self.count = np.cumsum(self.load)[:-1], np.cumsum(self.count)[:-1]
        if n and int(self.load.max()) > capacity:
            return None
        initial = self.floor.copy(), self.load.copy(), self.count.copy()
        self.refuted, self.big = set(), big
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * n + 4 * self.sections + 1000))
        # Restarts (node limits growing as the Luby sequence) with ties broken at random: one
        # early wrong turn otherwise costs the whole budget.  What a finished subtree refuted
        # stays refuted, and the limits grow without bound, so the search stays complete.
        self.rng = random.Random(0)
        for attempt in itertools.count():
            self.floor, self.load, self.count = (a.copy() for a in initial)
            self.placed = np.zeros(n, bool)
            self.offset = np.zeros(n, np.int64)
            self.left, self.mask, self.shuffle = n, 0, attempt > 0
            self.limit = self.nodes + self.RESTART_NODES * _luby(attempt + 1)
            try:
                return self.offset.copy() if self._search() else None
            except _Restart:
                continue

    def _search(self) -> bool:
        self.nodes += 1
        if not self.nodes & 255 and time.monotonic() > self.deadline:
            raise _OutOfTime
        if self.nodes > self.limit:
            raise _Restart
        if not self.left:
            return True
        key = (self.mask, self.floor.tobytes())
        if key in self.refuted:
            return False
        choice = self._most_constrained_valley()
        if choice is not None:
            t, h, candidates, raised = choice
            if self._branch(t, h, candidates, raised):
                return True
        if len(self.refuted) < 2_000_000:
            self.refuted.add(key)
        return False

    def _most_constrained_valley(self):
        """The side of a valley with the fewest ways to fill it: (section, height, buffers, raised height).

        A valley is a run of live sections at one height with higher (or dead)
        sections on both sides.  Whatever sits on its floor lies inside it, so
        its first section is covered either by a buffer that begins there or
        by waste (and symmetrically its last one).  None: a valley cannot be filled.
        """
        floor, live = self.floor, self.count > 0
        level = np.where(live, floor, -1)
        change = np.flatnonzero(level[1:] != level[:-1]) + 1
        first = np.concatenate(([0], change))
        last = np.concatenate((change, [self.sections])) - 1
        height = level[first].tolist()
        first, last = first.tolist(), last.tolist()
        slack = (self.capacity - floor - self.load).tolist()
        placed, group, lo, hi = self.placed, self.group, self.lo, self.hi
        runs = len(height)
        best, smallest = None, None
        for k in range(runs):
            h = height[k]
            if h < 0:
                continue
            t, r = first[k], last[k]
            before = height[k - 1] if k else -1
            after = height[k + 1] if k + 1 < runs else -1
            left_wall, right_wall = before < 0 or before > h, after < 0 or after > h
            if not (left_wall or right_wall):
                continue
            valley = left_wall and right_wall
            # How far a buffer resting at h can reach: over live sections no higher than h.
            reach_lo, reach_hi = t, r
            if not valley:
                i = k
                while i > 0 and 0 <= height[i - 1] <= h:
                    i -= 1
                reach_lo = first[i]
                i = k
                while i + 1 < runs and 0 <= height[i + 1] <= h:
                    i += 1
                reach_hi = last[i]
            elif not self._tileable(t, r, slack):
                return None
            if valley:
                walls = [w for w in (before, after) if w >= 0]
                raised = min(walls + [h + self.smallest_left()])
            # A corner (a wall beside the floor): what covers it rests on the floor and ends at the
            # wall, or wastes space there.  With no slack and nothing that fits, nothing ever will.
            corners = [(self.starting, t)] if left_wall else []
            corners += [(self.ending, r)] if right_wall else []
            for side, edge in corners:
                fits, seen = [], set()
                for j in side[edge]:
                    if placed[j] or group[j] in seen or lo[j] < reach_lo or hi[j] - 1 > reach_hi:
                        continue
                    seen.add(group[j])
                    fits.append(j)
                if not fits and slack[edge] <= 0:
                    return None
                if not valley:
                    continue
                if self.shuffle and self.rng.random() < self.SHUFFLE:
                    self.rng.shuffle(fits)
                can_waste = raised + int(self.load[edge]) <= self.capacity
                ways = len(fits) + can_waste
                if ways == 0:
                    return None
                score = (ways, self.rng.random() if self.shuffle else 0)
                if smallest is None or score < smallest:
                    best, smallest = (edge, h, fits, raised if can_waste else None), score
        return best

    def _tileable(self, t: int, r: int, slack) -> bool:
        """Whether unplaced buffers inside the valley ``t..r`` can cover its floor end to end.

        Every section of a valley's floor is covered by a buffer resting on it,
        except where slack allows waste.
        """
        reach = bytearray(r - t + 2)
        reach[0] = 1
        for p in range(t, r + 1):
            if not reach[p - t]:
                continue
            if slack[p] > 0:
                reach[p - t + 1] = 1
            for j in self.starting[p]:
                if not self.placed[j] and self.hi[j] - 1 <= r:
                    reach[self.hi[j] - t] = 1
        return bool(reach[r - t + 1])

    def smallest_left(self) -> int:
        return int(self.size[~self.placed].min())

    def _branch(self, t: int, h: int, candidates, raised) -> bool:
        """Put each candidate on the floor at ``t``; then try the floor at ``t`` wasted up to ``raised``."""
        floor, count, load = self.floor, self.count, self.load
        for j in candidates:
            lo, hi, size = self.lo[j], self.hi[j], int(self.size[j])
            floor[lo:hi] = h + size
            load[lo:hi] -= size
            count[lo:hi] -= 1
            self.placed[j], self.offset[j] = True, h
            self.left -= 1
            self.mask ^= 1 << j
            if self._search():
                return True
            self.mask ^= 1 << j
            self.left += 1
            self.placed[j] = False
            count[lo:hi] += 1
            load[lo:hi] += size
            floor[lo:hi] = h
        if raised is None:
            return False
        # Nothing rests on the floor at t: the next buffer there rests on a wall of the
        # valley or on a buffer placed inside it, at least the smallest unplaced size higher.
        floor[t] = raised
        found = self._search()
        floor[t] = h
        return found


def solve(intervals, seconds: float, incumbent: MemoryPlan) -> MemoryPlan:
    """The smallest arena for ``intervals`` that ``seconds`` of search can find and prove.

    Starts from ``incumbent`` (a valid arena plan of them), tries the
    live-set bound first, then halves the interval between the proved bound
    and the best plan.  Stops when they meet (optimal) or the time is spent;
    the plan's ``lower_bound`` is what was proved.
    """
    began = time.monotonic()
    intervals = list(intervals)
    best = incumbent
    bound = live_set_peak(intervals)
    unit = math.gcd(*[iv.nbytes for iv in intervals if iv.nbytes]) or 1
    search = _Skyline(intervals)
    capacity = bound
    while best.total_bytes > bound:
        try:
            offsets = search.fits(capacity, began + seconds)
        except _OutOfTime:
            break
        if offsets is None:
            # Every offset in a canonical plan is a sum of sizes, so the top is a multiple of the unit.
            bound = capacity + unit
        else:
            placement = {iv.name: (0, 0) for iv in intervals}
            placement.update({iv.name: (0, int(o)) for iv, o in zip(search.intervals, offsets)})
            top = max((int(o) + iv.nbytes for iv, o in zip(search.intervals, offsets)), default=0)
            best = MemoryPlan([top], placement, "exact")
        capacity = bound + (best.total_bytes - bound) // unit // 2 * unit
    return replace(best, lower_bound=bound)
