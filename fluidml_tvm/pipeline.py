"""The complete Relax pipeline: TVM's default for the target, with FluidML planning in place."""

from __future__ import annotations

import tvm
from tvm import relax

from .layout.costs import KernelCosts, LayoutCostDatabase
from .options import BuildOptions
from .targets import describe
from .transform import (ApplyTuningDatabase, CheckIndices, ExpandIntegerPower, FluidMLPlan, FoldLayoutKernels, NameFusedCalls,
                        PackWeights,
                        ScheduleGPUKernels, ScheduleKernels)
from .transform.fluidml_plan import dataflow_lower_passes

# The order the stages run in.
STAGES = ("pack", "fuse", "tuned", "schedule", "plan", "lower", "finalize")


def stages(target, options: BuildOptions | None = None, *, measure=None, **keywords) -> dict:
    """TVM's default pipeline for ``target`` cut into its stages, FluidML's passes between them.

    ``pack`` makes every gather check its indices (:class:`CheckIndices`), then
    re-lays matmul/conv weights out (while the constants and their
    transposes are still visible), in the layouts the layout planner picks
    from the measured costs in ``options.layout_records`` and ``schedules/``;
    ``fuse`` is TVM's dispatch, legalization, constant folding (which folds
    the re-layouts) and fusion, where
    FoldLayoutKernels merges copy kernels (attention's head split and merge)
    into the kernel that writes or reads their tensor; ``tuned`` applies
    a MetaSchedule database (``options.tuning_database``; default: the one
    shipped in ``schedules/`` for the target, if any);
    ``schedule`` gives every kernel still unscheduled a default schedule; ``plan`` is
    FluidMLPlan; ``lower`` and ``finalize`` are TVM's own, whose
    StaticPlanBlockMemory then only sees what FluidML left to it.

    ``target`` is a :class:`~fluidml_tvm.targets.TargetDescription` (or
    anything :func:`~fluidml_tvm.targets.describe` takes), handed to every
    pass; ``options`` a :class:`~fluidml_tvm.options.BuildOptions`, or its
    fields as ``keywords`` (``stages(target, kernels=False)``).
    ``measure(kernel) -> seconds`` times the kernels a fold decision
    needs that have no record yet, and their records are appended to
    ``options.layout_records`` (``fluidml-tvm tune --packed`` passes
    :func:`fluidml_tvm.tuning.measure_layouts.kernel_seconds`).
    """
    target = describe(target)
    options = BuildOptions.of(options, **keywords)
    kernels = options.kernels
    pipe = relax.pipeline
    costs = LayoutCostDatabase.for_build(options.layout_records)
    pack = [ExpandIntegerPower()] + ([relax.transform.FastMathTransform()] if options.fast_math else [])
    # A GPU kernel runs only once scheduled (threads bound), so the GPU rules run even with kernels=False.
    schedule = [ScheduleKernels(target)] if kernels else []
    if not target.cpu:
        schedule = [ScheduleGPUKernels(target)]
    with target.target:  # TVM's Adreno passes read the target in scope when they are constructed
        return {
            # CheckIndices first: export lifts weight-only values (the importer's index extents) after "pack"
            "pack": ([CheckIndices(target)] if options.index_checks else []) + pack
            + ([PackWeights(target, costs)] if kernels else []),
            "fuse": pipe.library_dispatch_passes(target.target)
            + _legalize_passes(target, KernelCosts(costs, target, measure) if kernels else None),
            "tuned": [ApplyTuningDatabase(target, options.tuning_database)],
            "schedule": schedule,
            "plan": [FluidMLPlan(target, reorder=options.reorder, planner=options.planner, inplace=options.inplace,
                                 scratch=options.scratch, validate=options.validate,
                                 solve_seconds=options.solve_seconds)],
            **codegen_stages(target),
        }


def codegen_stages(target) -> dict:
    """The stages after the plan, TVM's own: ``"lower"`` (dataflow lowering) and ``"finalize"``."""
    target = describe(target)
    with target.target:
        return {"lower": dataflow_lower_passes(target.target), "finalize": relax.pipeline.finalize_passes(target.target)}


def get_pipeline(target, options: BuildOptions | None = None, **keywords) -> tvm.transform.Pass:
    """A pass for ``tvm.compile(mod, target, relax_pipeline=...)``.

    ``options`` and ``keywords`` as for :func:`stages` (``get_pipeline(target, planner="greedy")``).
    """
    target = describe(target)
    parts = stages(target, options, **keywords)
    seq = tvm.transform.Sequential([p for name in STAGES for p in parts[name]], name="fluidml_tvm")

    @tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target.target:  # TVM's own passes read the target in scope
            return seq(mod)

    return _pipeline


def tvm_default_stages(target) -> dict:
    """TVM's default pipeline for ``target`` as stages: ``"lower"`` (dispatch, legalization, fusion,
    dataflow lowering) and ``"finalize"``; fused calls keep their ONNX node names (NameFusedCalls),
    which changes no kernel. The baseline the report compares with."""
    target = describe(target)
    codegen = codegen_stages(target)
    with target.target:
        return {"lower": relax.pipeline.library_dispatch_passes(target.target)
                + _named_fusion(relax.pipeline.legalize_passes(target.target)) + codegen["lower"],
                "finalize": codegen["finalize"]}


def _legalize_passes(target, fold_costs) -> list:
    """TVM's legalize stage; with ``fold_costs``, FoldLayoutKernels (deciding with them) before FuseTIR."""
    passes = _named_fusion(relax.pipeline.legalize_passes(target.target))
    if not target.cpu:
        passes = _gpu_legalize_passes(passes)
    if fold_costs is not None:
        at = next(i for i, p in enumerate(passes) if p.info.name == "FuseTIR")
        passes.insert(at, FoldLayoutKernels(target=target, costs=fold_costs))
    return passes


def _named_fusion(passes) -> list:
    """``passes`` with FuseOps run by NameFusedCalls."""
    return [NameFusedCalls(p) if p.info.name == "FuseOps" else p for p in passes]


def _gpu_legalize_passes(passes: list) -> list:
    """TVM's GPU legalize stage without its default schedules (ScheduleGPUKernels schedules, after
    the tuning database), and with grouped convs kept out of Adreno's texture layout."""
    kept = []
    for p in passes:
        if p.info.name == "ApplyDefaultSchedule":
            continue
        if p.info.name == "ConvertLayout":
            # TVM 0.27 legalizes an NCHW4c grouped (depthwise) conv2d with the dense conv's
            # compute and divides by zero; grouped convs stay NCHW in global buffers.
            p = relax.transform.ConvertLayout({"relax.nn.conv2d": TEXTURE_CONV_LAYOUTS}, _texture_layouts)
        kept.append(p)
    return kept


# The layouts TVM's Adreno texture pipeline gives conv2d (data, weight, output).
TEXTURE_CONV_LAYOUTS = ["NCHW4c", "OIHW4o", "NCHW4c"]


def _texture_layouts(call) -> dict:
    if call.op.name == "relax.nn.conv2d" and call.attrs.groups != 1:
        return {"relax.nn.conv2d": ["NCHW", "OIHW", "NCHW"]}
    return {"relax.nn.conv2d": TEXTURE_CONV_LAYOUTS}
