"""Property: on random DAGs of Relax ops, the planned build is valid and computes the same."""

import numpy as np
import tvm
from hypothesis import HealthCheck, given, settings, strategies as st
from tvm import relax

import fluidml_tvm
from fluidml_tvm.analysis.validate import validate_function

from conftest import TARGET, assert_close, run_vm

N = 8
UNARY = [relax.op.exp, relax.op.nn.relu, relax.op.sigmoid, relax.op.tanh,
         lambda x: relax.op.nn.softmax(x, axis=-1), lambda x: relax.op.permute_dims(x),
         lambda x: relax.op.reshape(relax.op.exp(relax.op.reshape(x, (N * N,))), (N, N))]
BINARY = [relax.op.add, relax.op.multiply, relax.op.subtract, relax.op.matmul]


@st.composite
def graphs(draw):
    n = draw(st.integers(2, 12))
    nodes = []
    for i in range(n):
        pool = 2 + i  # two inputs, then earlier nodes
        if draw(st.booleans()):
            nodes.append(("u", draw(st.integers(0, len(UNARY) - 1)), draw(st.integers(0, pool - 1))))
        else:
            nodes.append(("b", draw(st.integers(0, len(BINARY) - 1)),
                          draw(st.integers(0, pool - 1)), draw(st.integers(0, pool - 1))))
    extra = draw(st.sets(st.integers(0, n - 2), max_size=2))  # more outputs keep tensors alive
    return nodes, sorted(extra)


def build(nodes, extra):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((N, N), "float32"))
    y = relax.Var("y", relax.TensorType((N, N), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            values = [x, y]
            for node in nodes:
                if node[0] == "u":
                    values.append(bb.emit(UNARY[node[1]](values[node[2]])))
                else:
                    values.append(bb.emit(BINARY[node[1]](values[node[2]], values[node[3]])))
            outs = [values[-1]] + [values[2 + i] for i in extra]
            result = bb.emit_output(relax.Tuple(outs) if len(outs) > 1 else outs[0])
        bb.emit_func_output(result)
    return bb.get()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_planned_build_is_valid_and_equal_to_tvms(graph):
    mod = build(*graph)
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, (N, N)).astype("float32") for _ in range(2)]
    expected = run_vm(tvm.compile(mod, TARGET, relax_pipeline=relax.get_default_pipeline(TARGET)), inputs)
    result = fluidml_tvm.compile(mod, TARGET, validate=True)
    validate_function(result.module, result.module["main"])
    plan = result.report["main"]
    assert plan.arena_bytes <= max(plan.tvm_order_lower_bound, plan.live_set_lower_bound)
    assert_close(run_vm(result.executable, inputs), expected, rel=1e-5)
