"""Which default-schedule rule scheduled each kernel of a module, read from the kernels themselves."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

# The PrimFunc attribute the GPU schedule pass stamps with the name of the rule it applied.
RULE_ATTR = "fluidml.schedule_rule"


def schedule_rules(mod: tvm.IRModule) -> dict[str, str | None]:
    """``{kernel name: rule name}`` for every PrimFunc of ``mod`` (None: no rule stamped it)."""
    return {gv.name_hint: (str(f.attrs[RULE_ATTR]) if f.attrs and RULE_ATTR in f.attrs else None)
            for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}


def binds_threads(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` binds a loop to a GPU thread index (threadIdx.*)."""
    tags = []

    def visit(loop: tirx.For):
        if loop.thread_binding is not None:
            tags.append(str(loop.thread_binding.thread_tag))

    tvm_ffi.structural_walk(func.body, [(tirx.For, visit)], order="post")
    return any(tag.startswith("threadIdx") for tag in tags)
