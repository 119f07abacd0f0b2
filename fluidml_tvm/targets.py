"""One description of the target a build is for, made once and handed to every pass that needs it.

A build resolves its target once (:func:`describe`: a preset name, a TVM
target string, JSON, a dict or a ``tvm.target.Target``) and passes the
:class:`TargetDescription` to the pipeline's stages, the passes and the
schedule rules; none of them asks ``tvm.target.Target.current()`` what it is
building for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.target.codegen import llvm_cpu_has_features

# Short names for the boards this package is built for; anything else is a TVM target.
PRESETS = {
    "x86-64": {"kind": "llvm", "mcpu": "haswell", "num-cores": 2},
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4},  # Pi 4/5
    "mali": {"kind": "opencl", "device": "mali",
             "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}},
    "adreno": {"kind": "opencl", "device": "adreno",
               "host": {"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]}},
}

# The repository's top-level schedules/<architecture>/ directories: shipped tuning
# records (MetaSchedule's and the layout costs) for one architecture each.
SCHEDULES_DIR = Path(__file__).resolve().parents[1] / "schedules"

# Devices whose runtime can fold a byte offset into the data pointer on the host
# (DeviceAPI::SupportsDevicePointerArithmeticsOnHost); others get whole-buffer reuse.
OFFSET_CAPABLE_KINDS = frozenset({"llvm", "c", "cuda"})

# CPUs LLVM knows by name that have AVX2 + FMA (the x86-64 preset uses haswell).
_AVX2_CPUS = {"haswell", "broadwell", "skylake", "skylake-avx512", "cascadelake", "cooperlake",
              "icelake-client", "icelake-server", "tigerlake", "alderlake", "sapphirerapids",
              "raptorlake", "meteorlake", "znver1", "znver2", "znver3", "znver4", "x86-64-v3",
              "x86-64-v4"}


class UnknownTargetError(ValueError):
    """A target string TVM does not understand."""


@dataclass(frozen=True)
class TargetDescription:
    """Everything a build asks about its target.

    ``isa`` is the vector instruction set a CPU schedule is sized for
    (``avx512``, ``avx2``, ``neon``, ``sse``; ``generic`` for another CPU,
    ``""`` for a GPU); ``lanes`` and ``registers`` are its fp32 lanes per
    vector register and vector registers; ``offsets`` says whether a tensor
    may live at a byte offset inside a storage (not on OpenCL);
    ``record_key`` keys the layout-cost records measured for it;
    ``architecture`` names its shipped ``schedules/`` directory (None: none
    applies); ``triple`` is the host triple the library runs on (``""``: this
    machine's); ``linker`` the cross compiler's command (None: this machine's
    own); ``runtime_library`` what the device needs to load the library.
    """

    target: tvm.target.Target
    kind: str
    isa: str
    lanes: int
    registers: int
    cores: int
    offsets: bool
    record_key: str
    architecture: str | None
    triple: str
    linker: str | None
    runtime_library: str

    @property
    def cpu(self) -> bool:
        """Whether the kernels run on a CPU (LLVM): the default CPU schedules and packed layouts apply."""
        return self.kind == "llvm"

    @property
    def cross_compiler(self):
        """The ``fcompile`` for ``export_library`` when the library does not run here, else None."""
        if self.linker is None:
            return None
        from tvm.support import cc

        return cc.cross_compiler(self.linker)

    @property
    def schedules_dir(self) -> Path | None:
        """``schedules/<architecture>/``, or None when nothing is shipped for this target."""
        return SCHEDULES_DIR / self.architecture if self.architecture else None

    def __str__(self) -> str:
        return str(self.target)


def describe(target) -> TargetDescription:
    """The description of ``target``: a TargetDescription (returned as it is), a ``tvm.target.Target``,
    a dict, a TVM target string, JSON or a preset name (``host``, ``x86-64``, ``aarch64``, ``mali``, ``adreno``)."""
    if isinstance(target, TargetDescription):
        return target
    target = _tvm_target(target)
    kind = target.kind.name
    host = target.host or target
    triple = str(host.attrs.get("mtriple", "") or "")
    isa, lanes, registers = _vector_unit(target) if kind == "llvm" else ("", 4, 16)
    cores = (int(target.attrs.get("num-cores", 0) or 0) or 1) if kind == "llvm" else 1
    linker = f"{triple.replace('-android', '-linux-gnu')}-gcc" if triple.startswith("aarch64") else None
    return TargetDescription(
        target=target,
        kind=kind,
        isa=isa,
        lanes=lanes,
        registers=registers,
        cores=cores,
        offsets=kind in OFFSET_CAPABLE_KINDS,
        record_key=_record_key(target),
        architecture=_architecture(target),
        triple=triple,
        linker=linker,
        runtime_library=_runtime_library(kind, triple),
    )


def resolve_target(target) -> tvm.target.Target:
    """A ``tvm.target.Target`` from anything :func:`describe` takes."""
    return target.target if isinstance(target, TargetDescription) else _tvm_target(target)


def cross_compiler(target):
    """The linker for ``export_library`` when ``target`` is not this machine, else None."""
    return describe(target).cross_compiler


def host_target() -> dict:
    """This machine's CPU: plain ``llvm`` would compile for the baseline ISA (SSE2 on x86)."""
    from tvm.target import codegen

    return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": os.cpu_count() or 1}


def _tvm_target(target) -> tvm.target.Target:
    if isinstance(target, tvm.target.Target):
        return target
    if target == "host":
        return tvm.target.Target(host_target())
    spec = PRESETS.get(target, target) if isinstance(target, str) else target
    try:
        if isinstance(spec, str) and spec.lstrip().startswith("{"):
            spec = json.loads(spec)
        return tvm.target.Target(spec)
    except Exception as err:  # TVM raises several error types for a bad target
        raise UnknownTargetError(
            f"unknown target {target!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}. "
            "Use a TVM target kind ('llvm'), a TVM target as JSON "
            "('{\"kind\": \"llvm\", \"mtriple\": \"aarch64-linux-gnu\", \"mattr\": [\"+neon\"]}'), "
            f"or a preset: host, {', '.join(sorted(PRESETS))}."
        ) from None


def _vector_unit(target) -> tuple[str, int, int]:
    """(ISA, fp32 lanes per vector register, vector registers) of an LLVM target."""
    if _has(target, "avx512f"):
        return "avx512", 16, 32
    if _has(target, "avx2") or _has(target, "avx"):
        return "avx2", 8, 16
    if _has(target, "neon") or _has(target, "asimd"):
        return "neon", 4, 32
    return ("sse" if _has(target, "sse2") else "generic"), 4, 16


def _has(target, feature: str) -> bool:
    try:
        return bool(llvm_cpu_has_features(feature, target))
    except (RuntimeError, ValueError):
        return False


def _record_key(target) -> str:
    """What a measurement depends on: kind, triple, CPU, features, cores."""
    attrs = target.attrs
    mattr = ",".join(sorted(str(a) for a in (attrs.get("mattr") or [])))
    return (f"{target.kind.name} -mtriple={attrs.get('mtriple', '') or ''} -mcpu={attrs.get('mcpu', '') or ''} "
            f"-mattr={mattr} -num-cores={attrs.get('num-cores', 0) or 0}")


def _architecture(target) -> str | None:
    """The shipped ``schedules/`` directory whose records fit ``target`` (None: none fits)."""
    if target.kind.name != "llvm":
        return None
    attrs = target.attrs
    triple = str(attrs.get("mtriple", "") or "")
    mcpu = str(attrs.get("mcpu", "") or "")
    mattr = [str(a) for a in (attrs.get("mattr") or [])]
    if triple.startswith("aarch64") or triple.startswith("arm64"):
        return "aarch64-neon" if "+neon" in mattr or not mattr else None
    if triple and not triple.startswith("x86_64"):
        return None
    if mcpu in _AVX2_CPUS or "+avx2" in mattr:
        return "x86-64-avx2"
    return None


def _runtime_library(kind: str, triple: str) -> str:
    where = f"built for {triple}" if triple else "of this machine"
    if kind == "opencl":
        # The PyPI wheels are built without OpenCL.
        return f"libtvm_runtime.so {where} with OpenCL (USE_OPENCL=ON; the apache-tvm wheel has none)"
    return f"libtvm_runtime.so {where} (the apache-tvm wheel for its architecture)"
