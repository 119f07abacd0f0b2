"""The complete Relax pipeline: TVM's default for the target, with FluidML planning in place."""

from __future__ import annotations

import tvm
from tvm import relax

from .targets import resolve_target
from .transform import FluidMLPlan


def stages(target, **options) -> dict:
    """TVM's default pipeline for ``target`` cut into its stages, FluidMLPlan between them.

    ``fuse`` (dispatch, legalize, fold constants, fuse) ends in fused dataflow
    form; ``plan`` is FluidMLPlan; ``finalize`` is TVM's own lowering, whose
    StaticPlanBlockMemory then only sees the tensors FluidML left to it.
    """
    target = resolve_target(target)
    pipe = relax.pipeline
    return {
        "fuse": pipe.library_dispatch_passes(target) + pipe.legalize_passes(target),
        "plan": [FluidMLPlan(**options)],
        "lower": _dataflow_lower_passes(target),
        "finalize": pipe.finalize_passes(target),
    }


def get_pipeline(target, **options) -> tvm.transform.Pass:
    """A pass for ``tvm.compile(mod, target, relax_pipeline=...)``.

    ``options`` go to :class:`fluidml_tvm.transform.FluidMLPlan`.
    """
    target = resolve_target(target)
    parts = stages(target, **options)
    seq = tvm.transform.Sequential(
        parts["fuse"] + parts["plan"] + parts["lower"] + parts["finalize"], name="fluidml_tvm"
    )

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
