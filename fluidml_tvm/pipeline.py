"""The complete Relax pipeline: TVM's default for the target, with FluidML planning in place."""

from __future__ import annotations

import tvm
from tvm import relax

from .targets import resolve_target
from .transform import CheckIndices, ExpandIntegerPower, FluidMLPlan, FoldLayoutKernels, PackWeights, ScheduleKernels
from .tuning import ApplyTuningDatabase
from .tuning.layout_costs import KernelCosts, LayoutCostDatabase

# The order the stages run in.
STAGES = ("pack", "fuse", "tuned", "schedule", "plan", "lower", "finalize")


def stages(target, *, kernels: bool = True, fast_math: bool = True, database=None, measure: bool = False,
           index_checks: bool = True, **plan_options) -> dict:
    """TVM's default pipeline for ``target`` cut into its stages, FluidML's passes between them.

    ``pack`` makes every gather check its indices (:class:`CheckIndices`), then
    re-lays matmul/conv weights out (while the constants and their
    transposes are still visible), in the layouts the layout planner picks
    from the measured costs in ``database`` (a directory) and ``schedules/``;
    ``fuse`` is TVM's dispatch, legalization, constant folding (which folds
    the re-layouts) and fusion, where
    FoldLayoutKernels merges copy kernels (attention's head split and merge)
    into the kernel that writes or reads their tensor; ``tuned`` applies
    a MetaSchedule database (``database``: an ``ms.Database`` or a directory;
    default: the one shipped in ``schedules/`` for the target, if any);
    ``schedule`` gives every kernel still unscheduled a default schedule; ``plan`` is
    FluidMLPlan; ``lower`` and ``finalize`` are TVM's own, whose
    StaticPlanBlockMemory then only sees what FluidML left to it.

    ``measure`` times the kernels a layout decision needs that have no record
    yet, and appends the records to ``database`` (what ``fluidml-tvm tune
    --packed`` does); ``kernels=False`` leaves layouts and kernels as TVM makes them;
    ``fast_math`` swaps exp/erf/tanh for TVM's fast approximations (relative
    error ~1e-6); ``index_checks=False`` leaves gathers unchecked (:class:`CheckIndices`
    makes an out-of-range index raise instead of reading out of bounds);
    ``plan_options`` go to :class:`FluidMLPlan`.
    """
    target = resolve_target(target)
    pipe = relax.pipeline
    costs = LayoutCostDatabase.for_build(database)
    pack = [ExpandIntegerPower()] + ([relax.transform.FastMathTransform()] if fast_math else [])
    return {
        # CheckIndices first: export lifts weight-only values (the importer's index extents) after "pack"
        "pack": ([CheckIndices()] if index_checks else []) + (pack + [PackWeights(target, costs)] if kernels else []),
        "fuse": pipe.library_dispatch_passes(target)
        + _legalize_passes(target, KernelCosts(costs, target, measure) if kernels else None),
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


def _legalize_passes(target, fold_costs) -> list:
    """TVM's legalize stage; with ``fold_costs``, FoldLayoutKernels (deciding with them) before FuseTIR."""
    passes = list(relax.pipeline.legalize_passes(target))
    if fold_costs is not None:
        at = next(i for i, p in enumerate(passes) if p.info.name == "FuseTIR")
        passes.insert(at, FoldLayoutKernels(target=target, costs=fold_costs))
    return passes


def _dataflow_lower_passes(target):
    try:
        return relax.pipeline.dataflow_lower_passes(target)
    except AttributeError:
        # TVM 0.27's cpu_generic/__init__.py does not re-export this stage; its module has it.
        from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

        return cpu_pipeline.dataflow_lower_passes(target)
