"""CheckIndices, Before/Expected: the Expected written by hand from what the pass should do.

A gather (``take`` of a constant table by an input) gets its indices checked by a small
serial kernel that raises IndexError, naming the op and the graph input, on an index
outside ``[0, 10)``; the gather reads the checked indices in clip mode (never out of
bounds, and no fast-mode warning). Both sides are simplified by TVM's StmtSimplify before
the comparison, so the Expected need not spell out the pass's incidental casts.
"""

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from fluidml_tvm.analysis.gather_indices import CHECK_ATTR
from fluidml_tvm.targets import describe
from fluidml_tvm.transform import CheckIndices

TARGET = describe({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
TABLE = np.arange(40, dtype="float32").reshape(10, 4)


def before() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType((6,), "int64"))
    with bb.function("main", [ids]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.take(relax.const(TABLE), ids, axis=0), name_hint="y")
        bb.emit_func_output(y)
    return bb.get()


@T.prim_func(private=True, s_tir=True)
def checked_indices(a: T.handle, b: T.handle):
    T.func_attr({CHECK_ATTR: True, "op_pattern": 8, "tirx.is_scheduled": True, "tirx.noalias": True})
    ids = T.match_buffer(a, (T.int64(6),), "int64", elem_offset=T.int64())
    checked = T.match_buffer(b, (T.int64(6),), "int64", elem_offset=T.int64())
    with T.sblock("checked_indices"):  # one opaque block: nothing fuses into it or parallelizes it
        T.reads()
        T.writes()
        for i in range(T.int64(6)):
            assert ids[i] >= T.int64(0) and ids[i] < T.int64(10), (
                "IndexError", ["R.take: index out of range in graph input 'ids' (allowed [0, 9])"])
            checked[i] = ids[i]


def expected() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    kernel = bb.add_func(checked_indices, "checked_indices")
    ids = relax.Var("ids", relax.TensorType((6,), "int64"))
    with bb.function("main", [ids]):
        with bb.dataflow():
            checked = bb.emit(relax.call_tir(kernel, [ids], relax.TensorType((6,), "int64")))
            y = bb.emit_output(relax.op.take(relax.const(TABLE), checked, axis=0, mode="clip"), name_hint="y")
        bb.emit_func_output(y)
    return bb.get()


def _simplified(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.tirx.transform.StmtSimplify()(mod)


def test_the_gather_reads_indices_a_serial_kernel_checked():
    with TARGET.target:
        got = CheckIndices(TARGET)(before())
    relax.analysis.well_formed(got)
    tvm.ir.assert_structural_equal(_simplified(got), _simplified(expected()), map_free_vars=True)
