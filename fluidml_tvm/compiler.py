"""``fluidml_tvm.compile`` and ``fluidml_tvm.export``: ONNX or Relax in, a planned build out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import tvm

from .frontend import onnx_to_relax
from .options import BuildOptions
from .pipeline import codegen_stages, stages
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
    planned = plan_module(mod, target, options, report=report, clock=clock)
    executable = compile_planned(planned.module, target)
    clock.lap("codegen")
    return CompileResult(executable, planned.module, planned.report, target.target)


def export(model, path, target="host", options: BuildOptions | None = None, *, input_shapes: dict | None = None,
           embed_weights: bool = False, fcompile=None, progress: Progress | None = None, **keywords):
    """Build ``model`` into an artifact directory for :func:`fluidml_tvm.runtime.load`.

    Weights are re-laid-out once here and written beside the library (or bound
    into it with ``embed_weights``). ``options``, ``keywords`` and ``progress``
    as for :func:`compile`. Returns ``(ArtifactInfo, MemoryReport)``.
    """
    from .artifact import check_artifact_path, prepare_deploy, write_artifact

    target = describe(target)
    options = BuildOptions.of(options, **keywords)
    check_artifact_path(path)
    clock = StageClock(progress)
    mod, params = onnx_to_relax(model, input_shape_overrides=input_shapes, keep_params_in_input=True)
    clock.lap("import")
    # Weight re-layouts must precede LiftTransformParams (in prepare_deploy) to happen once.
    with target.target:
        mod = tvm.transform.Sequential(stages(target, options)["pack"])(mod)
    # detach_params leaves no "main" entry for a model without weights
    deployable = prepare_deploy(mod, params.get("main", []), target.target, embed_weights)
    planned = plan_module(deployable.module, target, options, pack=False, clock=clock)
    executable = compile_planned(planned.module, target)
    clock.lap("codegen")
    info = write_artifact(deployable, executable, path, fcompile)
    clock.lap("export")
    return info, planned.report


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


@dataclass
class PlannedModule:
    """The module with its memory planned (:func:`compile_planned` compiles it) and, if asked for, its report."""

    module: tvm.IRModule
    report: MemoryReport | None


def plan_module(mod: tvm.IRModule, target, options: BuildOptions | None = None, *, report: bool = True,
                pack: bool = True, clock: StageClock | None = None, **keywords) -> PlannedModule:
    """Run FluidML's stages on ``mod`` up to the memory plan (``pack`` too, unless already run).

    The stages run one by one because the report needs the scheduled module
    before planning: TVM plans the same kernels for comparison.
    """
    target = describe(target)
    options = BuildOptions.of(options, **keywords)
    parts = stages(target, options)
    clock = clock or StageClock(None)
    with target.target:
        early = parts["pack"] if pack else []
        fused = tvm.transform.Sequential(early + parts["fuse"])(mod)
        clock.lap("layouts")
        fused = tvm.transform.Sequential(parts["tuned"] + parts["schedule"])(fused)
        clock.lap("schedules")
        start = time.perf_counter()
        planned = tvm.transform.Sequential(parts["plan"])(fused)
        seconds = time.perf_counter() - start
        memory = None
        if report:
            tvm_lowered = tvm.transform.Sequential(parts["lower"])(fused)
            same = LiftKernelScratch()(tvm_lowered) if options.scratch else None
            memory = memory_report(planned, tvm_lowered, seconds, same)
        clock.lap("planning")
    return PlannedModule(planned, memory)


def compile_planned(planned: tvm.IRModule, target) -> tvm.relax.VMExecutable:
    """Compile a module :func:`plan_module` planned: TVM's dataflow lowering, finalization, codegen."""
    target = describe(target)
    parts = codegen_stages(target)
    codegen = tvm.transform.Sequential(parts["lower"] + parts["finalize"])
    with target.target:
        return tvm.compile(planned, target.target, relax_pipeline=codegen)


__all__ = ["compile", "export", "CompileResult", "PlannedModule", "plan_module", "compile_planned", "BuildOptions",
           "BUILD_STAGES"]
