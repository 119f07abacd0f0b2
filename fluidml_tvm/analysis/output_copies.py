"""Reshape copies into a returned tensor, whose producer could write the output directly.

TVM turns a reshape into a view except where its result is returned; there a
kernel copies the whole tensor (GPT-2's logits: 26 MB) from an intermediate
that dies right after.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax, tirx

from .nests import SLOTS


@dataclass(frozen=True)
class OutputCopy:
    source: str  # the intermediate allocation the copy reads
    output: str  # the returned allocation it writes
    step: int  # the copy call


def reshape_copies_into_outputs(mod, liveness) -> list[OutputCopy]:
    """Copies whose source dies at the copy and whose output is only written by it."""
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    touched: dict = {}
    for call in liveness.calls:
        for roots in call.args:
            for r in roots:
                touched.setdefault(r, []).append(call.step)
    out = []
    for call in liveness.calls:
        func = funcs.get(call.callee)
        if func is None or len(call.args) != 2 or not relax.analysis.has_reshape_pattern(func):
            continue
        src, dst = (next(iter(a)) if len(a) == 1 else None for a in call.args)
        if src is None or dst is None or src == dst:
            continue
        a, b = liveness.allocs.get(src), liveness.allocs.get(dst)
        if a is None or b is None or a.storage is not None or b.storage is not None:
            continue
        if dst not in liveness.escaping or src in liveness.escaping or a.nbytes != b.nbytes or a.dtype != b.dtype:
            continue
        if touched.get(dst) != [call.step] or liveness.lifetimes[src][1] // SLOTS != call.step:
            continue
        out.append(OutputCopy(src, dst, call.step))
    return out
