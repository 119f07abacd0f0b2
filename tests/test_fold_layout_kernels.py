"""FoldLayoutKernels: copy kernels merged into their producer or consumer, results unchanged."""

from functools import partial

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax

from fluidml_tvm.analysis.layout_kernels import find_folds, is_copy, recorded_folds
from fluidml_tvm.analysis.schedule_rules import schedule_rules
from fluidml_tvm.frontend import onnx_to_relax, random_inputs
from fluidml_tvm.pipeline import STAGES, stages
from fluidml_tvm.transform import PipelinePlacementError
from fluidml_tvm.rewrite.fold_layout import fold_groups, merged_kernel
from fluidml_tvm.schedule import schedule_function
from fluidml_tvm.transform.fold_layout_kernels import FoldLayoutKernels

from conftest import TARGET, run_vm, zoo_model


RNG = np.random.default_rng(0)
R = relax.op
PRODUCER = lambda fold: fold.kind == "producer"
CONSUMER = lambda fold: fold.kind == "consumer"


def passes(fold=None, upto="finalize", target=TARGET):
    """The package's pipeline with ``fold`` between FuseOps and FuseTIR, up to stage ``upto``."""
    parts = stages(target)
    legalize = relax.pipeline.legalize_passes(target)
    assert legalize[-1].info.name == "FuseTIR"
    extra = [fold] if fold is not None else []
    parts["fuse"] = relax.pipeline.library_dispatch_passes(target) + legalize[:-1] + extra + legalize[-1:]
    names = STAGES[: STAGES.index(upto) + 1]
    return [p for name in names for p in parts[name]], parts


def fused(mod, fold=None):
    """After FuseTIR (the "pack" and "fuse" stages)."""
    seq, _ = passes(fold, upto="fuse")
    with TARGET:
        return tvm.transform.Sequential(seq)(mod)


def after_fuse_ops(mod):
    """Between FuseOps and FuseTIR, where the pass runs."""
    seq, _ = passes(upto="pack")
    seq += relax.pipeline.library_dispatch_passes(TARGET) + relax.pipeline.legalize_passes(TARGET)[:-1]
    with TARGET:
        return tvm.transform.Sequential(seq)(mod)


def build(mod, fold=None):
    """The executable, ``{kernel: schedule rule}`` and the kinds of the folds taken (as the build records them)."""
    seq, _ = passes(fold)
    with TARGET:
        final = tvm.transform.Sequential(seq)(mod)
    return tvm.compile(final, TARGET, relax_pipeline=None), schedule_rules(final), folds_taken(final)


def folds_taken(mod) -> list:
    """The kinds of the folds FoldLayoutKernels recorded on ``main``, in order."""
    return [f["kind"] for f in recorded_folds(mod["main"])]


def copy_kernels(mod) -> int:
    return sum(isinstance(f, tvm.tirx.PrimFunc) and is_copy(f) for f in mod.functions.values())


