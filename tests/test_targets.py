"""fluidml_tvm.targets: one description answers every question about a target, from any spelling of it."""

import json
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from fluidml_tvm.targets import (SCHEDULES_DIR, MissingToolchainError, TargetDescription, UnknownTargetError,
                                 cross_compiler, describe, preset_meanings, resolve_target)

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
    with pytest.raises(UnknownTargetError, match="unknown target 'nonsense'.*preset: host, aarch64, adreno, .*rpi5, x86-64"):
        describe("nonsense")


def test_board_presets_carry_their_cpu_cores_and_meaning():
    expect = {"rpi4": ("cortex-a72", 4), "rpi5": ("cortex-a76", 4), "rk3399": ("cortex-a72", 2)}
    for name, (mcpu, cores) in expect.items():
        board = describe(name)
        assert (board.target.attrs["mcpu"], board.cores, board.isa, board.linker) == (
            mcpu, cores, "neon", "aarch64-linux-gnu-gcc"), name
    assert "+dotprod" in list(describe("rpi5").target.attrs["mattr"])
    assert describe("aarch64").cores == 4  # MetaSchedule needs num-cores for a remote board
    assert describe("android-arm64").triple == "aarch64-linux-android"
    adreno, texture = describe("adreno"), describe("adreno-texture")
    assert "adreno" in adreno.target.keys and "texture" not in adreno.target.keys
    assert "texture" in texture.target.keys and texture.triple == "aarch64-linux-android"
    assert describe("mali").target.attrs["device"] == "mali" and describe("mali").triple == "aarch64-linux-gnu"
    assert all(meaning for meaning in preset_meanings().values())


def test_targets_command_lists_every_preset_with_its_meaning(capsys):
    from fluidml_tvm.cli import main

    assert main(["targets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(preset_meanings())
    assert any(line.startswith("rpi5") and "Cortex-A76" in line for line in lines)


def test_android_links_with_the_ndk_and_never_the_gnu_toolchain(monkeypatch):
    phone = describe({"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]})
    assert phone.android and phone.linker == "$TVM_NDK_CC"  # was "aarch64-linux-linux-gnu-gcc"
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    for target in (phone, "android-arm64", "adreno"):
        with pytest.raises(MissingToolchainError, match="Android NDK.*TVM_NDK_CC="):
            cross_compiler(target)
    monkeypatch.setenv("TVM_NDK_CC", "aarch64-linux-gnu-gcc")  # stand-in: proves the build path only
    assert cross_compiler(phone).get_target_triple().startswith("aarch64")


def test_android_export_links_with_the_compiler_named_by_tvm_ndk_cc(tmp_path, monkeypatch):
    from fluidml_tvm.artifact import export_artifact

    standin = tmp_path / "ndk-cc"  # records that it ran, then links with the aarch64 cross gcc
    standin.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\nexec aarch64-linux-gnu-gcc "$@"\n')
    standin.chmod(0o755)
    monkeypatch.setenv("TVM_NDK_CC", str(standin))
    mod = _matmul_module()
    export_artifact(mod, [np.ones((4, 3), "float32")], "android-arm64", tmp_path / "a",
                    fcompile=cross_compiler("android-arm64"))
    calls = (tmp_path / "calls").read_text()
    assert "-shared" in calls
    elf = (tmp_path / "a" / "model.so").read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64


def test_export_artifact_takes_a_preset_name(tmp_path):
    from fluidml_tvm import runtime
    from fluidml_tvm.artifact import export_artifact

    mod = _matmul_module()
    weight = np.arange(12, dtype="float32").reshape(4, 3)
    info = export_artifact(mod, [weight], "host", tmp_path / "a")
    assert info.manifest.target == str(resolve_target("host"))
    data = np.ones((2, 4), "float32")
    with runtime.load(tmp_path / "a") as model:
        np.testing.assert_allclose(model(data), data @ weight, rtol=1e-6)


def _matmul_module():
    """``main(x, w) = x @ w`` with one input, as ``from_onnx(keep_params_in_input=True)`` makes it."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4), "float32"))
    w = relax.Var("w", relax.TensorType((4, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(y)
    mod = bb.get()
    mod["main"] = mod["main"].with_attr("num_input", 1)
    return mod


# Every board preset builds the two zoo models a board owner would try first; the GPU pairs
# tests/test_gpu_targets.py builds (and checks kernel by kernel) are not repeated here.
# Every preset builds the convolution network; the transformer's kernels (matmuls, layer norm) depend
# only on the ISA, so one board of each libc builds it.
_BOARD_BUILDS = [(preset, "mobilenetv2") for preset in ("aarch64", "rpi4", "rpi5", "rk3399", "android-arm64")] + [
    ("aarch64", "minilm"), ("android-arm64", "minilm"), ("mali", "minilm"), ("adreno", "mobilenetv2")]
EM_AARCH64 = 183  # ELF e_machine


@pytest.mark.parametrize("preset,model", _BOARD_BUILDS)
def test_every_board_preset_builds_the_zoo_models(preset, model, tmp_path, monkeypatch):
    pytest.importorskip("torch")

    import fluidml_tvm

    import model_zoo

    target = describe(preset)
    if target.android:  # the NDK's clang is not here: the aarch64 GNU gcc proves the build path
        monkeypatch.setenv("TVM_NDK_CC", "aarch64-linux-gnu-gcc")
    info, report = fluidml_tvm.export(str(model_zoo.model_path(model)), tmp_path / "a", preset,
                                      fcompile=target.cross_compiler)
    head = (info.directory / info.manifest.library).read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == EM_AARCH64
    assert report["main"].arena_bytes > 0
    assert (info.directory / "model.cl").is_file() == (not target.cpu)
