"""``fluidml_tvm.compile`` and ``fluidml_tvm.export``: ONNX or Relax in, a planned build out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import tvm

from .frontend import onnx_to_relax
from .options import BuildOptions
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


def compile(model, target="host", options: BuildOptions | None = None, *, input_shapes: dict | None = None,
            report: bool = True, progress: Progress | None = None, **keywords) -> CompileResult:  # noqa: A001
    """Build ``model`` (ONNX path, ``onnx.ModelProto`` or Relax ``IRModule``) for ``target``.

    ``options`` is a :class:`~fluidml_tvm.options.BuildOptions`, or its fields
    as ``keywords`` (``compile(model, planner="greedy")``); with ``report`` the
    same module is also lowered TVM's way to compare against.
    ``progress(stage, seconds)`` is called as each stage ends (:data:`BUILD_STAGES`).
    """
    target = describe(target)
    options = BuildOptions.of(options, **keywords)
    clock = StageClock(progress)
    use_all_cores()  # the executable is usually run in this process
    mod = model if isinstance(model, tvm.IRModule) else onnx_to_relax(model, input_shape_overrides=input_shapes)[0]
    clock.lap("import")
    pipeline, built = planning_pipeline(target, options, report=report, clock=clock)
    executable = tvm.compile(mod, target.target, relax_pipeline=pipeline)
    clock.lap("codegen")
    return CompileResult(executable, built["module"], built["report"], target.target)


def export(model, path, target="host", options: BuildOptions | None = None, *, input_shapes: dict | None = None,
           embed_weights: bool = False, fcompile=None, progress: Progress | None = None, **keywords):
    """Build ``model`` into an artifact directory for :func:`fluidml_tvm.runtime.load`.

    Weights are re-laid-out once here and written beside the library (or bound
    into it with ``embed_weights``). ``options``, ``keywords`` and ``progress``
    as for :func:`compile`. Returns ``(ArtifactInfo, MemoryReport)``.
    """
    from .artifact import export_artifact

    target = describe(target)
    options = BuildOptions.of(options, **keywords)
    clock = StageClock(progress)
    mod, params = onnx_to_relax(model, input_shape_overrides=input_shapes, keep_params_in_input=True)
    clock.lap("import")
    # Weight re-layouts must precede LiftTransformParams (in export_artifact) to happen once.
    with target.target:
        mod = tvm.transform.Sequential(stages(target, options)["pack"])(mod)
    pipeline, built = planning_pipeline(target, options, pack=False, clock=clock)
    # detach_params leaves no "main" entry for a model without weights
    info = export_artifact(mod, params.get("main", []), target, path, relax_pipeline=pipeline,
                           embed_weights=embed_weights, fcompile=fcompile, compiled=lambda: clock.lap("codegen"))
    clock.lap("export")
    return info, built["report"]


# The stages a build reports to ``progress``, in order: "layouts" is weight packing and fusion
# (with export, also lifting the weight transforms), "planning" includes TVM's plan of the same
# kernels for the report, "codegen" TVM's lowering and code generation, "export" writing the files.
BUILD_STAGES = ("import", "layouts", "schedules", "planning", "codegen", "export")

Progress = Callable[[str, float], None]


class StageClock:
    """Calls ``progress(stage, seconds since the previous stage ended)`` as each stage ends."""

    def __init__(self, progress: Progress | None):
        self.progress, self.last = progress, time.perf_counter()

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        if self.progress is not None:
            self.progress(stage, seconds)
        return seconds


def planning_pipeline(target, options: BuildOptions | None = None, *, report: bool = True, pack: bool = True,
                      clock: StageClock | None = None, **keywords):
    """The FluidML pipeline as one pass, and a dict it fills with the planned module and report.

    The report needs the scheduled module before planning (TVM plans the same
    kernels for comparison), so the stages run here one by one.
    """
    target = describe(target)
    options = BuildOptions.of(options, **keywords)
    parts = stages(target, options)
    clock = clock or StageClock(None)
    built: dict = {"module": None, "report": None}

    @tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.planning_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target.target:
            early = parts["pack"] if pack else []
            fused = tvm.transform.Sequential(early + parts["fuse"])(mod)
            clock.lap("layouts")
            fused = tvm.transform.Sequential(parts["tuned"] + parts["schedule"])(fused)
            clock.lap("schedules")
            start = time.perf_counter()
            planned = tvm.transform.Sequential(parts["plan"])(fused)
            seconds = time.perf_counter() - start
            if report:
                tvm_lowered = tvm.transform.Sequential(parts["lower"])(fused)
                same = LiftKernelScratch()(tvm_lowered) if options.scratch else None
                built["report"] = memory_report(planned, tvm_lowered, seconds, same)
            built["module"] = planned
            clock.lap("planning")
            return tvm.transform.Sequential(parts["lower"] + parts["finalize"])(planned)

    return _pipeline, built


__all__ = ["compile", "export", "CompileResult", "planning_pipeline", "BuildOptions", "BUILD_STAGES"]
