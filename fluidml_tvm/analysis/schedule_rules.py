"""Whether a kernel is scheduled, and which default-schedule rule scheduled it, read from the kernels themselves."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

# The PrimFunc attribute a default schedule stamps with the name of the rule that made it.
RULE_ATTR = "fluidml.schedule_rule"
# TVM's PrimFunc attribute for a kernel a schedule (ours, dlight's, a database's) was applied to; later passes skip it.
SCHEDULED_ATTR = "tirx.is_scheduled"


def is_scheduled(func: tirx.PrimFunc) -> bool:
    """True when a schedule (ours, dlight's, a MetaSchedule database's) was already applied."""
    return bool(func.attrs and SCHEDULED_ATTR in func.attrs and int(func.attrs[SCHEDULED_ATTR]))


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
