"""FluidMLPlan in users' pipelines: where it may go, and what it gives."""

import json
import re

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

import fluidml_tvm
from fluidml_tvm.targets import resolve_target
from fluidml_tvm.analysis.memory_plan import FunctionMemoryPlan, plan_function, recorded_plan
from fluidml_tvm.analysis.validate import validate_function
from fluidml_tvm.transform import FluidMLPlan, PipelinePlacementError, PlanMemory

from conftest import TARGET, assert_close, run_stages, run_vm


@tvm.script.ir_module
class Block:
    @R.function
    def main(x: R.Tensor((16, 32), "float32"), w: R.Tensor((32, 32), "float32")):
        with R.dataflow():
            a = R.matmul(x, w)
            b = R.nn.softmax(a, axis=-1)
            c = R.add(b, x)
            d = R.reshape(c, (32, 16))
            e = R.exp(d)
            f = R.nn.relu(R.matmul(x, w))
            g = R.add(R.reshape(e, (16, 32)), f)
            R.output(g)
        return g


def inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((16, 32)).astype("float32"), rng.standard_normal((32, 32)).astype("float32")]


def reference():
    return run_vm(tvm.compile(Block, TARGET, relax_pipeline=relax.get_default_pipeline(TARGET)), inputs())


def test_get_pipeline_composes_with_tvm_compile():
    ex = tvm.compile(Block, TARGET, relax_pipeline=fluidml_tvm.get_pipeline(TARGET, validate=True))
    assert_close(run_vm(ex, inputs()), reference(), rel=1e-5)


def test_readme_pipeline_snippet():
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    target = TARGET
    pipeline = tvm.transform.Sequential(
        cpu.legalize_passes(target)
        + [FluidMLPlan(target)]
        + cpu.dataflow_lower_passes(target)
        + cpu.finalize_passes(target)
    )
    with target:
        ex = tvm.compile(Block, target, relax_pipeline=pipeline)
    assert_close(run_vm(ex, inputs()), reference(), rel=1e-5)


def test_after_fusion_in_a_users_sequential():
    fused = run_stages(Block, "fuse")
    with TARGET:
        planned = tvm.transform.Sequential([FluidMLPlan(TARGET, validate=True)])(fused)
    assert "R.memory.alloc_storage" in planned["main"].script()
    assert validate_function(planned, planned["main"]) > 0
    final = run_stages(planned, "lower", "finalize")
    assert_close(run_vm(tvm.compile(final, TARGET, relax_pipeline=None), inputs()), reference(), rel=1e-5)


def test_after_call_tir_rewrite_plans_without_reordering():
    lowered = run_stages(Block, "fuse", "lower")
    with TARGET:
        planned = FluidMLPlan(TARGET, validate=True)(lowered)
    assert validate_function(planned, planned["main"]) > 0
    final = run_stages(planned, "finalize")
    assert_close(run_vm(tvm.compile(final, TARGET, relax_pipeline=None), inputs()), reference(), rel=1e-5)


def test_before_legalization_is_refused_with_the_op_named():
    with pytest.raises(PipelinePlacementError, match=r"relax\.matmul.*LegalizeOps"):
        FluidMLPlan(TARGET)(Block)


def test_after_static_plan_block_memory_is_refused():
    planned_by_tvm = relax.transform.StaticPlanBlockMemory()(run_stages(Block, "fuse", "lower"))
    with pytest.raises(PipelinePlacementError, match="before StaticPlanBlockMemory"):
        FluidMLPlan(TARGET)(planned_by_tvm)


def test_plan_memory_alone_wants_lowered_form():
    with pytest.raises(PipelinePlacementError, match="CallTIRRewrite"):
        PlanMemory(TARGET)(run_stages(Block, "fuse"))


def test_running_twice_is_a_no_op():
    once = run_stages(Block, "fuse", "plan")
    with TARGET:
        twice = FluidMLPlan(TARGET)(once)
    tvm.ir.assert_structural_equal(once, twice)


def test_one_arena_and_in_place_softmax():
    ex = fluidml_tvm.compile(Block, TARGET)
    plan = ex.report["main"]
    assert len(ex.module["main"].script().split("R.memory.alloc_storage")) == 2  # exactly one arena
    assert plan.inplace, "softmax/add/exp may write over their inputs"
    assert plan.total_bytes <= plan.tvm_total_bytes
    assert plan.arena_bytes <= plan.tvm_order_lower_bound
    assert plan.kernel_scratch_left_bytes < plan.tvm_kernel_scratch_bytes
    assert_close(run_vm(ex.executable, inputs()), reference(), rel=1e-5)


def test_the_recorded_plan_is_the_plan_that_was_made():
    lowered = run_stages(Block, "fuse", "lower")
    plan, liveness = plan_function(lowered, lowered["main"], "main")
    with TARGET:
        planned = PlanMemory(TARGET)(lowered)
    recorded = recorded_plan(planned["main"])
    assert recorded == plan and recorded.tensors and recorded.storages  # every field
    assert recorded.arena_bytes == plan.arena_bytes and recorded.status == plan.status
    assert recorded_plan(lowered["main"]) is None

    with_inplace = recorded_plan(fluidml_tvm.compile(Block, TARGET).module["main"])
    assert with_inplace.inplace and all(isinstance(pair, tuple) for pair in with_inplace.inplace)
    assert FunctionMemoryPlan.from_json(json.loads(json.dumps(with_inplace.to_json()))) == with_inplace


def test_opencl_targets_reuse_whole_buffers_without_offsets():
    mali = resolve_target("mali")
    fused = run_stages(Block, "fuse", target=mali)
    with TARGET:  # the target the pass is given decides, not the one in scope
        planned = FluidMLPlan(mali)(fused)
    script = planned["main"].script()
    assert "ensure_zero_offset" not in script
    assert "R.memory.alloc_storage" in script


def test_kernel_scratch_moves_into_the_arena():
    lifted = fluidml_tvm.compile(Block, TARGET).module
    kept = fluidml_tvm.compile(Block, TARGET, scratch=False).module
    assert "scratch_" in lifted["main"].script() and "scratch_" not in kept["main"].script()
    softmax = next(f for gv, f in lifted.functions.items() if "softmax" in gv.name_hint)
    assert len(softmax.params) > 2 and not softmax.body.block.alloc_buffers


@tvm.script.ir_module
class ReshapedOutput:
    @R.function
    def main(x: R.Tensor((16, 32), "float32"), w: R.Tensor((32, 32), "float32")):
        with R.dataflow():
            a = R.exp(R.matmul(x, w))
            b = R.matmul(a, w)
            c = R.reshape(b, (1, 16, 32))
            R.output(c)
        return c


def test_returned_reshape_is_written_in_place_not_copied():
    result = fluidml_tvm.compile(ReshapedOutput, TARGET, validate=True)
    script = result.module["main"].script()
    assert "R.reshape(alloc" in script  # the producer writes through a view of the output
    assert not re.search(r"^\s+reshape\d*\(", script, re.M)  # and no kernel copies into it
    expected = run_vm(tvm.compile(ReshapedOutput, TARGET, relax_pipeline=relax.get_default_pipeline(TARGET)), inputs())
    assert_close(run_vm(result.executable, inputs()), expected, rel=1e-5)
