"""CheckIndices: gathers check their indices in the compiled model (fluidml_tvm/transform/check_indices.py).

Every case runs in a child process (tests/guarded_run.py): without the checks
an out-of-range index may segfault, which must fail the test, not kill pytest.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax

import fluidml_tvm
from fluidml_tvm.analysis.gather_indices import gather_sites
from fluidml_tvm.frontend import onnx_to_relax
from fluidml_tvm.targets import describe
from fluidml_tvm.transform import CheckIndices

from conftest import TARGET
from guarded_run import guarded_outcomes

ort = pytest.importorskip("onnxruntime")

VOCAB, DIM, SEQ = 50, 8, 6


def _model(nodes, inputs, outputs, inits=(), name="m"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _const(name, array):
    return onnx.numpy_helper.from_array(np.asarray(array), name)


def embedding_model(index_type=TensorProto.INT64):
    """input_ids -> Gather(table) -> Add: a token embedding."""
    rng = np.random.default_rng(0)
    return _model(
        [helper.make_node("Gather", ["table", "input_ids"], ["emb"], name="embed/Gather"),
         helper.make_node("Add", ["emb", "bias"], ["out"], name="embed/Add")],
        [helper.make_tensor_value_info("input_ids", index_type, [1, SEQ])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, SEQ, DIM])],
        [_const("table", rng.standard_normal((VOCAB, DIM)).astype(np.float32)),
         _const("bias", rng.standard_normal(DIM).astype(np.float32))],
        name="embedding",
    )


def gather_elements_model():
    rng = np.random.default_rng(1)
    return _model(
        [helper.make_node("GatherElements", ["data", "idx"], ["g"], axis=1, name="pick/GatherElements"),
         helper.make_node("Relu", ["g"], ["out"])],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [3, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 4])],
        [_const("data", rng.standard_normal((3, 5)).astype(np.float32))],
        name="gather_elements",
    )


def gather_nd_model():
    rng = np.random.default_rng(2)
    return _model(
        [helper.make_node("GatherND", ["data", "coords"], ["out"], name="look/GatherND")],
        [helper.make_tensor_value_info("coords", TensorProto.INT64, [3, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 6])],
        [_const("data", rng.standard_normal((4, 5, 6)).astype(np.float32))],
        name="gather_nd",
    )


def argmax_gather_model(rows=8, width=12):
    """Gather(table[rows], ArgMax(x)): indices computed in the graph, up to width-1 >= rows."""
    rng = np.random.default_rng(3)
    return _model(
        [helper.make_node("ArgMax", ["x"], ["best"], axis=1, keepdims=0, name="choose/ArgMax"),
         helper.make_node("Gather", ["table", "best"], ["out"], name="lookup/Gather")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, width])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 3])],
        [_const("table", rng.standard_normal((rows, 3)).astype(np.float32))],
        name="argmax_gather",
    )


def scatter_model():
    """ScatterElements then ScatterND into copies of a graph input: indexed writes."""
    return _model(
        [helper.make_node("ScatterElements", ["x", "rows", "upd"], ["s1"], axis=0, name="write/ScatterElements"),
         helper.make_node("ScatterND", ["s1", "coords", "vals"], ["out"], name="write/ScatterND")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 3]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, [1, 3]),
         helper.make_tensor_value_info("coords", TensorProto.INT64, [2, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [5, 3])],
        [_const("upd", np.full((1, 3), 7.0, np.float32)), _const("vals", np.array([-1.0, -2.0], np.float32))],
        name="scatter",
    )


def ids(*values):
    x = np.arange(SEQ, dtype=np.int64)[None] % VOCAB
    x[0, : len(values)] = values
    return {"input_ids": x}


def onnxruntime(model, feeds):
    return ort.InferenceSession(model.SerializeToString()).run(None, feeds)


def assert_matches_onnxruntime(model, feed_sets, outcomes):
    for feeds, (status, value) in zip(feed_sets, outcomes):
        assert status == "ok", (feeds, value)
        for ours, theirs in zip(value, onnxruntime(model, feeds)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def assert_raises_naming(outcome, *words):
    status, value = outcome
    assert status == "error", f"no error, output {value}"
    assert value.startswith("IndexError:"), value
    for word in words:
        assert word in value, value


# ---------------------------------------------------------------- embedding


EMBED_GOOD = [ids(0, 1, VOCAB - 1), ids(-1, -VOCAB, 3, -7)]
EMBED_BAD = [VOCAB, 40000, 10**6, -40000, -VOCAB - 1]


@pytest.mark.parametrize("export", [False, True], ids=["compile", "export"])
def test_embedding_in_range_matches_ort_out_of_range_raises(tmp_path, export):
    model = embedding_model()
    feed_sets = EMBED_GOOD + [ids(3, bad) for bad in EMBED_BAD]
    outcomes = guarded_outcomes(model, feed_sets, tmp_path, export=export)
    assert_matches_onnxruntime(model, EMBED_GOOD, outcomes[: len(EMBED_GOOD)])
    for outcome in outcomes[len(EMBED_GOOD):]:
        assert_raises_naming(outcome, "Gather node 'embed/Gather'", "graph input 'input_ids'",
                             f"[{-VOCAB}, {VOCAB - 1}]")


def test_int32_indices(tmp_path):
    model = embedding_model(TensorProto.INT32)
    good = [{k: v.astype(np.int32) for k, v in f.items()} for f in EMBED_GOOD]
    bad = [{k: v.astype(np.int32) for k, v in ids(VOCAB).items()}, {k: v.astype(np.int32) for k, v in ids(-VOCAB - 1).items()}]
    outcomes = guarded_outcomes(model, good + bad, tmp_path)
    assert_matches_onnxruntime(model, good, outcomes[:2])
    for outcome in outcomes[2:]:
        assert_raises_naming(outcome, "embed/Gather", "input_ids")


def test_gather_elements(tmp_path):
    model = gather_elements_model()
    good = [{"idx": np.array([[0, 4, -1, -5]] * 3, np.int64)}]
    bad = [{"idx": np.array([[0, 5, 1, 2]] * 3, np.int64)}, {"idx": np.array([[0, -6, 1, 2]] * 3, np.int64)}]
    outcomes = guarded_outcomes(model, good + bad, tmp_path)
    assert_matches_onnxruntime(model, good, outcomes[:1])
    for outcome in outcomes[1:]:
        assert_raises_naming(outcome, "GatherElements node 'pick/GatherElements'", "graph input 'idx'", "[-5, 4]")


def test_gather_nd_checks_each_coordinate_against_its_axis(tmp_path):
    model = gather_nd_model()
    good = [{"coords": np.array([[0, 0], [3, 4], [-4, -1]], np.int64)}]
    # coordinate 0 indexes an axis of 4, coordinate 1 one of 5: 4 is fine as coordinate 1 only
    bad = [{"coords": np.array([[0, 0], [4, 0], [1, 1]], np.int64)},
           {"coords": np.array([[0, 5], [0, 0], [1, 1]], np.int64)},
           {"coords": np.array([[0, -6], [0, 0], [1, 1]], np.int64)}]
    outcomes = guarded_outcomes(model, good + bad, tmp_path)
    assert_matches_onnxruntime(model, good, outcomes[:1])
    for outcome in outcomes[1:]:
        assert_raises_naming(outcome, "GatherND node 'look/GatherND'", "graph input 'coords'", "[-4, 3], [-5, 4]")


def test_index_computed_in_the_graph_is_checked(tmp_path):
    model = argmax_gather_model(rows=8, width=12)
    x_good = np.zeros((4, 12), np.float32)
    x_good[np.arange(4), [0, 3, 7, 5]] = 1.0
    x_bad = x_good.copy()
    x_bad[2, 10] = 5.0  # ArgMax picks column 10 of a table with 8 rows
    outcomes = guarded_outcomes(model, [{"x": x_good}, {"x": x_bad}], tmp_path)
    assert_matches_onnxruntime(model, [{"x": x_good}], outcomes[:1])
    assert_raises_naming(outcomes[1], "Gather node 'lookup/Gather'", "tensor 'best' computed by R.argmax", "[-8, 7]")


# ---------------------------------------------------------------- the pass and the build


@pytest.mark.parametrize("kernels", [True, False])
def test_no_build_prints_the_fast_mode_warning(capfd, kernels):
    fluidml_tvm.compile(embedding_model(), TARGET, report=False, kernels=kernels)
    assert "Fast mode" not in capfd.readouterr().err
    # TVM's warning is what an unchecked build prints (so this test can see it)
    fluidml_tvm.compile(embedding_model(), TARGET, report=False, kernels=kernels, index_checks=False)
    assert "Fast mode segfaults" in capfd.readouterr().err


def _op_names(func):
    names = []

    @relax.expr_functor.visitor
    class _Ops(relax.PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op):
                names.append(call.op.name)
            super().visit_call_(call)

    _Ops().visit_expr(func)
    return names


def test_the_importers_negative_wrap_is_replaced_not_repeated():
    mod, _ = onnx_to_relax(embedding_model())
    (site,) = gather_sites(mod, mod["main"]).values()
    assert site.wrap_negative and site.source == "graph input 'input_ids'"
    assert site.label == "Gather node 'embed/Gather'"
    checked = CheckIndices(TARGET)(mod)
    ops = _op_names(checked["main"])
    # the check kernel wraps negatives itself; the importer's where(less(x, 0), add(x, n), x) is gone
    assert "relax.where" not in ops and "relax.less" not in ops
    assert ops.count("relax.call_tir") == 1 and "relax.take" in ops


def test_running_the_pass_twice_is_a_no_op():
    mod, _ = onnx_to_relax(gather_nd_model())
    once = CheckIndices(TARGET)(mod)
    tvm.ir.assert_structural_equal(CheckIndices(TARGET)(once), once)


RELAX_TAKE = """
import numpy as np, tvm
from tvm import relax
import fluidml_tvm
n = tvm.tirx.Var("n", "int64")
bb = relax.BlockBuilder()
ids = relax.Var("ids", relax.TensorType((1, n), "int64"))
w = relax.Var("w", relax.TensorType((10, 4), "float32"))
with bb.function("main", [ids, w], attrs={"num_input": 1}):
    with bb.dataflow():
        y = bb.emit_output(relax.op.add(bb.emit(relax.op.take(w, ids, axis=0)), relax.const(1.0)))
    bb.emit_func_output(y)
