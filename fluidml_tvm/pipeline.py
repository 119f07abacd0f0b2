"""The complete Relax pipeline: TVM's default for the target, with FluidML planning in place."""

from __future__ import annotations

import tvm
from tvm import relax

from .targets import resolve_target
from .transform import ExpandIntegerPower, FluidMLPlan, PackWeights, ScheduleKernels
from .tuning import ApplyTuningDatabase
from .tuning.layout_costs import LayoutCostDatabase

# The order the stages run in.
STAGES = ("pack", "fuse", "tuned", "schedule", "plan", "lower", "finalize")


def stages(target, *, kernels: bool = True, fast_math: bool = True, database=None, **plan_options) -> dict:
    """TVM's default pipeline for ``target`` cut into its stages, FluidML's passes between them.

    ``pack`` re-lays matmul/conv weights out (while the constants and their
    transposes are still visible), in the layouts the layout planner picks
    from the measured costs in ``database`` (a directory) and ``schedules/``; ``fuse`` is TVM's dispatch, legalization,
    constant folding (which folds the re-layouts) and fusion; ``tuned`` applies
    a MetaSchedule database (``database``: an ``ms.Database`` or a directory;
    default: the one shipped in ``schedules/`` for the target, if any);
    ``schedule`` gives every kernel still unscheduled a default schedule; ``plan`` is
    FluidMLPlan; ``lower`` and ``finalize`` are TVM's own, whose
    StaticPlanBlockMemory then only sees what FluidML left to it.

    ``kernels=False`` leaves layouts and kernels as TVM makes them;
    ``fast_math`` swaps exp/erf/tanh for TVM's fast approximations (relative
    error ~1e-6); ``plan_options`` go to :class:`FluidMLPlan`.
    """
    target = resolve_target(target)
    pipe = relax.pipeline
    pack = [ExpandIntegerPower()] + ([relax.transform.FastMathTransform()] if fast_math else [])
    return {
        "pack": pack + [PackWeights(target, LayoutCostDatabase.for_build(database))] if kernels else [],
        "fuse": pipe.library_dispatch_passes(target) + pipe.legalize_passes(target),
        "tuned": [ApplyTuningDatabase(database)],
        "schedule": [ScheduleKernels(target)] if kernels else [],
        "plan": [FluidMLPlan(**plan_options)],
        "lower": _dataflow_lower_passes(target),
        "finalize": pipe.finalize_passes(target),
    }


def get_pipeline(target, **options) -> tvm.transform.Pass:
    """A pass for ``tvm.compile(mod, target, relax_pipeline=...)``.

    ``options`` as for :func:`stages`.
    """
    target = resolve_target(target)
    parts = stages(target, **options)
    seq = tvm.transform.Sequential([p for name in STAGES for p in parts[name]], name="fluidml_tvm")

    @tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return seq(mod)

    return _pipeline


def _dataflow_lower_passes(target):
    try:
        return relax.pipeline.dataflow_lower_passes(target)
    except AttributeError:
        # TVM 0.27's cpu_generic/__init__.py does not re-export this stage; its module has it.
        from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

        return cpu_pipeline.dataflow_lower_passes(target)
