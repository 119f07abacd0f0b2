"""Replace functions of an IRModule."""

from __future__ import annotations

import tvm


def with_functions(mod: tvm.IRModule, updates: dict) -> tvm.IRModule:
    """A copy of ``mod`` with ``updates[global var] = function`` applied (``mod`` itself if none)."""
    if not updates:
        return mod
    mod = mod.clone()
    for gv, func in updates.items():
        mod[gv] = func
    return mod