target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
vm = relax.VirtualMachine(tvm.compile(bb.get(), target, relax_pipeline=fluidml_tvm.get_pipeline(target)), tvm.cpu())
table = np.random.default_rng(0).standard_normal((10, 4)).astype("float32")
for i in ([[1, 2, 9]], [[10]], [[0, -1]], [[10**6, 3]]):
    i = np.array(i, "int64")
    try:
        out = vm["main"](tvm.runtime.tensor(i), tvm.runtime.tensor(table)).numpy()
        print("ok" if np.allclose(out, table[i] + 1) else "wrong")
    except IndexError as err:
        print(str(err).strip().splitlines()[-1])
"""


def test_a_relax_take_with_symbolic_shape_raises_outside_0_to_n():
    """Outside ONNX (no importer wrap), R.take's indices must lie in [0, n): TVM defines no negatives."""
    import os
    import subprocess
    import sys

    from guarded_run import ROOT

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", RELAX_TAKE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-600:]
    ok, *errors = proc.stdout.strip().splitlines()
    assert ok == "ok"
    assert len(errors) == 3
    for line in errors:
        assert line == "R.take: index out of range in graph input 'ids' (allowed [0, 9])", line


def test_scatters_check_where_they_write(tmp_path):
    model = scatter_model()
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    ok_rows, ok_coords = np.array([[0, -1, 4]], np.int64), np.array([[1, 2], [-5, -3]], np.int64)
    good = [{"x": x, "rows": ok_rows, "coords": ok_coords}]
    bad = [dict(good[0], rows=np.array([[0, 5, 1]], np.int64)),
           dict(good[0], rows=np.array([[0, -6, 1]], np.int64)),
           dict(good[0], coords=np.array([[1, 3], [0, 0]], np.int64)),
           dict(good[0], coords=np.array([[10**6, 0], [0, 0]], np.int64))]
    outcomes = guarded_outcomes(model, good + bad, tmp_path)
    assert_matches_onnxruntime(model, good, outcomes[:1])
    for outcome in outcomes[1:3]:
        assert_raises_naming(outcome, "ScatterElements node 'write/ScatterElements'", "graph input 'rows'", "[-5, 4]")
    for outcome in outcomes[3:]:
        assert_raises_naming(outcome, "ScatterND node 'write/ScatterND'", "graph input 'coords'", "[-5, 4], [-3, 2]")


