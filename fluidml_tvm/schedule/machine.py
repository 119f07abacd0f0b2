"""What a schedule needs to know about the target: fp32 vector lanes and cores."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.target.codegen import llvm_cpu_has_features


@dataclass(frozen=True)
class Machine:
    """fp32 lanes per vector register, vector registers, and cores to parallelise over."""

    lanes: int = 4
    registers: int = 16
    cores: int = 1

    @staticmethod
    def of(target) -> "Machine":
        if target is None or target.kind.name != "llvm":
            return Machine()
        cores = int(target.attrs.get("num-cores", 0) or 0) or 1
        if _has(target, "avx512f"):
            return Machine(16, 32, cores)
        if _has(target, "avx2") or _has(target, "avx"):
            return Machine(8, 16, cores)
        if _has(target, "neon") or _has(target, "asimd"):
            return Machine(4, 32, cores)
        return Machine(4, 16, cores)


def _has(target, feature: str) -> bool:
    try:
        return bool(llvm_cpu_has_features(feature, target))
    except (RuntimeError, ValueError):
        return False