def copy_calls(mod) -> int:
    """``call_tir`` of a copy kernel in ``main`` (each one a tensor written to memory)."""
    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if (
        isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.call_tir") else None)
    return sum(is_copy(mod[c.args[0]]) for c in calls)


def kernel_name(call) -> str:
    """The grouped function a call calls, or a ``call_tir``'s PrimFunc."""
    return (call.op if isinstance(call.op, relax.GlobalVar) else call.args[0]).name_hint


def tvm_default(mod, inputs):
    return run_vm(tvm.compile(mod, TARGET, relax_pipeline=relax.get_default_pipeline(TARGET)), inputs)


def assert_matches(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


def attention_like(second_reader=None, heads=4, head=16, perm=(1, 0, 2)):
    """``x @ W + b`` -> reshape to heads -> permute_dims -> batch matmul with ``v`` (static shapes).

    ``perm`` ``(1, 0, 2)`` splits Q/V heads ``[heads, 32, head]``, ``(1, 2, 0)`` gives
    K^T ``[heads, head, 32]``.  ``second_reader``: ``"producer"`` also feeds
    ``x @ W + b`` to another matmul, ``"consumer"`` feeds the permuted tensor to two matmuls.
    """
    n = heads * head
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((32, 64), "float32"))
    v = relax.Var("v", relax.TensorType((heads, 32 if perm[-1] == 0 else head, 8), "float32"))
    with bb.function("main", [x, v]):
        with bb.dataflow():
            w = relax.const(RNG.standard_normal((64, n)).astype("float32"))
            b = relax.const(RNG.standard_normal((n,)).astype("float32"))
            y = bb.emit(R.add(R.matmul(x, w), b))
            split = bb.emit(R.permute_dims(R.reshape(y, (32, heads, head)), list(perm)))
            outs = [bb.emit(R.matmul(split, v))]
            if second_reader == "producer":
                outs.append(bb.emit(R.matmul(y, relax.const(RNG.standard_normal((n, 8)).astype("float32")))))
            if second_reader == "consumer":
                outs.append(bb.emit(R.matmul(split, R.multiply(v, relax.const(2.0, "float32")))))
            out = bb.emit_output(relax.Tuple(outs) if len(outs) > 1 else outs[0])
        bb.emit_func_output(out)
    return bb.get()


def inputs_of(mod):
    return [RNG.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32") for p in mod["main"].params]


def test_analysis_finds_both_folds_of_the_head_split():
    mod = after_fuse_ops(attention_like())
    folds = find_folds(mod, mod["main"])
    assert [f.kind for f in folds] == ["producer", "consumer"]
    assert folds[0].layout_var.same_as(folds[1].layout_var)
    bound = {b.var: b.value for b in mod["main"].body.blocks[0].bindings}
    assert kernel_name(bound[folds[0].layout_var]) == "fused_reshape_transpose"
    assert "matmul" in kernel_name(bound[folds[0].partner_var])  # the matmul + bias writes the input
    assert "matmul" in kernel_name(bound[folds[1].partner_var])  # the batch matmul reads the output


@pytest.mark.parametrize("kind", [PRODUCER, CONSUMER], ids=["producer", "consumer"])
def test_fold_removes_the_copy_kernel_and_keeps_results(kind):
    mod = attention_like()
    inputs = inputs_of(mod)
    plain, folded = fused(mod), fused(mod, FoldLayoutKernels(TARGET, kind))
    assert copy_kernels(plain) == 1 and copy_kernels(folded) == 0
    grouped = after_fuse_ops(mod)
    with TARGET:
        merged = FoldLayoutKernels(TARGET, kind)(grouped)
    relax.analysis.well_formed(merged)  # raises on a violation
    assert len(merged.functions) < len(grouped.functions)  # the two groups' functions are gone
    ex, rules, _ = build(mod, FoldLayoutKernels(TARGET, kind))
    assert [r for name, r in rules.items() if "transpose" in name] == ["matmul"]
    assert_matches(run_vm(ex, inputs), tvm_default(mod, inputs))


@pytest.mark.parametrize("reader", ["producer", "consumer"])
def test_no_fold_when_the_intermediate_has_a_second_reader(reader):
    mod = attention_like(second_reader=reader)
    grouped = after_fuse_ops(mod)
    folds = find_folds(grouped, grouped["main"])
    assert reader not in [f.kind for f in folds]
    everything = fused(mod, FoldLayoutKernels(TARGET, lambda fold: True))
    assert copy_calls(everything) == copy_calls(fused(mod)) - len(folds_taken(everything))
    assert reader not in folds_taken(everything)
    inputs = inputs_of(mod)
    assert_matches(run_vm(build(mod, FoldLayoutKernels(TARGET, lambda fold: True))[0], inputs),
                   tvm_default(mod, inputs))


def test_default_prefers_the_producer_and_keeps_the_matmul_schedule():
    _, rules, folds = build(attention_like(), FoldLayoutKernels(TARGET))
    assert folds == ["producer"]
    assert [r for name, r in rules.items() if "transpose" in name] == ["matmul"]


@pytest.mark.parametrize("perm", [(1, 0, 2), (1, 2, 0)], ids=["heads", "transposed-heads"])
def test_default_refuses_a_producer_whose_tile_straddles_heads(perm):
    """Heads of 6 columns, register tiles of 4 or 8: the epilogue of the merged matmul
    (``reverse_compute_at`` through the permutation) would get loops of symbolic extent,
    which fail to compile or skip part of the output, so the matmul rule refuses the merged
    kernel.  The default folds into the consumer."""
    mod = attention_like(heads=4, head=6, perm=perm)
    grouped = after_fuse_ops(mod)
    producer = find_folds(grouped, grouped["main"])[0]
    (bindings,) = fold_groups(grouped["main"], [producer]).values()
    _, rule = schedule_function(merged_kernel(grouped, bindings), TARGET)
    assert producer.kind == "producer" and rule != "matmul"
    ex, _, folds = build(mod, FoldLayoutKernels(TARGET))
    assert folds == ["consumer"]
    inputs = inputs_of(mod)
    assert_matches(run_vm(ex, inputs), tvm_default(mod, inputs))


def test_before_legalization_is_a_placement_error():
    with TARGET, pytest.raises(PipelinePlacementError, match="FuseOps"):
        FoldLayoutKernels(TARGET, lambda fold: True)(attention_like())


@pytest.fixture(scope="module")
def gpt2_tiny():
    proto = onnx.load(str(zoo_model("gpt2-tiny")))
    mod, _ = onnx_to_relax(proto)
    inputs = list(random_inputs(proto).values())
    return mod, inputs, tvm_default(mod, inputs)


def test_gpt2_tiny_candidates(gpt2_tiny):
    mod = after_fuse_ops(gpt2_tiny[0])
    folds = find_folds(mod, mod["main"])
    bound = {b.var: b.value for block in mod["main"].body.blocks for b in block.bindings}
    names = lambda kind: {kernel_name(bound[f.layout_var]) for f in folds if f.kind == kind}
    # Q, K^T, V head splits read a split's tuple element: only their consumers can take them
    assert {"fused_reshape3_transpose", "fused_reshape3_transpose1"} <= names("consumer")
    assert "fused_reshape3_transpose" not in names("producer")
    # the head merge after the attention matmul can go either way
    assert "fused_transpose2_reshape4" in names("producer") & names("consumer")


@pytest.mark.parametrize("kind", [PRODUCER, CONSUMER, None], ids=["producer", "consumer", "default"])
def test_gpt2_tiny_folds_keep_results(gpt2_tiny, kind):
    mod, inputs, expected = gpt2_tiny
    ex, rules, folds = build(mod, FoldLayoutKernels(TARGET, kind))
    assert folds and (kind is None or set(folds) == {"producer" if kind is PRODUCER else "consumer"})
    assert copy_calls(fused(mod, FoldLayoutKernels(TARGET, kind))) < copy_calls(fused(mod))
    merged = {name: rule for name, rule in rules.items() if "transpose" in name and "matmul" in name}
    assert merged and set(merged.values()) == {"matmul"}
    assert_matches(run_vm(ex, inputs), expected)


def test_measured_costs_decide_between_schedulable_folds(tmp_path):
    from fluidml_tvm.layout.costs import KernelCosts, LayoutCostDatabase, LayoutRecord
    from fluidml_tvm.tuning.measure_layouts import kernel_seconds

    mod = attention_like()
    timer = partial(kernel_seconds, target=TARGET)
    measured = FoldLayoutKernels(target=TARGET, costs=KernelCosts(LayoutCostDatabase(tmp_path), TARGET, timer))
    applied = folds_taken(fused(mod, measured))
    records = LayoutCostDatabase(tmp_path).records(KernelCosts(LayoutCostDatabase(), TARGET).key)
    # the producer fold's merged, apart and copy kernels; the consumer fold's two more if it was refused
    assert len(records) in (3, 5) and all(0 < r.seconds < 1e-2 for r in records)
    merged, apart, copy = (r.seconds for r in records[:3])
    if merged <= apart + copy:
        assert applied == ["producer"] and len(records) == 3
    else:  # refused; the consumer fold was timed too, and taken if it pays
        assert applied in ([], ["consumer"]) and len(records) == 5
    # the producer merge recorded as slow, the consumer's unknown: the consumer gets the copy
    path = tmp_path / "layout_costs.jsonl"
    slow = LayoutRecord(records[0].target, records[0].workload, records[0].layout, 1.0)
    path.write_text("\n".join([slow.to_json()] + [r.to_json() for r in records[1:3]]) + "\n")
    decided = FoldLayoutKernels(target=TARGET, costs=KernelCosts(LayoutCostDatabase(path), TARGET))
    ex, _, folds = build(mod, decided)
    assert folds == ["consumer"]
    inputs = inputs_of(mod)
    assert_matches(run_vm(ex, inputs), tvm_default(mod, inputs))


def test_no_fold_into_an_index_check_kernel():
    """ids -> reshape -> take: CheckIndices puts its opaque check kernel (no declared reads or writes)
    between the reshape and the take; the reshape must not be folded into it (FuseTIR then failed)."""
    table_np = RNG.standard_normal((10, 4)).astype("float32")
    bb = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType((2, 3), "int64"))
    with bb.function("main", [ids]):
        with bb.dataflow():
            table = relax.const(table_np)
            flat = bb.emit(R.reshape(ids, (6,)))
            out = bb.emit_output(R.take(table, flat, axis=0, mode="fast"))
        bb.emit_func_output(out)
    source = bb.get()
    mod = after_fuse_ops(source)
    checks = {gv for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
              and f.attrs is not None and "fluidml_tvm.checked_indices" in f.attrs}
    assert checks  # the pack stage put the check in
    bound = {b.var: b.value for block in mod["main"].body.blocks for b in block.bindings}
    partners = [bound[f.partner_var] for f in find_folds(mod, mod["main"])]
    assert not [c for c in partners if c.op.name == "relax.call_tir" and c.args[0] in checks]
    fold = FoldLayoutKernels(TARGET, CONSUMER)
    ex, _, _ = build(source, fold)
    x = np.array([[0, 9, 3], [1, 2, 8]], dtype=np.int64)
    assert_matches(run_vm(ex, [x]), [table_np[x.reshape(6)]])
