"""ScheduleKernels: every fused kernel gets a default schedule, results unchanged, plans still valid."""


import numpy as np
import pytest
import tvm
from tvm import relax

from fluidml_tvm.example_model import build_example_model, example_inputs as example_feeds
from fluidml_tvm.frontend import onnx_to_relax
from fluidml_tvm.pipeline import stages
from fluidml_tvm.schedule import SCHEDULED_ATTR, is_scheduled
from fluidml_tvm.transform.expand_integer_power import ExpandIntegerPower
from fluidml_tvm.transform.pack_weights import PackWeights
from fluidml_tvm.analysis.memory_plan import recorded_plan
from fluidml_tvm.analysis.schedule_rules import schedule_rules
from fluidml_tvm.transform.schedule_kernels import ScheduleKernels

from conftest import TARGET, assert_close, run_vm, zoo_model

RNG = np.random.default_rng(0)
R = relax.op


def build(mod, fast=True, target=TARGET, validate=False):
    """TVM's pipeline cut by ``stages()``, with the proposed "pack" and "schedule" stages when ``fast``."""
    parts = stages(target, validate=validate)
    pack = [ExpandIntegerPower(), relax.transform.FastMathTransform(), PackWeights(target)] if fast else []
    passes = pack + parts["fuse"] + ([ScheduleKernels(target)] if fast else []) + parts["plan"] + parts["lower"] \
        + parts["finalize"]
    with target:
        final = tvm.transform.Sequential(passes)(mod)
    return tvm.compile(final, target, relax_pipeline=None), final, schedule_rules(final)