def test_minilm_token_ids_outside_the_vocabulary_raise(tmp_path):
    """The issue's report on the real model: 30522 and 40000 answered wrongly, 10^6 and -40000 crashed."""

    pytest.importorskip("torch")
    import model_zoo

    model = onnx.load(str(model_zoo.model_path("minilm")))
    feeds = model_zoo.example_inputs("minilm")

    def with_token(value):
        ids = feeds["input_ids"].copy()
        ids[0, 5] = value
        return dict(feeds, input_ids=ids)

    good = [feeds, with_token(-1)]
    bad = [with_token(v) for v in (30522, 40000, 10**6, -40000, -30523)]
    outcomes = guarded_outcomes(model, good + bad, tmp_path)
    for feeds_, (status, value) in zip(good, outcomes):
        assert status == "ok", value
        np.testing.assert_allclose(value[0], onnxruntime(model, feeds_)[0], rtol=1e-4, atol=1e-4)
    for outcome in outcomes[len(good):]:
        assert_raises_naming(outcome, "Gather node '/m/embeddings/word_embeddings/Gather'",
                             "graph input 'input_ids'", "[-30522, 30521]")


def test_an_unnamed_node_is_named_by_its_output():
    model = embedding_model()
    model.graph.node[0].name = ""
    mod, _ = onnx_to_relax(model)
    (site,) = gather_sites(mod, mod["main"]).values()
    assert site.label == "Gather node (unnamed) writing 'emb'"



