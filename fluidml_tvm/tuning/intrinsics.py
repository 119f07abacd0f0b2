"""Register the CPU tensor intrinsics without importing the CUDA ones (the 40 s of ``tvm.s_tir.tensor_intrin``)."""

from __future__ import annotations

import importlib
import os
import sys
import types

_PACKAGE = "tvm.s_tir.tensor_intrin"
# What tvm/s_tir/tensor_intrin/__init__.py imports for LLVM, minus the GPU/DSP modules
# (cuda alone takes ~20 s of TVMScript parsing; the CPU ones take about a second).
_CPU_MODULES = ("x86", "arm_cpu", "riscv_cpu")


def register_cpu_intrinsics(target=None) -> None:
    """Make ``import tvm.s_tir.tensor_intrin`` cheap in this process.

    MetaSchedule's ``TuneContext`` imports that package every time one is made,
    and the package's ``__init__`` parses every GPU intrinsic too. For a CPU
    ``target`` (or none) this installs the package with only the CPU intrinsics
    registered; its GPU submodules still import on demand. A no-op for other
    targets and when the package is already imported.
    """
    if _PACKAGE in sys.modules:
        return
    if target is not None and str(getattr(target, "kind", target)).split()[0] not in ("llvm", "c"):
        return
    import tvm.s_tir

    path = os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin")
    package = types.ModuleType(_PACKAGE, "Tensor intrinsics (CPU only; registered by fluidml_tvm.tuning).")
    package.__path__ = [path]
    package.__file__ = os.path.join(path, "__init__.py")
    package.__package__ = _PACKAGE
    sys.modules[_PACKAGE] = package
    tvm.s_tir.tensor_intrin = package
    try:
        for name in _CPU_MODULES:
            importlib.import_module(f"{_PACKAGE}.{name}")
    except Exception:
        del sys.modules[_PACKAGE]  # let the real package import next time
        raise
