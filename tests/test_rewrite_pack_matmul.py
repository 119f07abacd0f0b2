"""PackWeights, Before/Expected: the Expected written by hand from what the pass should do.

``x @ W`` with a constant W of K=16 rows and N=32 columns, for a target of 8 float
lanes and no layout cost records: W is re-laid out as [N/16, K, 16] (the default
block: two vectors of columns, each K x 16 block contiguous) and the matmul reads
the packed weight; the choice is recorded on the function, with no time.
"""

import json

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from fluidml_tvm.analysis.weight_layouts import LAYOUTS_ATTR
from fluidml_tvm.layout.costs import LayoutCostDatabase
from fluidml_tvm.targets import describe
from fluidml_tvm.transform import PackWeights

TARGET = describe({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})  # AVX2: 8 float lanes
W = np.arange(16 * 32, dtype="float32").reshape(16, 32)


def before() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(x, relax.const(W)), name_hint="y")
        bb.emit_func_output(y)
    return bb.get()


@T.prim_func(private=True, s_tir=True)
def packed_matmul(x: T.Buffer((T.int64(4), T.int64(16)), "float32"),
                  packed_weight: T.Buffer((T.int64(2), T.int64(16), T.int64(16)), "float32"),
                  out: T.Buffer((T.int64(4), T.int64(32)), "float32")):
    T.func_attr({"tirx.noalias": True})
    for i, j, k in T.grid(T.int64(4), T.int64(32), T.int64(16)):
        with T.sblock("packed_matmul"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                out[vi, vj] = T.float32(0)
            # column j of W is column j % 16 of block j // 16
            out[vi, vj] = out[vi, vj] + x[vi, vk] * packed_weight[vj // T.int64(16), vk, vj % T.int64(16)]


def expected() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    kernel = bb.add_func(packed_matmul, "packed_matmul")
    x = relax.Var("x", relax.TensorType((4, 16), "float32"))
    choice = [{"value": "y", "workload": ["matmul", 4, 16, 32, "kn"], "layout": "packed", "block": 16,
               "seconds": None}]
    with bb.function("main", [x], attrs={LAYOUTS_ATTR: json.dumps(choice)}):
        with bb.dataflow():
            packed = bb.emit(relax.op.layout_transform(relax.const(W), index_map=lambda k, n: (n // 16, k, n % 16)),
                             name_hint="packed_weight")
            y = bb.emit_output(relax.call_tir(kernel, [x, packed], relax.TensorType((4, 32), "float32")),
                               name_hint="y")
        bb.emit_func_output(y)
    return bb.get()


def test_a_constant_weight_is_packed_in_blocks_of_two_vectors():
    with TARGET.target:
        got = PackWeights(TARGET, LayoutCostDatabase())(before())  # no records: the default block
    relax.analysis.well_formed(got)  # raises on a DataflowVar returned from its block: outputs stay outputs
    tvm.ir.assert_structural_equal(got, expected(), map_free_vars=True)
