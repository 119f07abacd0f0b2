"""PackWeights: matmuls with a constant weight read it packed as [N/n, K, n]."""

from __future__ import annotations

import tvm
from tvm import relax

from ..analysis.packing import plan_packing
from ..rewrite.pack_matmul import rewrite_packed_matmuls
from ..schedule.machine import Machine


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.PackWeights")
class PackWeights:
    """Give every float32 ``R.matmul`` with a constant weight a packed-weight kernel.

    Place it on the high-level module, after import and before LegalizeOps
    (first in the ``"fuse"`` stage): there ``R.matmul`` and its constant weight
    (and the ``permute_dims`` of ``Gemm(transB=1)``) are still visible, and the
    stage's own LegalizeOps + FoldConstant turn each ``R.layout_transform`` of a
    weight into the packed constant at build time.  After legalization the
    weight's transpose would already be folded into a second copy.

    A weight with other readers (a tied embedding) is not packed; a transposed
    one is read in place by a ``dense`` kernel, so no copy of it is ever made.
    NCHW conv2d weights (``groups == 1``) are packed by output channel.  Only
    CPU (``llvm``) targets are rewritten.

    Parameters
    ----------
    target : tvm.target.Target, optional
        Sets the column block (two vectors of the target's fp32 lanes); default:
        the current target.
    """

    def __init__(self, target=None):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        target = self.target or tvm.target.Target.current(allow_none=True)
        if target is not None and target.kind.name != "llvm":
            return mod  # GPU kernels want other layouts; ScheduleKernels is CPU-only too
        machine = Machine.of(target)
        out = mod
        for gv, func in mod.functions.items():
            if not isinstance(func, relax.Function):
                continue
            decisions = plan_packing(func, machine.lanes)
            if decisions:
                out = rewrite_packed_matmuls(out, gv, decisions)
        return out
