"""Which matmuls and convolutions take a constant weight, and the block ``n`` to pack each one with.

A weight ``W[K, N]`` (or ``W[N, K]`` seen through ``permute_dims``, the form the
ONNX importer gives ``Gemm(transB=1)``) packed as ``[ceil(N/n), K, n]`` puts the
``n`` columns a register tile needs in one contiguous run for every ``k``.
A constant read by anything else than the one matmul (GPT-2's tied embedding: a
``take`` and the LM head) is never packed: a packed copy would keep the weight
twice.  Such a weight is read as it is stored (``"dense"`` for ``[N, K]``).

A conv2d weight ``[O, I, kh, kw]`` (NCHW/OIHW, ``groups == 1``) packed as
``[ceil(O/n), I, kh, kw, n]`` gives the same contiguous run of ``n`` output
channels for every ``(i, r, s)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

# Ops that read only a constant's shape, never its bytes.
_SHAPE_ONLY_OPS = {"relax.shape_of"}


@dataclass(frozen=True)
class PackDecision:
    """How to rewrite one ``R.matmul`` or ``R.nn.conv2d`` binding.

    ``layout`` is ``"packed"`` (matmul weight re-laid-out as ``[ceil(N/n), K, n]``),
    ``"dense"`` (shared ``[N, K]`` weight read in place, no copy) or ``"conv2d"``
    (OIHW weight re-laid-out as ``[ceil(O/n), I, kh, kw, n]``).
    """

    var: relax.Var  # the matmul's (or conv2d's) binding variable
    call: relax.Call  # the R.matmul / R.nn.conv2d it replaces
    weight: tvm.ir.expr.Constant
    transposed: bool  # weight stored [N, K] (Gemm transB), read through permute_dims
    k: int
    n: int  # output columns (output channels of a conv2d)
    block: int  # n: columns per packed block (for "dense": per register tile)
    layout: str  # "packed", "dense" or "conv2d"

    @property
    def padded_n(self) -> int:
        return -(-self.n // self.block) * self.block


def column_block(n: int, lanes: int) -> int:
    """The packed block for ``n`` output columns: two vectors if that divides ``n``.

    Tries ``2*lanes``, ``lanes``, ``4*lanes``, then smaller powers of two down to 4 for an
    exact fit (no padding, so no extra bytes); pads to ``2*lanes`` only when none fits.
    """
    candidates = [2 * lanes, lanes, 4 * lanes] + [b for b in (lanes // 2, lanes // 4) if b >= 4]
    for block in candidates:
        if n % block == 0:
            return block
    return 2 * lanes


def block_candidates(n: int, lanes: int, padded: bool = False) -> list[int]:
    """Column blocks worth measuring for ``n`` columns: 1 to 4 whole vectors that divide ``n``.

    The block is also the kernel's register-tile width, so it trades accumulator
    registers against rows per tile; which wins depends on the CPU and the shape.
    ``padded``: blocks need not divide ``n`` (a ``dense`` kernel's panels are
    scratch, so a padded last panel adds no weight bytes).  Falls back to
    :func:`column_block` alone when no vector multiple fits.
    """
    fits = [v * lanes for v in (1, 2, 3, 4) if padded or n % (v * lanes) == 0]
    return fits or [column_block(n, lanes)]


def plan_packing(func: relax.Function, lanes: int) -> list[PackDecision]:
    """Return a :class:`PackDecision` for every float32 matmul/conv2d of ``func`` with a weight.

    A weight is a constant, or a parameter after the ``num_input`` inputs (the
    form ``from_onnx(keep_params_in_input=True)`` gives; LiftTransformParams
    then does the re-layout once, at build time).
    """
    num_input = func.attrs.get("num_input") if func.attrs else None
    params = set(func.params[int(num_input):]) if num_input is not None else set()
    finder = _MatmulFinder(params)
    finder.visit_expr(func)
    uses = finder.data_uses
    decisions = []
    for var, call, weight, transposed in finder.candidates:
        shape = static_shape(weight)
        if len(shape) != 2 or _dtype(weight) != "float32":
            continue
        k, n = (shape[1], shape[0]) if transposed else shape
        shared = uses.get(weight, 0) > 1 or (transposed and uses.get(finder.weight_var(var), 0) > 1)
        if shared and not transposed:
            continue  # [K, N] read in place is already what the default kernel does
        if shared:
            decisions.append(PackDecision(var, call, weight, True, k, n, column_block(n, lanes), "dense"))
        else:
            decisions.append(PackDecision(var, call, weight, transposed, k, n, column_block(n, lanes), "packed"))
    for var, call in finder.convolutions:
        weight = call.args[1]
        if uses.get(weight, 0) > 1 or _dtype(weight) != "float32":
            continue
        out_channels, in_channels = static_shape(weight)[:2]
        decisions.append(PackDecision(var, call, weight, False, in_channels, out_channels,
                                      column_block(out_channels, lanes), "conv2d"))
    return decisions


@relax.expr_functor.visitor
class _MatmulFinder(relax.PyExprVisitor):
    """Collect ``matmul(x, C)`` / ``matmul(x, permute_dims(C))`` and count reads of every constant."""

    def __init__(self, params):
        super().__init__()
        self.params = params  # weight parameters, read like constants
        self.candidates: list = []
        self.convolutions: list = []
        self.data_uses: dict = {}
        self._transposed: dict = {}  # var bound to permute_dims(C, [1, 0]) -> C
        self._weight_of: dict = {}  # matmul var -> the permute_dims var it reads

    def visit_var_binding_(self, binding):
        value = binding.value
        if _is_op(value, "relax.permute_dims") and self.is_weight(value.args[0]):
            axes = value.attrs.axes
            if len(static_shape(value.args[0])) == 2 and (axes is None or [int(a) for a in axes] == [1, 0]):
                self._transposed[binding.var] = value.args[0]
        if _is_op(value, "relax.matmul") and value.attrs.out_dtype in (None, "", "void", "float32"):
            x, w = value.args
            if len(x.ty.shape) >= 2 and x.ty.dtype == "float32":
                if self.is_weight(w):
                    self.candidates.append((binding.var, value, w, False))
                elif w in self._transposed:
                    self._weight_of[binding.var] = w
                    self.candidates.append((binding.var, value, self._transposed[w], True))
        if _is_op(value, "relax.nn.conv2d") and self.is_weight(value.args[1]) and _plain_conv(value):
            self.convolutions.append((binding.var, value))
        super().visit_var_binding_(binding)

    def is_weight(self, expr) -> bool:
        return _is_tensor_const(expr) or expr in self.params

    def weight_var(self, matmul_var):
        return self._weight_of[matmul_var]

    def visit_call_(self, call):
        if not _is_op(call, *_SHAPE_ONLY_OPS):
            for arg in call.args:
                if isinstance(arg, tvm.ir.expr.Constant) or arg in self._transposed or arg in self.params:
                    self.data_uses[arg] = self.data_uses.get(arg, 0) + 1
        super().visit_call_(call)


def _is_op(expr, *names) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in names


def _is_tensor_const(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant) and isinstance(expr.value, tvm.runtime.Tensor)


def static_shape(weight) -> list[int]:
    shape = weight.value.shape if isinstance(weight, tvm.ir.expr.Constant) else weight.ty.shape.values
    return [int(s) for s in shape]


def _dtype(weight) -> str:
    return str(weight.value.dtype if isinstance(weight, tvm.ir.expr.Constant) else weight.ty.dtype)


def _plain_conv(call) -> bool:
    """NCHW/OIHW float32 conv2d without groups, the form the packed kernel computes."""
    a = call.attrs
    return (int(a.groups) == 1 and a.data_layout == "NCHW" and a.kernel_layout == "OIHW"
            and a.out_layout == "NCHW" and call.args[0].ty.dtype == "float32"
            and a.out_dtype in (None, "", "void", "float32") and len(call.args[0].ty.shape) == 4)
