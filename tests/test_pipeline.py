"""fluidml_tvm.pipeline: the stages, their options, and the one target description handed to every pass."""

import pytest
import tvm
from tvm import relax

import fluidml_tvm
from fluidml_tvm import targets
from fluidml_tvm.pipeline import STAGES, stages
from fluidml_tvm.targets import describe

from conftest import TARGET


def exp_squared():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.exp(x))
            out = bb.emit_output(bb.emit(relax.op.power(y, relax.const(2.0, "float32"))))
        bb.emit_func_output(out)
    return bb.get()


def ops(func) -> set:
    names = set()

    @relax.expr_functor.visitor
    class _Ops(relax.PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op):
                names.add(call.op.name)
            super().visit_call_(call)

    _Ops().visit_expr(func)
    return names


@pytest.mark.parametrize("kernels", [True, False])
def test_fast_math_and_integer_powers_do_not_depend_on_kernels(kernels):
    with TARGET:
        fast = tvm.transform.Sequential(stages(TARGET, kernels=kernels)["pack"])(exp_squared())
        exact = tvm.transform.Sequential(stages(TARGET, kernels=kernels, fast_math=False)["pack"])(exp_squared())
    assert "relax.exp" not in ops(fast["main"])  # TVM's fast_exp kernel instead
    assert any(gv.name_hint == "fast_exp" for gv in fast.functions)
    assert "relax.exp" in ops(exact["main"])
    for mod in (fast, exact):
        assert "relax.power" not in ops(mod["main"])  # x ** 2 is x * x


def test_every_pass_gets_the_one_description():
    described = describe(TARGET)
    parts = stages(described)
    holders = [p for name in STAGES for p in parts[name] if hasattr(p, "target")]
    names = {type(p).__name__ for p in holders}
    assert {"PackWeights", "FoldLayoutKernels", "ApplyTuningDatabase", "ScheduleKernels"} <= names
    assert all(p.target is described for p in holders)
    (plan,) = parts["plan"]
    assert plan.plan_memory.target is described


def test_a_compile_describes_its_target_once(monkeypatch):
    seen = []
    vector_unit = targets._vector_unit
    monkeypatch.setattr(targets, "_vector_unit", lambda t: seen.append(t) or vector_unit(t))
    fluidml_tvm.compile(exp_squared(), {"kind": "llvm", "num-cores": 2})
    assert len(seen) == 1