def module(shapes, body):
    """A one-function module: ``body(bb, *params)`` returns the output expression."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"p{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def const(*shape):
    return relax.const(RNG.standard_normal(shape).astype("float32"))


def gelu(x):
    return R.multiply(R.multiply(x, relax.const(0.5, "float32")),
                      R.add(R.erf(R.multiply(x, relax.const(0.7071067811865476, "float32"))),
                            relax.const(1.0, "float32")))


CASES = {
    # name: (input shapes, body, rule every kernel must get)
    "packed_matmul_bias_gelu": ([(1, 12, 32)], lambda bb, x: gelu(R.add(R.matmul(x, const(32, 48)), const(48))),
                                {"matmul"}),
    "dense_matmul_residual": ([(12, 32)], lambda bb, x: R.add(R.matmul(x, R.permute_dims(const(32, 32))), x),
                              {"matmul"}),
    "matmul_odd_sizes": ([(7, 19), (19, 13)], lambda bb, x, w: R.matmul(x, w), {"matmul"}),
    "batch_matmul_scaled": ([(1, 4, 16, 8), (1, 4, 8, 16)],
                            lambda bb, q, k: R.multiply(R.matmul(q, k), relax.const(0.125, "float32")), {"matmul"}),
    "batch_matmul_pv": ([(2, 16, 16), (2, 16, 8)], lambda bb, p, v: R.matmul(p, v), {"matmul"}),
    "conv2d_bias_relu": ([(1, 8, 14, 14)],
                         lambda bb, x: R.nn.relu(R.add(R.nn.conv2d(x, const(16, 8, 3, 3), padding=1),
                                                       const(1, 16, 1, 1))), {"conv2d"}),
    "conv2d_stride2": ([(1, 3, 15, 15)], lambda bb, x: R.nn.conv2d(x, const(8, 3, 7, 7), strides=2, padding=3),
                       {"conv2d"}),
    "conv2d_depthwise": ([(1, 8, 10, 10)],
                         lambda bb, x: R.clip(R.nn.conv2d(x, const(8, 1, 3, 3), padding=1, groups=8), 0, 6),
                         {"conv2d"}),
    "conv2d_odd_channels_dilated": ([(1, 5, 9, 11)],
                                    lambda bb, x: R.nn.conv2d(x, const(10, 5, 3, 3), padding=(2, 1), dilation=(2, 1)),
                                    {"conv2d"}),
    "conv2d_pointwise": ([(1, 16, 7, 7)], lambda bb, x: R.nn.conv2d(x, const(24, 16, 1, 1)), {"conv2d"}),
    "softmax": ([(2, 4, 16, 16)], lambda bb, x: R.nn.softmax(x, axis=-1), {"reduction"}),
    "layer_norm": ([(1, 16, 32)], lambda bb, x: R.nn.layer_norm(x, const(32), const(32), axes=[-1]),
                   {"reduction"}),
    "elementwise": ([(4, 33), (33,)], lambda bb, x, y: R.tanh(R.add(R.exp(x), y)), {"elementwise"}),
    "transpose": ([(2, 8, 4, 16)], lambda bb, x: R.permute_dims(R.reshape(x, (2, 8, 64)), [0, 2, 1]),
                  {"elementwise"}),
    "max_pool": ([(1, 8, 12, 12)], lambda bb, x: R.nn.max_pool2d(x, pool_size=3, strides=2, padding=1),
                 {"conv2d", "reduction"}),
    "split": ([(4, 32)], lambda bb, x: R.split(R.add(x, x), 2, axis=1), {"elementwise"}),
    "power": ([(8, 16)], lambda bb, x: R.power(x, relax.const(3.0, "float32")), {"elementwise"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scheduled_kernels_match_unscheduled(name):
    shapes, body, rules = CASES[name]
    mod = module(shapes, body)
    inputs = [RNG.standard_normal(s).astype("float32") for s in shapes]
    ex, final, applied = build(mod)
    assert applied and set(applied.values()) <= rules, applied
    kernels = [f for f in final.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert all(is_scheduled(f) for f in kernels)
    assert_close(run_vm(ex, inputs), run_vm(build(mod, fast=False)[0], inputs))


@pytest.mark.parametrize("name", ["softmax", "layer_norm"])
def test_shared_row_nests_match_unscheduled(name):
    shapes, body, _ = CASES[name]
    mod = module(shapes, body)
    inputs = [RNG.standard_normal(s).astype("float32") for s in shapes]
    sk = ScheduleKernels(TARGET, shared_row_nests=True)
    with TARGET:
        fused = tvm.transform.Sequential(stages(TARGET)["fuse"])(mod)
        scheduled = sk(fused)
        parts = stages(TARGET)
        final = tvm.transform.Sequential(parts["lower"] + parts["finalize"])(scheduled)
    assert set(schedule_rules(scheduled).values()) == {"reduction"}
    ex = tvm.compile(final, TARGET, relax_pipeline=None)
    assert_close(run_vm(ex, inputs), run_vm(build(mod, fast=False)[0], inputs))


def test_already_scheduled_kernels_are_skipped():
    mod = module([(4, 8)], lambda bb, x: R.exp(x))
    with TARGET:
        legal = tvm.transform.Sequential(stages(TARGET)["fuse"])(mod)
    gv = next(gv for gv, f in legal.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    marked = legal[gv].with_attr(SCHEDULED_ATTR, True)
    legal[gv] = marked
    out = ScheduleKernels(TARGET)(legal)
    assert out[gv].same_as(marked) and schedule_rules(out)[gv.name_hint] is None


def test_rules_are_dlight_rules_and_a_bug_in_one_is_not_swallowed():
    from tvm.s_tir import dlight as dl

    from fluidml_tvm.schedule import CPURule, cpu_rules

    assert all(isinstance(rule, dl.ScheduleRule) for rule in cpu_rules(TARGET))

    class Broken(CPURule):
        name = "broken"

        def schedule(self, sch):
            return {}["a bug"]

    mod = module([(4, 8)], lambda bb, x: R.exp(x))
    with TARGET:
        legal = tvm.transform.Sequential(stages(TARGET)["fuse"])(mod)
        with pytest.raises(KeyError, match="a bug"):
            dl.ApplyDefaultSchedule(Broken(TARGET))(legal)


def _arena_bytes(final) -> int:
    return recorded_plan(final["main"]).arena_bytes


def test_example_model_scheduled_matches_and_memory_plan_validates():
    model = build_example_model()
    feeds = example_feeds(model)
    mod, _ = onnx_to_relax(model)
    inputs = list(feeds.values())
    ex, final, applied = build(mod, validate=True)
    assert None not in applied.values(), applied
    base_ex, base_final, _ = build(mod, fast=False, validate=True)
    assert_close(run_vm(ex, inputs), run_vm(base_ex, inputs))
    # FluidMLPlan(validate=True) proved both plans; scheduled kernels inline their scratch
    # buffers and keep softmax/layer norm in-place, so the arena is no larger
    assert _arena_bytes(final) <= _arena_bytes(base_final)


def test_gpt2_tiny_scheduled_matches():
    import model_zoo
    import onnx

    mod, _ = onnx_to_relax(onnx.load(str(zoo_model("gpt2-tiny"))))
    inputs = list(model_zoo.example_inputs("gpt2-tiny").values())
    ex, _, _ = build(mod, validate=True)
    assert_close(run_vm(ex, inputs), run_vm(build(mod, fast=False)[0], inputs))
