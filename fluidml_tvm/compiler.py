"""``fluidml_tvm.compile``: ONNX or Relax in, a planned executable and its memory report out."""

from __future__ import annotations

import time
from dataclasses import dataclass

import tvm

from .frontend import onnx_to_relax
from .pipeline import stages
from .report import MemoryReport, memory_report
from .targets import resolve_target


@dataclass
class CompileResult:
    """What a build gives: the executable, the planned Relax module and the memory report."""

    executable: tvm.relax.VMExecutable
    module: tvm.IRModule
    report: MemoryReport | None
    target: tvm.target.Target

    def export_library(self, path, **kwargs) -> None:
        self.executable.export_library(str(path), **kwargs)

    def __iter__(self):  # ``ex, report = fluidml_tvm.compile(...)``
        return iter((self.executable, self.report))


def compile(model, target="llvm", *, input_shapes: dict | None = None, report: bool = True,
            **plan_options) -> CompileResult:  # noqa: A001 - mirrors tvm.compile
    """Build ``model`` (ONNX path, ``onnx.ModelProto`` or Relax ``IRModule``) for ``target``.

    ``plan_options`` go to :class:`fluidml_tvm.transform.FluidMLPlan`; with
    ``report`` the same module is also lowered TVM's way to compare against.
    """
    target = resolve_target(target)
    if isinstance(model, tvm.IRModule):
        mod = model
    else:
        mod, _ = onnx_to_relax(model, input_shape_overrides=input_shapes)
    parts = stages(target, **plan_options)
    with target:
        fused = tvm.transform.Sequential(parts["fuse"])(mod)
        start = time.perf_counter()
        planned = tvm.transform.Sequential(parts["plan"])(fused)
        seconds = time.perf_counter() - start
        mem = None
        if report:
            tvm_lowered = tvm.transform.Sequential(parts["lower"])(fused)
            mem = memory_report(planned, tvm_lowered, seconds, scratch=plan_options.get("scratch", True))
        final = tvm.transform.Sequential(parts["lower"] + parts["finalize"])(planned)
    executable = tvm.compile(final, target, relax_pipeline=None)
    return CompileResult(executable, planned, mem, target)


__all__ = ["compile", "CompileResult"]
