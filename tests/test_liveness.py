"""Liveness through a kernel with several outputs: each projection of the tuple refers to its own field only."""

from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from fluidml_tvm.analysis.liveness import function_liveness
from fluidml_tvm.analysis.nests import SLOTS


@I.ir_module
class Split:
    @T.prim_func(private=True)
    def split(x: T.Buffer((32,), "float32"), a: T.Buffer((16,), "float32"), b: T.Buffer((16,), "float32")):
        for i in range(16):
            a[i] = x[i]
            b[i] = x[i + 16]

    @T.prim_func(private=True)
    def inc(a: T.Buffer((16,), "float32"), b: T.Buffer((16,), "float32")):
        for i in range(16):
            b[i] = a[i] + T.float32(1)

    @R.function(pure=False)
    def main(x: R.Tensor((32,), "float32"), y: R.Tensor((16,), "float32"), z: R.Tensor((16,), "float32")):
        cls = Split
        a = R.builtin.alloc_tensor(R.shape([16]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        b = R.builtin.alloc_tensor(R.shape([16]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        _0 = cls.split(x, a, b)
        t = (a, b)  # how TVM's lowering binds a kernel's outputs (q, k, v of attention's Split)
        first = t[0]
        _1 = cls.inc(first, y)  # the last use of a
        second = t[1]
        _2 = cls.inc(second, z)
        return R.tuple()


def test_a_tuple_field_dies_at_its_own_last_use():
    live = function_liveness(Split["main"], Split)
    steps = [b.var.name for b in live.bindings]
    a_end, b_end = live.lifetimes["a"][1], live.lifetimes["b"][1]
    # a ends in the call that reads ``first``, before ``second`` is even projected (was: with b, at ``_2``)
    assert a_end < steps.index("second") * SLOTS <= b_end
