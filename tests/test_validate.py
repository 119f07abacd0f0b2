"""The validator rejects every plan that could corrupt data, and only those, reading the final IR alone.

Chain's kernels are TVM's own (LegalizeOps, then CallTIRRewrite's allocations): exp writes
``alloc``; ``add`` reads it pointwise into ``alloc1``; ``flip`` reads ``alloc1`` in reverse
into ``alloc2``; each tensor is 128 bytes, ``alloc3`` is returned (never planned).
"""

import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from fluidml_tvm.analysis.liveness import function_liveness
from fluidml_tvm.analysis.validate import MemoryPlanError, validate_function
from fluidml_tvm.memory.plan import StorageSpec
from fluidml_tvm.rewrite.arena import rewrite_function


@I.ir_module
class Chain:
    @R.function
    def main(x: R.Tensor((32,), "float32")):
        with R.dataflow():
            t0 = R.exp(x)
            t1 = R.add(t0, R.const(1.0, "float32"))
            t2 = R.flip(t1, axis=0)
            y = R.exp(t2)
            R.output(y)
        return y


def _lowered() -> tvm.IRModule:
    passes = [relax.transform.LegalizeOps(), relax.transform.ToNonDataflow(),
              relax.transform.RemovePurityChecking(), relax.transform.CallTIRRewrite()]
    with tvm.target.Target("llvm"):
        return tvm.transform.Sequential(passes)(Chain)


def _check(offsets: dict, arena: int = 384) -> int:
    """Validate Chain with its tensors at ``offsets`` in one arena of ``arena`` bytes."""
    mod = _lowered()
    allocs = function_liveness(mod["main"], mod).alloc_vars
    mod["main"] = rewrite_function(mod["main"], {allocs[n]: (0, o) for n, o in offsets.items()},
                                   [StorageSpec(arena, 0, "global")])
    return validate_function(mod, mod["main"])


def test_disjoint_tensors_pass():
    assert _check({"alloc": 0, "alloc1": 128, "alloc2": 256}) == 3


def test_tensors_live_at_different_times_may_share_bytes():
    assert _check({"alloc": 0, "alloc1": 128, "alloc2": 0}) == 3  # alloc is dead before alloc2 is written


def test_a_pointwise_kernel_may_write_over_the_input_it_reads_last():
    assert _check({"alloc": 0, "alloc1": 0, "alloc2": 128}) == 3


def test_a_kernel_that_reads_other_elements_may_not():
    with pytest.raises(MemoryPlanError, match=r"alloc1\S* \[128, 256\) live \d+\.\.\d+ overlaps alloc2\S* \[128, 256\)"):
        _check({"alloc": 0, "alloc1": 128, "alloc2": 128})


def test_a_partial_overlap_is_never_in_place():
    with pytest.raises(MemoryPlanError, match=r"alloc \[0, 128\) live \d+\.\.\d+ overlaps alloc1\S* \[64, 192\)"):
        _check({"alloc": 0, "alloc1": 64, "alloc2": 256})


def test_an_unaligned_offset_is_rejected():
    with pytest.raises(MemoryPlanError, match=r"alloc1\S*: offset 160 is not 64-byte aligned"):
        _check({"alloc": 0, "alloc1": 160, "alloc2": 0})


def test_a_tensor_past_the_end_of_its_storage_is_rejected():
    with pytest.raises(MemoryPlanError, match=r"alloc2\S*: \[256, 384\) exceeds arena of 320 bytes"):
        _check({"alloc": 0, "alloc1": 128, "alloc2": 256}, arena=320)
