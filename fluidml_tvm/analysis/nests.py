"""The root-level loop nests of a PrimFunc, and which of them touch each buffer.

The nests under a kernel's root block run one after another, so a buffer is
live inside a call only from the first nest that touches it to the last: a
finer clock than the call itself, on which inputs die and outputs and scratch
are born part-way through a kernel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tvm import s_tir, tirx

# Kernel time: binding step * SLOTS + nest index (later nests share the last slot).
SLOTS = 1024


@dataclass(frozen=True)
class KernelNests:
    """Child blocks of the root block, in program order, with the nest each runs in."""

    blocks: tuple
    nest: tuple  # nest index of each block
    spans: dict  # buffer var -> (first, last) nest touching it

    def slots(self, buf):
        """``(first, last)`` nest touching ``buf``, or None when no block touches it."""
        return self.spans.get(buf)


def kernel_nests(func: tirx.PrimFunc) -> KernelNests | None:
    """None when the function has no schedulable root block to read."""
    return _kernel_nests(func)


@functools.lru_cache(maxsize=4096)
def _kernel_nests(func):
    try:
        sch = s_tir.Schedule(func)
        rvs = sch.get_child_blocks(sch.get_sblock("root"))
    except (RuntimeError, ValueError, AttributeError):
        return None
    blocks, nest, outers = [], [], []
    for rv in rvs:
        loops = sch.get_loops(rv)
        block = sch.get(rv)
        outer = sch.get(loops[0]) if loops else block
        idx = next((i for i, o in enumerate(outers) if o.same_as(outer)), None)
        if idx is None:
            outers.append(outer)
            idx = len(outers) - 1
        blocks.append(block)
        nest.append(min(idx, SLOTS - 1))
    spans: dict = {}
    for block, k in zip(blocks, nest):
        for region in list(block.reads) + list(block.writes):
            first, last = spans.get(region.source, (k, k))
            spans[region.source] = (min(first, k), max(last, k))
    return KernelNests(tuple(blocks), tuple(nest), spans)


@functools.lru_cache(maxsize=4096)
def param_slots(func: tirx.PrimFunc) -> tuple:
    """Per parameter of ``func``: ``(first, last)`` nest that touches it, or None."""
    nests = kernel_nests(func)
    if nests is None:
        return tuple(None for _ in func.params)
    return tuple(nests.slots(p) if isinstance(p.ty, tirx.BufferType) else None for p in func.params)
