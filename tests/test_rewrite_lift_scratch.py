"""LiftKernelScratch, Before/Expected: the Expected written by hand from what the pass should do."""

import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from fluidml_tvm.transform import LiftKernelScratch


@I.ir_module
class Before:
    @T.prim_func(private=True, s_tir=True)
    def exp_plus_one(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        tmp = T.sblock_alloc_buffer((8,), "float32")  # in the root block
        for i in range(8):
            with T.sblock("exp"):
                vi = T.axis.spatial(8, i)
                tmp[vi] = T.exp(a[vi])
        for i in range(8):
            with T.sblock("plus_one"):
                vi = T.axis.spatial(8, i)
                b[vi] = tmp[vi] + T.float32(1)

    @R.function(pure=False)
    def main(x: R.Tensor((8,), "float32")) -> R.Tensor((8,), "float32"):
        cls = Before
        y = R.builtin.alloc_tensor(R.shape([8]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        _ = cls.exp_plus_one(x, y)
        return y


@I.ir_module
class Expected:
    # The scratch buffer is the kernel's last parameter; nothing else in it changes.
    @T.prim_func(private=True, s_tir=True)
    def exp_plus_one(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32"), tmp: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("exp"):
                vi = T.axis.spatial(8, i)
                tmp[vi] = T.exp(a[vi])
        for i in range(8):
            with T.sblock("plus_one"):
                vi = T.axis.spatial(8, i)
                b[vi] = tmp[vi] + T.float32(1)

    # The caller allocates it right before the call, as a tensor the memory plan can place.
    @R.function(pure=False)
    def main(x: R.Tensor((8,), "float32")) -> R.Tensor((8,), "float32"):
        cls = Expected
        y = R.builtin.alloc_tensor(R.shape([8]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        scratch_tmp = R.builtin.alloc_tensor(R.shape([8]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        _ = cls.exp_plus_one(x, y, scratch_tmp)
        return y


def test_scratch_becomes_a_parameter_its_caller_allocates():
    tvm.ir.assert_structural_equal(LiftKernelScratch()(Before), Expected)


def test_a_kernel_without_scratch_is_left_alone():
    @I.ir_module
    class NoScratch:
        @T.prim_func(private=True, s_tir=True)
        def exp(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
            for i in range(8):
                with T.sblock("exp"):
                    vi = T.axis.spatial(8, i)
                    b[vi] = T.exp(a[vi])

        @R.function(pure=False)
        def main(x: R.Tensor((8,), "float32")) -> R.Tensor((8,), "float32"):
            cls = NoScratch
            y = R.builtin.alloc_tensor(R.shape([8]), R.dtype("float32"), R.prim_value(0), R.str("global"))
            _ = cls.exp(x, y)
            return y

    tvm.ir.assert_structural_equal(LiftKernelScratch()(NoScratch), NoScratch)
