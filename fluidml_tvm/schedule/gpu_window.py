"""A GPU rule for kernels that reduce a small window per output: depthwise and grouped conv2d, pooling.

dlight's reduction rules give such a kernel a thread block per output whose
threads split a window of 9 elements (most idle); its Fallback gives one thread
per output, reading every input pixel several times from memory.  Here each
thread computes ``outputs`` neighbouring outputs of a row in registers, the
window loops unrolled, so the input pixels the neighbours share are loaded once.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

# Larger windows are real reductions (matmul, softmax, norms): dlight's rules split them across threads.
MAX_WINDOW = 64


class WindowReduction(GPUScheduleRule):
    """One reduction block over at most ``MAX_WINDOW`` elements; ``outputs`` per thread along the last axis."""

    def __init__(self, outputs: int = 4, threads: int = 64):
        self.outputs = outputs
        self.threads = threads

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = try_inline(sch, infos)
        reductions = [b for b in infos if b.is_reduction()]
        if len(reductions) != 1 or len(infos) > 2:
            return None
        block = reductions[0].block_rv
        kinds = reductions[0].dom_kind()
        loops = sch.get_loops(block)
        if "O" in kinds or len(loops) != len(kinds):
            return None
        s_loops = [lp for lp, k in zip(loops, kinds) if k == "S"]
        r_loops = [lp for lp, k in zip(loops, kinds) if k == "R"]
        extents = [sch.get(lp).extent for lp in r_loops]
        if len(s_loops) < 2 or not r_loops or not all(isinstance(e, tirx.IntImm) for e in extents):
            return None
        window = 1
        for e in extents:
            window *= int(e)
        if window > MAX_WINDOW:
            return None
        epilogue = [b.block_rv for b in infos if not b.is_reduction()]
        sch.reorder(*s_loops, *r_loops)
        outer, inner = sch.split(s_loops[-1], factors=[None, self.outputs])
        bx, tx = sch.split(sch.fuse(*s_loops[:-1], outer), factors=[None, self.threads])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.reorder(tx, *r_loops, inner)  # the window outside: each loaded pixel serves the row's outputs
        store = sch.cache_write(block, 0, "local")  # the outputs accumulate in registers
        for consumer in epilogue:
            sch.reverse_compute_inline(consumer)  # bias and activation applied as they are stored
        sch.reverse_compute_at(store, tx)
        sch.decompose_reduction(block, r_loops[0])
        for lp in (*r_loops, inner):
            sch.unroll(lp)
        return sch
