"""fluidml_tvm.targets: one description answers every question about a target, from any spelling of it."""

import json
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from fluidml_tvm.targets import (SCHEDULES_DIR, TargetDescription, UnknownTargetError, cross_compiler, describe,
                                 resolve_target)

ROOT = Path(__file__).resolve().parents[1]


def test_vector_width_follows_the_target():
    haswell = describe({"kind": "llvm", "mcpu": "haswell"})
    assert (haswell.isa, haswell.lanes) == ("avx2", 8)
    avx512 = describe({"kind": "llvm", "mcpu": "skylake-avx512"})
    assert (avx512.isa, avx512.lanes, avx512.registers) == ("avx512", 16, 32)
    neon = describe({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4})
    assert (neon.isa, neon.lanes, neon.registers, neon.cores) == ("neon", 4, 32, 4)
    sse = describe({"kind": "llvm", "mcpu": "x86-64"})
    assert (sse.isa, sse.lanes, sse.registers, sse.cores) == ("sse", 4, 16, 1)


def test_cpu_targets_offset_storage_and_opencl_does_not():
    for name in ("x86-64", "aarch64"):
        assert describe(name).cpu and describe(name).offsets
    for name in ("mali", "adreno"):
        gpu = describe(name)
        assert not gpu.cpu and not gpu.offsets and gpu.isa == ""
        assert "OpenCL" in gpu.runtime_library
    assert "OpenCL" not in describe("x86-64").runtime_library
    assert "aarch64-linux-gnu" in describe("aarch64").runtime_library


def test_record_key_is_the_one_the_shipped_layout_costs_use():
    lines = (SCHEDULES_DIR / "x86-64-avx2" / "layout_costs.jsonl").read_text().splitlines()
    keys = {json.loads(line)["target"] for line in lines if line.strip()}
    assert describe("x86-64").record_key in keys
    assert describe("x86-64").record_key != describe("aarch64").record_key


def test_architecture_names_the_shipped_schedules():
    assert SCHEDULES_DIR == ROOT / "schedules"
    assert describe("x86-64").schedules_dir == SCHEDULES_DIR / "x86-64-avx2"
    assert describe({"kind": "llvm", "mcpu": "skylake"}).architecture == "x86-64-avx2"
    assert describe("aarch64").architecture == "aarch64-neon"
    assert describe({"kind": "llvm", "mcpu": "x86-64"}).schedules_dir is None  # no AVX2 promised
    assert describe("mali").architecture is None


def test_cross_compiler_only_for_a_target_that_does_not_run_here():
    assert describe("x86-64").linker is None and cross_compiler("x86-64") is None
    assert describe("aarch64").linker == "aarch64-linux-gnu-gcc"
    assert callable(cross_compiler("aarch64"))
    assert describe("mali").linker == "aarch64-linux-gnu-gcc"  # the OpenCL host code runs on the board


def test_every_spelling_gives_the_same_description_and_a_description_is_kept():
    spec = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}
    spelled = ["x86-64", spec, json.dumps(spec), tvm.target.Target(spec)]
    described = [describe(s) for s in spelled]
    assert len({(d.record_key, d.lanes, d.architecture) for d in described}) == 1
    assert describe(described[0]) is described[0]
    assert resolve_target(described[0]) is described[0].target
    assert isinstance(resolve_target("x86-64"), tvm.target.Target)
    assert isinstance(described[0], TargetDescription)
    with pytest.raises(Exception):
        described[0].lanes = 4  # frozen


def test_an_unknown_target_names_the_presets():
    with pytest.raises(UnknownTargetError, match="unknown target 'nonsense'.*preset: host, aarch64, adreno, mali, x86-64"):
        describe("nonsense")


def test_export_artifact_takes_a_preset_name(tmp_path):
    from fluidml_tvm import runtime
    from fluidml_tvm.artifact import export_artifact

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4), "float32"))
    w = relax.Var("w", relax.TensorType((4, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(y)
    mod = bb.get()
    mod["main"] = mod["main"].with_attr("num_input", 1)
    weight = np.arange(12, dtype="float32").reshape(4, 3)
    info = export_artifact(mod, [weight], "host", tmp_path / "a")
    assert info.manifest.target == str(resolve_target("host"))
    data = np.ones((2, 4), "float32")
    with runtime.load(tmp_path / "a") as model:
        np.testing.assert_allclose(model(data), data @ weight, rtol=1e-6)
