"""WriteIntoOutput, Before/Expected: the Expected written by hand from what the pass should do."""

import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from fluidml_tvm.transform.write_into_output import WriteIntoOutput


@I.ir_module
class Before:
    @T.prim_func(private=True, s_tir=True)
    def exp(x: T.Buffer((4, 8), "float32"), y: T.Buffer((4, 8), "float32")):
        for i, j in T.grid(4, 8):
            with T.sblock("exp"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = T.exp(x[vi, vj])

    @T.prim_func(private=True, s_tir=True)
    def reshape(x: T.Buffer((4, 8), "float32"), y: T.Buffer((32,), "float32")):
        for i in range(32):
            with T.sblock("reshape"):
                vi = T.axis.spatial(32, i)
                y[vi] = x[vi // 8, vi % 8]

    @R.function(pure=False)
    def main(x: R.Tensor((4, 8), "float32")) -> R.Tensor((32,), "float32"):
        cls = Before
        t = R.builtin.alloc_tensor(R.shape([4, 8]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        _0 = cls.exp(x, t)
        y = R.builtin.alloc_tensor(R.shape([32]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        _1 = cls.reshape(t, y)  # a whole copy into the returned tensor of one that dies here
        return y


@I.ir_module
class Expected:
    @T.prim_func(private=True, s_tir=True)
    def exp(x: T.Buffer((4, 8), "float32"), y: T.Buffer((4, 8), "float32")):
        for i, j in T.grid(4, 8):
            with T.sblock("exp"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = T.exp(x[vi, vj])

    @T.prim_func(private=True, s_tir=True)
    def reshape(x: T.Buffer((4, 8), "float32"), y: T.Buffer((32,), "float32")):
        for i in range(32):
            with T.sblock("reshape"):
                vi = T.axis.spatial(32, i)
                y[vi] = x[vi // 8, vi % 8]

    # The returned tensor is allocated where the intermediate was, the intermediate is a
    # view of it, and exp writes the output directly: no copy call is left.
    @R.function(pure=False)
    def main(x: R.Tensor((4, 8), "float32")) -> R.Tensor((32,), "float32"):
        cls = Expected
        y = R.builtin.alloc_tensor(R.shape([32]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        t = R.reshape(y, R.shape([4, 8]))
        _0 = cls.exp(x, t)
        return y


def test_the_producer_writes_the_returned_tensor_directly():
    tvm.ir.assert_structural_equal(WriteIntoOutput()(Before), Expected)


def test_a_source_read_after_the_copy_keeps_the_copy():
    @I.ir_module
    class ReadAfter:
        @T.prim_func(private=True, s_tir=True)
        def exp(x: T.Buffer((4, 8), "float32"), y: T.Buffer((4, 8), "float32")):
            for i, j in T.grid(4, 8):
                with T.sblock("exp"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    y[vi, vj] = T.exp(x[vi, vj])

        @T.prim_func(private=True, s_tir=True)
        def reshape(x: T.Buffer((4, 8), "float32"), y: T.Buffer((32,), "float32")):
            for i in range(32):
                with T.sblock("reshape"):
                    vi = T.axis.spatial(32, i)
                    y[vi] = x[vi // 8, vi % 8]

        @R.function(pure=False)
        def main(x: R.Tensor((4, 8), "float32")) -> R.Tuple(R.Tensor((32,), "float32"), R.Tensor((4, 8), "float32")):
            cls = ReadAfter
            t = R.builtin.alloc_tensor(R.shape([4, 8]), R.dtype("float32"), R.prim_value(0), R.str("global"))
            _0 = cls.exp(x, t)
            y = R.builtin.alloc_tensor(R.shape([32]), R.dtype("float32"), R.prim_value(0), R.str("global"))
            _1 = cls.reshape(t, y)
            z = R.builtin.alloc_tensor(R.shape([4, 8]), R.dtype("float32"), R.prim_value(0), R.str("global"))
            _2 = cls.exp(t, z)  # t is still read: writing y over it would be wrong
            return (y, z)

    tvm.ir.assert_structural_equal(WriteIntoOutput()(ReadAfter), ReadAfter)
