"""PackWeights: constant matmul weights packed as [N/n, K, n], folded at build time, never kept twice."""


import numpy as np
import onnx
import pytest
import tvm
from tvm import relax

from fluidml_tvm.analysis.packing import column_block, plan_packing
from fluidml_tvm.example_model import build_example_model, example_inputs as example_feeds
from fluidml_tvm.frontend import onnx_to_relax
from fluidml_tvm.pipeline import stages
from fluidml_tvm.transform.pack_weights import PackWeights
from fluidml_tvm.transform.schedule_kernels import ScheduleKernels

from conftest import TARGET, assert_close, run_vm, tensor_constants, zoo_model


RNG = np.random.default_rng(0)


def build(mod, pack=True, schedule=False, target=TARGET):
    parts = stages(target)
    passes = ([PackWeights(target)] if pack else []) + parts["fuse"] + ([ScheduleKernels(target)] if schedule else [])
    passes += parts["plan"] + parts["lower"] + parts["finalize"]
    with target:
        final = tvm.transform.Sequential(passes)(mod)
    return tvm.compile(final, target, relax_pipeline=None), final


def fused(mod, target=TARGET):
    with target:
        return tvm.transform.Sequential([PackWeights(target)] + stages(target)["fuse"])(mod)


def constant_bytes(mod) -> int:
    """Bytes of the distinct constants the Relax functions of ``mod`` hold (what the VM stores)."""
    return sum(c.nbytes for c in tensor_constants(mod))


def matmul_module(x_shape, w, transposed=False, bias=None, shared_take=False):
    """``x @ W`` (or ``x @ W^T`` via permute_dims, as ONNX Gemm(transB=1) imports) with constant ``W``."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    ids = relax.Var("ids", relax.TensorType((3,), "int64"))
    params = [x, ids] if shared_take else [x]
    with bb.function("main", params):
        with bb.dataflow():
            wc = relax.const(w)
            weight = bb.emit(relax.op.permute_dims(wc, [1, 0])) if transposed else wc
            y = bb.emit(relax.op.matmul(x, weight))
            if bias is not None:
                y = bb.emit(relax.op.add(y, relax.const(bias)))
            outs = [y]
            if shared_take:
                outs.append(bb.emit(relax.op.take(wc, ids, axis=0)))
            out = bb.emit_output(relax.Tuple(outs) if len(outs) > 1 else outs[0])
        bb.emit_func_output(out)
    return bb.get()


def run(mod, inputs, **kw):
    return run_vm(build(mod, **kw)[0], inputs)


@pytest.mark.parametrize("m,k,n,transposed", [(16, 32, 64, False), (5, 24, 40, False), (16, 32, 48, True),
                                              (3, 16, 10, True)])
def test_packed_matmul_matches_unpacked(m, k, n, transposed):
    w = RNG.standard_normal((n, k) if transposed else (k, n)).astype("float32")
    bias = RNG.standard_normal(n).astype("float32")
    mod = matmul_module((1, m, k), w, transposed, bias)
    x = RNG.standard_normal((1, m, k)).astype("float32")
    expected = run(mod, [x], pack=False)
    assert_close(run(mod, [x]), expected)
    assert_close(run(mod, [x], schedule=True), expected)


def test_packed_weight_is_folded_to_one_constant():
    k, n = 32, 40  # 40 columns: packed with block 8 (4 lanes x 2) on the test target
    w = RNG.standard_normal((k, n)).astype("float32")
    mod = fused(matmul_module((4, k), w))
    shapes = []

    @relax.expr_functor.visitor
    class _Shapes(relax.PyExprVisitor):
        def visit_generic_const_(self, const):
            if isinstance(const.value, tvm.runtime.Tensor):
                shapes.append(tuple(const.value.shape))

    _Shapes().visit_expr(mod["main"])
    b = column_block(n, 4)
    assert shapes == [(-(-n // b), k, b)]
    assert "layout_transform" not in mod["main"].script()


def test_conv2d_weight_is_packed_by_output_channel():
    w = RNG.standard_normal((10, 3, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 9, 9), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, relax.const(w), strides=2, padding=1))
        bb.emit_func_output(out)
    mod = bb.get()
    assert [d.layout for d in plan_packing(mod["main"], lanes=4)] == ["conv2d"]
    assert constant_bytes(fused(mod)) == 2 * 8 * 3 * 3 * 3 * 4  # 10 channels padded to 2 blocks of 8
    inputs = [RNG.standard_normal((1, 3, 9, 9)).astype("float32")]
    expected = run(mod, inputs, pack=False)
    assert_close(run(mod, inputs), expected)
    assert_close(run(mod, inputs, schedule=True), expected)


def test_shared_weight_is_not_copied():
    # one constant read by take (an embedding) and, transposed, by the matmul (a tied LM head)
    vocab, hidden = 20, 16
    w = RNG.standard_normal((vocab, hidden)).astype("float32")
    mod = matmul_module((1, 4, hidden), w, transposed=True, shared_take=True)
    decisions = plan_packing(mod["main"], lanes=4)
    assert [d.layout for d in decisions] == ["dense"]
    ex, final = build(mod, schedule=True)
    assert constant_bytes(final) == w.nbytes
    inputs = [RNG.standard_normal((1, 4, hidden)).astype("float32"), np.array([0, 7, 19], "int64")]
    assert_close(run_vm(ex, inputs), run(mod, inputs, pack=False))


def test_shared_row_major_weight_is_left_alone():
    w = RNG.standard_normal((16, 16)).astype("float32")
    mod = matmul_module((1, 4, 16), w, shared_take=True)
    assert plan_packing(mod["main"], lanes=4) == []


def _load(name):
    if name == "example":
        model = build_example_model()
        return model, example_feeds(model)
    import model_zoo

    return onnx.load(str(zoo_model(name))), model_zoo.example_inputs(name)


def _initializer_bytes(model) -> int:
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


@pytest.mark.parametrize("name", ["example", "gpt2-tiny"])
def test_model_packed_matches_and_holds_no_extra_constant_bytes(name):
    model, feeds = _load(name)
    mod, _ = onnx_to_relax(model)
    inputs = list(feeds.values())
    ex, final = build(mod, schedule=True)
    assert constant_bytes(final) <= _initializer_bytes(model)
    assert_close(run_vm(ex, inputs), run(mod, inputs, pack=False))


def test_tied_embedding_is_stored_once():
    model, _ = _load("gpt2-tiny")
    mod, _ = onnx_to_relax(model)
    decisions = plan_packing(mod["main"], lanes=4)
    assert sum(d.layout == "dense" for d in decisions) == 1  # the LM head reads the embedding in place
    assert constant_bytes(fused(mod)) <= _initializer_bytes(model)