def _wrap_then_take(third_is_ids: bool):
    """The importer's wrap where(ids < 0, ids + n, ids), or the same with another third operand."""
    table = relax.const(np.zeros((VOCAB, DIM), np.float32))
    ids = relax.Var("ids", relax.TensorType((1, SEQ), "int64"))
    other = relax.Var("other", relax.TensorType((1, SEQ), "int64"))
    bb = relax.BlockBuilder()
    with bb.function("main", [ids, other]):
        with bb.dataflow():
            shape = bb.emit(relax.op.shape_to_tensor(bb.emit(relax.op.shape_of(table))))
            n = bb.emit(relax.op.take(shape, relax.const(0, "int64"), axis=0, mode="wrap"))
            negative = bb.emit(relax.op.less(ids, relax.const(0, "int64")))
            wrapped = bb.emit(relax.op.where(negative, bb.emit(relax.op.add(ids, n)), ids if third_is_ids else other))
            out = bb.emit_output(relax.op.take(table, wrapped, axis=0))
        bb.emit_func_output(out)
    mod = bb.get()
    return mod, wrapped


@pytest.mark.parametrize("third_is_ids", [True, False])
def test_only_the_importers_own_wrap_is_taken_over(third_is_ids):
    mod, wrapped = _wrap_then_take(third_is_ids)
    (site,) = gather_sites(mod, mod["main"]).values()
    if third_is_ids:  # checked in ONNX's range, the wrap done by the check kernel
        assert site.wrap_negative and site.source == "graph input 'ids'"
    else:  # where(a < 0, a + n, c) is the graph's own arithmetic: its result is checked in [0, n)
        assert not site.wrap_negative and site.indices.same_as(wrapped)


