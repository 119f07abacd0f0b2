"""The block structure of a PrimFunc as the schedule rules see it."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

SPATIAL, REDUCE = 0, 2  # IterVar kinds


class RuleDoesNotApply(Exception):
    """Raised by a schedule rule that finds, part-way, that a kernel is not its kind."""


@dataclass
class Access:
    """Which block iter vars each index of one buffer access uses."""

    buffer: tirx.Buffer
    index_vars: list  # per dimension: the set of iter vars in its index


def iter_kinds(sch: s_tir.Schedule, block) -> str:
    """``"S"``/``"R"``/``"O"`` per block iter var, e.g. ``"SSSR"`` for a matmul."""
    return "".join({SPATIAL: "S", REDUCE: "R"}.get(int(iv.iter_type), "O") for iv in sch.get(block).iter_vars)


def has_trivial_binding(sch: s_tir.Schedule, block) -> bool:
    """Every block iter is bound to exactly its own loop, in loop order."""
    loops = sch.get_loops(block)
    ivars = sch.get(block).iter_vars
    if len(loops) != len(ivars):
        return False
    for loop, iv in zip(loops, ivars):
        if int(sch.get(loop).extent) != int(iv.dom.extent):
            return False
    return True


def reads(sch: s_tir.Schedule, block) -> list[Access]:
    """The block's read accesses other than of the buffer it writes."""
    blk = sch.get(block)
    written = [w.source for w in blk.writes]
    out = []
    for region in blk.reads:
        if any(region.source.same_as(w) for w in written):
            continue
        out.append(Access(region.source, [_vars(r.min) for r in region.region]))
    return out


def extents(sch: s_tir.Schedule, loops) -> list[int]:
    """Constant extents of ``loops``; RuleDoesNotApply on a symbolic one."""
    out = []
    for loop in loops:
        extent = sch.get(loop).extent
        if not isinstance(extent, tvm.tirx.IntImm):
            raise RuleDoesNotApply(f"symbolic loop extent {extent}")
        out.append(int(extent.value))
    return out


def all_static(sch: s_tir.Schedule, block) -> bool:
    return all(isinstance(sch.get(loop).extent, tvm.tirx.IntImm) for loop in sch.get_loops(block))


def inline_all_but_last(sch: s_tir.Schedule, blocks: list) -> object | None:
    """Inline each spatial block of ``blocks`` into its consumers; return the last (None if no blocks).

    A block that does not inline raises ``ScheduleError``: the rule does not apply.
    """
    if not blocks:
        return None
    for block in blocks[:-1]:
        sch.compute_inline(block)
    return blocks[-1]


def divisor_at_most(n: int, limit: int, multiple_of: int = 1) -> int:
    """The largest divisor of ``n`` that is ``<= limit`` and a multiple of ``multiple_of`` (else 1)."""
    for d in range(min(n, limit), 0, -1):
        if n % d == 0 and d % multiple_of == 0:
            return d
    return 1


def vector_tile(extent: int, lanes: int) -> int:
    """Elements per register-tile row along a vectorized axis: whole vectors, else a power of two >= 4.

    Odd vector widths (14, 7) split into pieces LLVM handles badly (10x slower kernels).
    """
    if extent % lanes == 0:
        return divisor_at_most(extent, 2 * lanes, lanes)
    power = 1
    while extent % (power * 2) == 0 and power * 2 <= lanes:
        power *= 2
    if power >= 4:
        return power
    return extent if extent <= 2 * lanes else divisor_at_most(extent, 2 * lanes)


def _vars(expr) -> frozenset:
    return frozenset(v.name for v in tirx.analysis.undefined_vars(expr, []))


def single_reduction(sch: s_tir.Schedule):
    """``(blocks, kinds, position)`` of the one block with a reduction axis, or None."""
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    kinds = [iter_kinds(sch, b) for b in blocks]
    reductions = [i for i, k in enumerate(kinds) if "R" in k]
    return (blocks, kinds, reductions[0]) if len(reductions) == 1 else None
