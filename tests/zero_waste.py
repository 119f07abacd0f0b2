"""Memory-planning instances with a known optimum: a capacity x time rectangle cut with no waste.

Each piece is a buffer (its height in bytes, its width a lifetime); the
pieces tile the rectangle, so the optimal arena is exactly the capacity and
equals the live-set bound.  Cuts are guillotine (one straight cut through a
piece) or pinwheels (five pieces no straight cut separates), and the buffers
are shuffled, so a planner sees neither the cut nor the order.
"""

from __future__ import annotations

import random

from fluidml_tvm.memory.plan import Interval

UNIT = 64  # bytes: sizes are aligned like real tensors


def zero_waste(n: int, seed: int, capacity_units: int = 2048, steps: int | None = None,
               pinwheels: float = 0.3) -> tuple[list, int]:
    """About ``n`` buffers (never more) tiling ``capacity_units * UNIT`` bytes x ``steps``; returns (intervals, optimum)."""
    rng = random.Random(seed)
    steps = steps or 2 * n
    pieces = [(0, 0, steps, capacity_units)]  # (t0, o0, t1, o1), half-open
    while len(pieces) < n:
        splittable = [p for p in pieces if p[2] - p[0] > 1 or p[3] - p[1] > 1]
        if not splittable:
            break
        # Bigger pieces are cut more often, so sizes and lifetimes stay varied but not degenerate.
        piece = rng.choices(splittable, weights=[(p[2] - p[0]) * (p[3] - p[1]) for p in splittable])[0]
        t0, o0, t1, o1 = piece
        if rng.random() < pinwheels and t1 - t0 >= 3 and o1 - o0 >= 3 and len(pieces) + 4 <= n:
            a, b = sorted(rng.sample(range(t0 + 1, t1), 2))
            c, d = sorted(rng.sample(range(o0 + 1, o1), 2))
            new = [(t0, o0, b, c), (b, o0, t1, d), (a, d, t1, o1), (t0, c, a, o1), (a, c, b, d)]
        elif t1 - t0 > 1 and (o1 - o0 == 1 or rng.random() < 0.5):
            cut = rng.randrange(t0 + 1, t1)
            new = [(t0, o0, cut, o1), (cut, o0, t1, o1)]
        else:
            cut = rng.randrange(o0 + 1, o1)
            new = [(t0, o0, t1, cut), (t0, cut, t1, o1)]
        pieces.remove(piece)
        pieces += new
    rng.shuffle(pieces)
    intervals = [Interval(f"b{i}", (o1 - o0) * UNIT, t0, t1 - 1) for i, (t0, o0, t1, o1) in enumerate(pieces)]
    return intervals, capacity_units * UNIT