# ---------------------------------------------------------------- GPU (OpenCL) builds: clamp, never raise


def _asserts(func) -> int:
    import tvm_ffi

    found = []
    tvm_ffi.structural_walk(func.body, [(tvm.tirx.AssertStmt, found.append)], order="post")
    return len(found)


def test_a_gpu_build_clamps_indices_in_an_elementwise_kernel_and_never_asserts():
    from fluidml_tvm.analysis.gather_indices import CHECK_ATTR
    from fluidml_tvm.analysis.schedule_rules import binds_threads

    mod, _ = onnx_to_relax(embedding_model())
    gpu = CheckIndices(describe("adreno"))(mod)
    (kernel,) = [f for f in gpu.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert CHECK_ATTR in kernel.attrs and "op_pattern" not in kernel.attrs and _asserts(kernel) == 0
    assert _op_names(gpu["main"]).count("relax.call_tir") == 1
    (cpu_kernel,) = [f for f in CheckIndices(TARGET)(mod).functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert _asserts(cpu_kernel) == 1  # what the CPU build checks with, and the GPU one must not
    # the whole OpenCL build: every kernel (the clamp too) binds GPU threads, none asserts
    built = fluidml_tvm.compile(embedding_model(), "adreno", report=False).module
    kernels = [f for f in built.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert kernels and all(binds_threads(f) and _asserts(f) == 0 for f in kernels)


def test_the_gpu_clamp_wraps_negatives_and_clamps_out_of_range_indices():
    # the GPU module's kernels run here on the CPU: same values as on the device
    mod, _ = onnx_to_relax(embedding_model(), keep_params_in_input=False)
    gpu = CheckIndices(describe("adreno"))(mod)
    ex = tvm.compile(gpu, TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    ids = np.array([[0, -1, VOCAB - 1, VOCAB, -VOCAB - 3, 7]], dtype=np.int64)
    got = vm["main"](tvm.runtime.tensor(ids)).numpy()
    proto = embedding_model()
    table, bias = (onnx.numpy_helper.to_array(t) for t in proto.graph.initializer)
    expected = table[[0, VOCAB - 1, VOCAB - 1, VOCAB - 1, 0, 7]][None] + bias
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def constant_gather_model(indices):
    """Gather(table, constant ids): the table an input, so the importer cannot fold the gather."""
    return _model(
        [helper.make_node("Gather", ["table", "ids"], ["out"], name="fixed/Gather")],
        [helper.make_tensor_value_info("table", TensorProto.FLOAT, [VOCAB, DIM])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [len(indices), DIM])],
        [_const("ids", np.array(indices, dtype=np.int64))],
        name="constant_gather",
    )


@pytest.mark.parametrize("target,indices,folded", [
    (TARGET, [1, -2, 3], [1, VOCAB - 2, 3]),  # in range: checked here, no kernel
    ("adreno", [1, -2, VOCAB + 5], [1, VOCAB - 2, VOCAB - 1]),  # GPU: clamped here, no kernel
])
def test_constant_indices_are_checked_at_compile_time(target, indices, folded):
    mod, _ = onnx_to_relax(constant_gather_model(indices))
    checked = CheckIndices(describe(target))(mod)
    assert "relax.call_tir" not in _op_names(checked["main"])
    consts = []
    relax.analysis.post_order_visit(checked["main"], lambda e: consts.append(e.value.numpy())
                                    if isinstance(e, tvm.ir.GenericConst) and e.value.dtype == "int64" else None)
    assert any(c.tolist() == folded for c in consts)


def test_an_out_of_range_constant_index_keeps_its_cpu_check():
    mod, _ = onnx_to_relax(constant_gather_model([1, VOCAB + 5]))
    assert _op_names(CheckIndices(TARGET)(mod)["main"]).count("relax.call_tir") == 1
