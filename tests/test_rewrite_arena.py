"""The arena rewrite, Before/Expected: the Expected written by hand from what the rewrite should do."""

import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from fluidml_tvm.analysis.liveness import function_liveness
from fluidml_tvm.memory.plan import StorageSpec
from fluidml_tvm.rewrite.arena import rewrite_function


@I.ir_module
class Before:
    @T.prim_func(private=True)
    def inc(a: T.Buffer((16,), "float32"), b: T.Buffer((16,), "float32")):
        for i in range(16):
            b[i] = a[i] + T.float32(1)

    @R.function(pure=False)
    def main(x: R.Tensor((16,), "float32"), y: R.Tensor((16,), "float32")):
        cls = Before
        t0 = R.builtin.alloc_tensor(R.shape([16]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        _0 = cls.inc(x, t0)
        t1 = R.builtin.alloc_tensor(R.shape([16]), R.dtype("float32"), R.prim_value(0), R.str("global"))
        _1 = cls.inc(t0, t1)
        _2 = cls.inc(t1, y)
        return R.tuple()


@I.ir_module
class Expected:
    @T.prim_func(private=True)
    def inc(a: T.Buffer((16,), "float32"), b: T.Buffer((16,), "float32")):
        for i in range(16):
            b[i] = a[i] + T.float32(1)

    @R.function(pure=False)
    def main(x: R.Tensor((16,), "float32"), y: R.Tensor((16,), "float32")):
        cls = Expected
        # One storage, allocated before its first tensor; t0 at offset 0 needs no fix-up,
        # t1 at 64 goes through ensure_zero_offset (kernels reject a non-zero byte_offset).
        arena = R.memory.alloc_storage(R.shape([128]), R.prim_value(0), R.str("global"), R.dtype("uint8"))
        t0 = R.memory.alloc_tensor(arena, R.prim_value(0), R.shape([16]), R.dtype("float32"), R.prim_value(0))
        _0 = cls.inc(x, t0)
        t1_raw = R.memory.alloc_tensor(arena, R.prim_value(64), R.shape([16]), R.dtype("float32"), R.prim_value(0))
        t1 = R.memory.ensure_zero_offset(t1_raw)
        _1 = cls.inc(t0, t1)
        _2 = cls.inc(t1, y)
        return R.tuple()


def _allocs(func) -> dict:
    """The binding var of each ``R.builtin.alloc_tensor``, by name."""
    return function_liveness(func, Before).alloc_vars


def test_planned_tensors_become_views_of_one_arena():
    func = Before["main"]
    allocs = _allocs(func)
    after = rewrite_function(func, {allocs["t0"]: (0, 0), allocs["t1"]: (0, 64)}, [StorageSpec(128, 0, "global")])
    tvm.ir.assert_structural_equal(after, Expected["main"].with_attr("global_symbol", "main"), map_free_vars=True)


def test_unplanned_tensors_stay_as_they_are():
    func = Before["main"]
    after = rewrite_function(func, {}, [])
    tvm.ir.assert_structural_equal(after, func)
