"""Symbolic shapes: bounded sizes are planned at their bound, unbounded ones left to TVM."""

import warnings

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R, tirx as T

import fluidml_tvm

from conftest import TARGET, assert_close, run_vm


def module(bound=None):
    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor(("n", 16), "float32")):
            n = T.int64()  # noqa: F841 - declares the symbolic dimension for TVMScript
            with R.dataflow():
                a = R.exp(x)
                b = R.nn.softmax(a, axis=-1)
                c = R.multiply(b, x)
                d = R.add(c, a)
                R.output(d)
            return d

    if bound is not None:
        Mod["main"] = Mod["main"].with_attr("tir_var_upper_bound", {"n": bound})
    return Mod


def test_bounded_dimension_is_planned_at_its_bound():
    result = fluidml_tvm.compile(module(bound=32), TARGET, validate=True)
    plan = result.report["main"]
    assert plan.tensors and not any("size" in r for r in plan.unplanned.values())
    assert all(t.nbytes == 32 * 16 * 4 for t in plan.tensors if not t.name.startswith("scratch"))
    x = np.random.default_rng(0).standard_normal((20, 16)).astype("float32")
    expected = run_vm(tvm.compile(module(), TARGET, relax_pipeline=relax.get_default_pipeline(TARGET)), [x])
    assert_close(run_vm(result.executable, [x]), expected, rel=1e-5)


def test_unbounded_dimension_is_left_to_tvm_with_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fluidml_tvm.compile(module(), TARGET, validate=True)
    reasons = result.report["main"].unplanned
    assert any("no static upper bound" in r for r in reasons.values())
    assert any("left to TVM's planner" in str(w.message) for w in caught)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype("float32")
    expected = run_vm(tvm.compile(module(), TARGET, relax_pipeline=relax.get_default_pipeline(TARGET)), [x])
    assert_close(run_vm(result.executable, [x]), expected, rel=1e-5)
