"""ReorderForMemory, Before/Expected: the Expected order worked out by hand.

``a`` (4 KiB) and ``b`` (2 KiB) are each reduced to a small tensor. Computed as
written, both are live together (6 KiB). Reducing each right after computing it
keeps one of them live at a time; ``a`` first is the better of the two (peak
4 KiB + 128 B against 4 KiB + 192 B with ``b`` first, whose reduction would be
live while ``a`` is reduced).
"""

import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from fluidml_tvm.transform.reorder_for_memory import ReorderForMemory


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((32, 32), "float32"), y: R.Tensor((16, 32), "float32")):
        with R.dataflow():
            a = R.exp(x)
            b = R.exp(y)
            a2 = R.sum(a, axis=1)
            b2 = R.sum(b, axis=1)
            out = R.concat([a2, b2])
            R.output(out)
        return out


@I.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((32, 32), "float32"), y: R.Tensor((16, 32), "float32")):
        with R.dataflow():
            a = R.exp(x)
            a2 = R.sum(a, axis=1)
            b = R.exp(y)
            b2 = R.sum(b, axis=1)
            out = R.concat([a2, b2])
            R.output(out)
        return out


def _legalized(mod):
    with tvm.target.Target("llvm"):
        return relax.transform.LegalizeOps()(mod)


def test_each_large_tensor_is_reduced_before_the_next_is_made():
    tvm.ir.assert_structural_equal(ReorderForMemory()(_legalized(Before)), _legalized(Expected))


def test_an_order_already_best_is_kept():
    expected = _legalized(Expected)
    tvm.ir.assert_structural_equal(ReorderForMemory()(expected), expected)
