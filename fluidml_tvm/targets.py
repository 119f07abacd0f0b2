"""TVM targets by name, with a few edge presets and a clear error for unknown ones."""

from __future__ import annotations

import json

import tvm

# Short names for the boards this package is built for; anything else is a TVM target.
PRESETS = {
    "x86-64": {"kind": "llvm", "mcpu": "haswell", "num-cores": 2},
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4},  # Pi 4/5
    "mali": {"kind": "opencl", "device": "mali",
             "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}},
    "adreno": {"kind": "opencl", "device": "adreno",
               "host": {"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]}},
}


class UnknownTargetError(ValueError):
    """A target string TVM does not understand."""


def host_target() -> dict:
    """This machine's CPU: plain ``llvm`` would compile for the baseline ISA (SSE2 on x86)."""
    import os

    from tvm.target import codegen

    return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": os.cpu_count() or 1}


def resolve_target(target) -> tvm.target.Target:
    """A ``tvm.target.Target`` from a Target, a dict, a TVM target string or a preset name."""
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


def cross_compiler(target):
    """The linker for ``export_library`` when ``target`` is not this machine, else None."""
    target = resolve_target(target)
    host = target.host or target
    triple = str(host.attrs.get("mtriple", "")) if "mtriple" in host.attrs else ""
    if not triple.startswith("aarch64"):
        return None
    from tvm.support import cc

    # The board's libc is what links; Android boards take the same GNU cross toolchain here.
    return cc.cross_compiler(f"{triple.replace('-android', '-linux-gnu')}-gcc")
