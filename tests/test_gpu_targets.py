"""Mali and Adreno (OpenCL) builds, checked structurally: no OpenCL runtime exists here.

Which rule scheduled each kernel (the record the GPU schedule pass stamps), that
every kernel binds GPU threads, that the memory plan reuses whole global buffers
and leaves texture scopes to TVM, and that the OpenCL source is written beside
the library, linked for Android with a stand-in for the NDK's compiler.
"""


import numpy as np
import pytest
import tvm
from tvm import relax, tirx

import fluidml_tvm
from fluidml_tvm.analysis.memory_plan import recorded_plan
from fluidml_tvm.analysis.schedule_rules import binds_threads, schedule_rules
from fluidml_tvm.pipeline import stages
from fluidml_tvm.schedule.gpu import FALLBACK, WINDOW
from fluidml_tvm.targets import cross_compiler, describe


# Rules that give a kernel with a real reduction one thread (Fallback) or one thread block per
# output (GeneralReduction on a 3x3 window): a heavy kernel must get neither.
NOT_FOR_HEAVY_KERNELS = {FALLBACK, "gpu.GeneralReduction", None}


def _model(name):
    pytest.importorskip("torch")
    import model_zoo

    return str(model_zoo.model_path(name))


def _heavy(kernel: str) -> bool:
    return "matmul" in kernel or "conv2d" in kernel


@pytest.fixture
def ndk_standin(monkeypatch):
    """TVM_NDK_CC set to the aarch64 GNU cross gcc: proves the build path, not the Android link."""
    monkeypatch.setenv("TVM_NDK_CC", "aarch64-linux-gnu-gcc")


def test_adreno_stages_are_built_without_a_target_in_scope():
    assert tvm.target.Target.current(allow_none=True) is None
    parts = stages("adreno-texture")  # was "Target context required" from TVM's Adreno legalize passes
    names = [p.info.name for p in parts["fuse"]]
    assert "ApplyDefaultSchedule" not in names  # ours schedules, after the tuning database
    assert [p.info.name for p in parts["schedule"]] == ["fluidml_tvm.ScheduleGPUKernels"]


def test_a_depthwise_conv_builds_for_adreno_texture_and_gets_a_window_schedule():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 16, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w1 = relax.const(np.ones((8, 8, 1, 1), "float32"))
            w2 = relax.const(np.ones((8, 1, 3, 3), "float32"))
            y = bb.emit(relax.op.nn.conv2d(x, w1))
            z = bb.emit_output(relax.op.nn.conv2d(y, w2, padding=1, groups=8))  # was "Divide by zero"
        bb.emit_func_output(z)
    result = fluidml_tvm.compile(bb.get(), "adreno-texture", report=False)
    rules = schedule_rules(result.module)
    assert sorted(rule for name, rule in rules.items() if "conv2d" in name) == ["adreno.Conv2d", WINDOW]


@pytest.mark.parametrize("model,preset", [("mobilenetv2", "adreno-texture"), ("minilm", "adreno"),
                                          ("mobilenetv2", "mali")])
def test_gpu_build_schedules_every_heavy_kernel_and_writes_the_opencl_source(model, preset, tmp_path, ndk_standin):
    result = fluidml_tvm.compile(_model(model), preset, report=False)
    rules = schedule_rules(result.module)
    heavy = {name: rule for name, rule in rules.items() if _heavy(name)}
    assert len(heavy) >= 5
    assert not {name: rule for name, rule in heavy.items() if rule in NOT_FOR_HEAVY_KERNELS}
    assert all(binds_threads(f) for f in result.module.functions.values() if isinstance(f, tirx.PrimFunc))
    if preset == "adreno-texture":
        assert "adreno.Conv2d" in heavy.values() and WINDOW in heavy.values()

    plan = recorded_plan(result.module["main"])
    assert plan.storages and all(s.scope == "global" for s in plan.storages)
    assert all(t.offset == 0 for t in plan.tensors)  # OpenCL: whole buffers only
    left = [why for why in plan.unplanned.values() if "texture" in why]
    assert bool(left) == (preset == "adreno-texture")  # texture tensors are TVM's to allocate

    library = tmp_path / "model.so"
    result.export_library(library, fcompile=cross_compiler(preset))
    assert library.read_bytes()[:4] == b"\x7fELF"
    assert "__kernel" in library.with_suffix(".cl").read_text()


def test_adreno_artifact_has_its_opencl_source(tmp_path, ndk_standin):
    info, report = fluidml_tvm.export(_model("minilm"), tmp_path / "a", "adreno-texture",
                                      fcompile=cross_compiler("adreno-texture"))
    assert (tmp_path / "a" / "model.so").exists() and report["main"].arena_bytes > 0
    assert "__kernel" in (tmp_path / "a" / "model.cl").read_text()
    assert "opencl" in info.manifest.target
    assert describe("adreno-texture").android
