"""In-place reuse: which outputs may take the memory of an input at its last use."""

from __future__ import annotations

from tvm import tirx

from .nests import SLOTS
from .pointwise import inplace_pairs


def inplace_merges(mod, liveness, candidates) -> list[tuple[str, str]]:
    """Pairs ``(input, output)`` of planned tensors that may share one buffer.

    The output must be born in the very loop nest of a pointwise kernel that is
    the input's last use, with the same byte size; each input feeds at most
    one such output.
    """
    prim_funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    merges, taken_in, taken_out = [], set(), set()
    for call in liveness.calls:
        func = prim_funcs.get(call.callee)
        if func is None:
            continue
        for in_idx, out_idx in sorted(inplace_pairs(func)):
            a, b = _single(call.args[in_idx]), _single(call.args[out_idx])
            if a is None or b is None or a == b or a in taken_in or b in taken_out:
                continue
            if a not in candidates or b not in candidates:
                continue
            end, start = liveness.lifetimes[a][1], liveness.lifetimes[b][0]
            if end != start or end // SLOTS != call.step:
                continue
            if liveness.allocs[a].nbytes != liveness.allocs[b].nbytes:
                continue
            merges.append((a, b))
            taken_in.add(a)
            taken_out.add(b)
    return merges


def _single(roots):
    return next(iter(roots)) if len(roots) == 1 else None
