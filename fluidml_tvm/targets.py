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
import platform
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.target.codegen import llvm_cpu_has_features

_AARCH64_LINUX = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
_AARCH64_ANDROID = {"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]}


@dataclass(frozen=True)
class Preset:
    """A named target: ``spec`` (a TVM tag or target dict), its ``host`` (None: none) and what it means."""

    spec: str | dict
    meaning: str
    host: dict | None = None


# Short names for the boards this package is built for; anything else is a TVM target.
PRESETS = {
    "x86-64": Preset({"kind": "llvm", "mcpu": "haswell", "num-cores": 2},
                     "any x86-64 CPU with AVX2+FMA (Haswell or later), 2 threads"),
    "aarch64": Preset({**_AARCH64_LINUX, "num-cores": 4},
                      "any 64-bit ARM Linux board with NEON, 4 threads (Pi 4/5 class)"),
    "rpi4": Preset("raspberry-pi/4b-aarch64",
                   "Raspberry Pi 4 Model B, 64-bit OS: Cortex-A72, NEON, 4 threads (TVM's tag)"),
    "rpi5": Preset({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
                    "mattr": ["+neon", "+dotprod", "+fullfp16"], "num-cores": 4},
                   "Raspberry Pi 5, 64-bit OS: Cortex-A76, NEON + dot product + fp16, 4 threads"),
    # TVM's arm/rk3399 tag names no CPU or core count; the two A72s are the fast cluster
    # (threads spread over the four A53s too would wait for the slow cores).
    "rk3399": Preset({**_AARCH64_LINUX, "mcpu": "cortex-a72", "model": "rk3399", "device": "arm_cpu",
                      "num-cores": 2},
                     "Rockchip RK3399 boards (Rock Pi 4, Pinebook Pro): its 2 Cortex-A72 cores, NEON"),
    "android-arm64": Preset({**_AARCH64_ANDROID, "num-cores": 4},
                            "a 64-bit Android phone's CPU: NEON, 4 threads (its big cores); links with the NDK"),
    "mali": Preset({"kind": "opencl", "device": "mali"},
                   "an ARM Mali GPU through OpenCL (RK3399, RK3588, ...), host code for aarch64 Linux",
                   _AARCH64_LINUX),
    "adreno": Preset("qcom/adreno-opencl",
                     "a Qualcomm Adreno GPU through OpenCL, buffers only (TVM's tag), Android host; links with the NDK",
                     _AARCH64_ANDROID),
    "adreno-texture": Preset("qcom/adreno-opencl-texture",
                             "a Qualcomm Adreno GPU through OpenCL with conv2d in texture memory (NCHW4c, "
                             "TVM's tag), Android host; links with the NDK", _AARCH64_ANDROID),
}

# The command that links a library for an Android host: the NDK's clang, as tvm.support.ndk reads it.
NDK_CC = "TVM_NDK_CC"

# The repository's top-level schedules/<architecture>/ directories: shipped tuning
# records (MetaSchedule's and the layout costs) for one architecture each.
SCHEDULES_DIR = Path(__file__).resolve().parents[1] / "schedules"

# Devices whose runtime can fold a byte offset into the data pointer on the host
# (DeviceAPI::SupportsDevicePointerArithmeticsOnHost); others get whole-buffer reuse.
OFFSET_CAPABLE_KINDS = frozenset({"llvm", "c", "cuda"})

# The shipped schedules/ directory of each CPU class (architecture, ISA), best first: an
# AVX-512 CPU with no records of its own takes the AVX2 class's.  Those kernels were made
# for 8 lanes; on 16 they still run (LLVM splits nothing, it widens nothing), and the planner
# uses the records only to rank one node's candidate layouts, which AVX2 times rank the
# same way up to the block width; the CPU's own `tune --packed` replaces them.
_CLASS_DIRS = {("x86_64", "avx512"): ("x86-64-avx512", "x86-64-avx2"),
               ("x86_64", "avx2"): ("x86-64-avx2",),
               ("aarch64", "neon"): ("aarch64-neon",)}
# The fp32 lanes of each ISA a class names, for the records of a class that is not the target's own.
_ISA_LANES = {"avx512": 16, "avx2": 8, "neon": 4, "sse": 4, "generic": 4}


class UnknownTargetError(ValueError):
    """A target string TVM does not understand."""


class MissingToolchainError(ValueError):
    """The compiler that links a library for the target is not installed or not named."""


@dataclass(frozen=True)
class TargetDescription:
    """Everything a build asks about its target.

    ``isa`` is the vector instruction set a CPU schedule is sized for
    (``avx512``, ``avx2``, ``neon``, ``sse``; ``generic`` for another CPU,
    ``""`` for a GPU); ``lanes`` and ``registers`` are its fp32 lanes per
    vector register and vector registers; ``offsets`` says whether a tensor
    may live at a byte offset inside a storage (not on OpenCL);
    ``record_key`` keys the layout-cost records measured for it: its class
    (kind, architecture, ISA; never the CPU's name nor its core count, which
    each record carries as a feature); ``record_classes`` the classes whose
    records it may use, best first, each with its lanes;
    ``architecture`` names its shipped ``schedules/`` directory (None: none
    applies); ``triple`` is the host triple the library runs on (``""``: this
    machine's); ``linker`` the cross compiler's command (None: this machine's
    own; ``$TVM_NDK_CC`` for an Android host, read when linking);
    ``runtime_library`` what the device needs to load the library.
    """

    target: tvm.target.Target
    kind: str
    isa: str
    lanes: int
    registers: int
    cores: int
    offsets: bool
    record_key: str
    record_classes: tuple
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
        if self.android:
            return _ndk_compiler(self.triple)
        from tvm.support import cc

        return cc.cross_compiler(self.linker)

    @property
    def android(self) -> bool:
        """Whether the library runs on Android (bionic libc): only the NDK links it."""
        return "-android" in self.triple

    @property
    def schedules_dir(self) -> Path | None:
        """``schedules/<architecture>/``, or None when nothing is shipped for this target."""
        return SCHEDULES_DIR / self.architecture if self.architecture else None

    def __str__(self) -> str:
        return str(self.target)


def describe(target) -> TargetDescription:
    """The description of ``target``: a TargetDescription (returned as it is), a ``tvm.target.Target``,
    a dict, a TVM target string, JSON or a preset name (``host`` or one of :data:`PRESETS`)."""
    if isinstance(target, TargetDescription):
        return target
    target = _tvm_target(target)
    kind = target.kind.name
    host = target.host or target
    triple = str(host.attrs.get("mtriple", "") or "")
    isa, lanes, registers = _vector_unit(target) if kind == "llvm" else ("", 4, 16)
    cores = (int(target.attrs.get("num-cores", 0) or 0) or 1) if kind == "llvm" else 1
    linker = _linker(triple)
    return TargetDescription(
        target=target,
        kind=kind,
        isa=isa,
        lanes=lanes,
        registers=registers,
        cores=cores,
        offsets=kind in OFFSET_CAPABLE_KINDS,
        record_key=record_key(kind, _machine(target, isa), isa),
        record_classes=_record_classes(kind, _machine(target, isa), isa),
        architecture=_architecture(kind, _machine(target, isa), isa),
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


def preset_meanings() -> dict[str, str]:
    """Every preset name (``host`` first) with what it means."""
    return {"host": "this machine's CPU, all its cores", **{name: p.meaning for name, p in PRESETS.items()}}


def host_target() -> dict:
    """This machine's CPU: plain ``llvm`` would compile for the baseline ISA (SSE2 on x86)."""
    from tvm.target import codegen

    return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": os.cpu_count() or 1}


def _tvm_target(target) -> tvm.target.Target:
    if isinstance(target, tvm.target.Target):
        return target
    if target == "host":
        return tvm.target.Target(host_target())
    preset = PRESETS.get(target) if isinstance(target, str) else None
    spec = preset.spec if preset else target
    try:
        if isinstance(spec, str) and spec.lstrip().startswith("{"):
            spec = json.loads(spec)
        return tvm.target.Target(spec, preset.host) if preset and preset.host else tvm.target.Target(spec)
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


def record_key(kind: str, machine: str, isa: str) -> str:
    """The key of a CPU class's measurements: what decides a kernel's time and layout choice."""
    return f"{kind} -arch={machine} -isa={isa}" if kind == "llvm" else kind


def _machine(target, isa: str) -> str:
    """The architecture the kernels run on: the triple's, else the ISA's (x86_64 for SSE/AVX), else this one's."""
    host = target.host or target
    triple = str(host.attrs.get("mtriple", "") or target.attrs.get("mtriple", "") or "")
    if triple:
        machine = triple.split("-")[0]
        return "aarch64" if machine == "arm64" else machine
    if isa in ("avx512", "avx2", "sse"):
        return "x86_64"
    if isa == "neon":
        return "aarch64"
    return platform.machine()


def _record_classes(kind: str, machine: str, isa: str) -> tuple:
    """(record key, lanes) of the classes whose records fit, best first: the own one, then the fallbacks."""
    if kind != "llvm":
        return ((kind, 4),)
    fallbacks = {"avx512": ("avx2",)}.get(isa, ())
    return tuple((record_key(kind, machine, i), _ISA_LANES[i]) for i in (isa, *fallbacks))


def _architecture(kind: str, machine: str, isa: str) -> str | None:
    """The shipped ``schedules/`` directory whose records fit (None: none fits): the class's own when
    it exists, else the first fallback that does, else the own name (nothing shipped yet)."""
    dirs = _CLASS_DIRS.get((machine, isa)) if kind == "llvm" else None
    if not dirs:
        return None
    return next((d for d in dirs if (SCHEDULES_DIR / d).is_dir()), dirs[0])


def _linker(triple: str) -> str | None:
    """The command that links for ``triple`` (None: this machine's own compiler)."""
    if "-android" in triple:
        return f"${NDK_CC}"  # read when linking, as tvm.support.ndk does
    if triple.startswith(("aarch64", "arm64")):
        return "aarch64-linux-gnu-gcc"
    return None


def _ndk_compiler(triple: str):
    """``tvm.support.ndk.create_shared`` as an ``fcompile``, or a clear error when no NDK is named."""
    from tvm.support import cc, ndk

    compiler = os.environ.get(NDK_CC)
    if not compiler:
        raise MissingToolchainError(
            f"{triple} libraries link only with the Android NDK: install it "
            "(https://developer.android.com/ndk/downloads) and set "
            f"{NDK_CC}=$ANDROID_NDK/toolchains/llvm/prebuilt/linux-x86_64/bin/aarch64-linux-android28-clang")

    def create_shared(output, objects, options=None):
        ndk.create_shared(output, objects, options)

    # tvm.support.ndk computes its triple once at import; this one follows the variable.
    create_shared.output_format = "so"
    create_shared.get_target_triple = cc.get_target_by_dump_machine(compiler)
    return create_shared


def _runtime_library(kind: str, triple: str) -> str:
    where = f"built for {triple}" if triple else "of this machine"
    if "-android" in triple:
        where += " with the NDK (TVM's apps/android_rpc builds one)"
    if kind == "opencl":
        # The PyPI wheels are built without OpenCL.
        return f"libtvm_runtime.so {where} with OpenCL (USE_OPENCL=ON; the apache-tvm wheel has none)"
    return f"libtvm_runtime.so {where} (the apache-tvm wheel for its architecture)"
