"""Per-kernel time of a loaded model, from the VM's instrument hook around every call it makes."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelTime:
    """One kernel (or VM builtin): calls and seconds per inference."""

    name: str
    calls: int
    seconds: float


def kernel_times(model, inputs, runs: int = 10) -> list[KernelTime]:
    """Time every call ``model``'s VM makes over ``runs`` inferences (after one warm-up); heaviest first.

    The hook itself costs about a microsecond per call, which the VM builtins
    (allocation, shape checks) show most.
    """
    model(*inputs)
    totals: dict = defaultdict(float)
    calls: dict = defaultdict(int)
    started = []

    def hook(_func, name, before_run, _ret, *_args):
        if before_run:
            started.append(time.perf_counter())
        else:
            totals[name] += time.perf_counter() - started.pop()
            calls[name] += 1
        return 0  # run the call as usual

    model.set_instrument(hook)
    try:
        for _ in range(runs):
            model(*inputs)
    finally:
        model.set_instrument(None)
    rows = [KernelTime(str(n), calls[n] // runs, totals[n] / runs) for n in totals]
    return sorted(rows, key=lambda r: -r.seconds)
