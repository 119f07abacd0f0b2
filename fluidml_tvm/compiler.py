"""``fluidml_tvm.compile`` and ``fluidml_tvm.export``: ONNX or Relax in, a planned build out."""

from __future__ import annotations

import time
from dataclasses import dataclass

import tvm

from .frontend import onnx_to_relax
from .pipeline import stages
from .report import MemoryReport, memory_report
from .runtime.threads import use_all_cores
from .targets import describe
from .transform import LiftKernelScratch


@dataclass
class CompileResult:
    """What a build gives: the executable, the planned Relax module and the memory report."""

    executable: tvm.relax.VMExecutable
    module: tvm.IRModule
    report: MemoryReport | None
    target: tvm.target.Target

    def export_library(self, path, **kwargs) -> None:
        """One file: code and weights (bound as constants) together; an OpenCL build's source beside it."""
        from .artifact import write_device_source

        self.executable.export_library(str(path), **kwargs)
        write_device_source(self.executable, path)

    def __iter__(self):  # ``ex, report = fluidml_tvm.compile(...)``
        return iter((self.executable, self.report))


def compile(model, target="host", *, input_shapes: dict | None = None, report: bool = True,
            **plan_options) -> CompileResult:  # noqa: A001 - mirrors tvm.compile
    """Build ``model`` (ONNX path, ``onnx.ModelProto`` or Relax ``IRModule``) for ``target``.

    ``plan_options`` as for :func:`fluidml_tvm.pipeline.stages`; with ``report``
    the same module is also lowered TVM's way to compare against.
    """
    target = describe(target)
    use_all_cores()  # the executable is usually run in this process
    mod = model if isinstance(model, tvm.IRModule) else onnx_to_relax(model, input_shape_overrides=input_shapes)[0]
    pipeline, built = planning_pipeline(target, report=report, **plan_options)
    executable = tvm.compile(mod, target.target, relax_pipeline=pipeline)
    return CompileResult(executable, built["module"], built["report"], target.target)


def export(model, path, target="host", *, input_shapes: dict | None = None, embed_weights: bool = False,
           fcompile=None, **plan_options):
    """Build ``model`` into an artifact directory for :func:`fluidml_tvm.runtime.load`.

    Weights are re-laid-out once here and written beside the library (or bound
    into it with ``embed_weights``). Returns ``(ArtifactInfo, MemoryReport)``.
    """
    from .artifact import export_artifact

    target = describe(target)
    mod, params = onnx_to_relax(model, input_shape_overrides=input_shapes, keep_params_in_input=True)
    # Weight re-layouts must precede LiftTransformParams (in export_artifact) to happen once.
    with target.target:
        mod = tvm.transform.Sequential(stages(target, **plan_options)["pack"])(mod)
    pipeline, built = planning_pipeline(target, pack=False, **plan_options)
    # detach_params leaves no "main" entry for a model without weights
    info = export_artifact(mod, params.get("main", []), target, path, relax_pipeline=pipeline,
                           embed_weights=embed_weights, fcompile=fcompile)
    return info, built["report"]


def planning_pipeline(target, *, report: bool = True, pack: bool = True, **plan_options):
    """The FluidML pipeline as one pass, and a dict it fills with the planned module and report.

    The report needs the scheduled module before planning (TVM plans the same
    kernels for comparison), so the stages run here one by one.
    """
    target = describe(target)
    parts = stages(target, **plan_options)
    built: dict = {"module": None, "report": None}

    @tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.planning_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target.target:
            early = parts["pack"] if pack else []
            fused = tvm.transform.Sequential(early + parts["fuse"] + parts["tuned"] + parts["schedule"])(mod)
            start = time.perf_counter()
            planned = tvm.transform.Sequential(parts["plan"])(fused)
            seconds = time.perf_counter() - start
            if report:
                tvm_lowered = tvm.transform.Sequential(parts["lower"])(fused)
                same = LiftKernelScratch()(tvm_lowered) if plan_options.get("scratch", True) else None
                built["report"] = memory_report(planned, tvm_lowered, seconds, same)
            built["module"] = planned
            return tvm.transform.Sequential(parts["lower"] + parts["finalize"])(planned)

    return _pipeline, built


__all__ = ["compile", "export", "CompileResult", "planning_pipeline"]
