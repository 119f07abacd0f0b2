"""Weights read both as they are and transposed: lifting the transpose would store them twice."""

from __future__ import annotations

import tvm
from tvm import relax

_PERMUTE = tvm.ir.Op.get("relax.permute_dims")


def transposed_shared_params(func: relax.Function, num_input: int) -> list[str]:
    """Names of weight parameters that feed a ``permute_dims`` and something else too.

    GPT-2's tied embedding is the known case: the token lookup reads the table,
    the LM head reads its transpose.
    """
    weights = {p: p.name for p in func.params[num_input:]}
    transposed, other = set(), set()

    def visit(expr):
        if not isinstance(expr, relax.Call):
            return
        for arg in expr.args:
            if arg in weights:
                (transposed if expr.op.same_as(_PERMUTE) else other).add(weights[arg])

    relax.analysis.post_order_visit(func, visit)
    return sorted(transposed & other)
