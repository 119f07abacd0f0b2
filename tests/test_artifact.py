"""fluidml_tvm.artifact: building the deployable directory from an ONNX-imported module."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from fluidml_tvm import runtime
from fluidml_tvm.artifact import export_artifact
from fluidml_tvm.runtime.weights import HEADER

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((16, 32), "float32")
W2 = RNG.standard_normal((8, 32), "float32")  # Gemm transB=1: TVM wants it transposed
B2 = RNG.standard_normal(8).astype("float32")
X = RNG.standard_normal((4, 16), "float32")


def _onnx_model():
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [numpy_helper.from_array(a, n) for a, n in [(W1, "W1"), (W2, "W2"), (B2, "b2")]],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def imported():
    mod, params = relax.frontend.detach_params(from_onnx(_onnx_model(), keep_params_in_input=True))
    return mod, params["main"]


@pytest.fixture(scope="module")
def built(imported, tmp_path_factory):
    mod, params = imported
    return export_artifact(mod, params, "llvm", tmp_path_factory.mktemp("a") / "mlp")


def test_directory_and_manifest(built):
    m = built.manifest
    assert sorted(p.name for p in built.directory.iterdir()) == [
        "manifest.json", "model.so", "weights.bin"
    ]
    assert [(s.name, s.shape, s.dtype) for s in m.inputs] == [("x", (4, 16), "float32")]
    assert all(e.offset % 64 == 0 for e in m.weights)
    assert m.weights_bytes == (built.directory / "weights.bin").stat().st_size
    assert runtime.Manifest.load(built.directory) == m
    header = (built.directory / "weights.bin").read_bytes()[: HEADER.size]
    assert HEADER.unpack(header)[2].hex() == m.fingerprint


def test_weights_stored_in_final_layout(built):
    """The Gemm weight is transposed once, at build time, and stored that way."""
    shapes = sorted(e.shape for e in built.manifest.weights)
    assert shapes == [(8,), (16, 32), (32, 8)]
    by_shape = {w.shape: w for w in built.weights}
    assert np.array_equal(by_shape[(32, 8)], W2.T)


def test_lean_runtime_matches_in_process_build_and_onnxruntime(built):
    vm = relax.VirtualMachine(built.executable, tvm.cpu())
    ref = vm["main"](tvm.runtime.tensor(X), *[tvm.runtime.tensor(w) for w in built.weights])
    y = runtime.load(built.directory)(X)
    assert np.array_equal(y, ref.numpy())
    (expected,) = ort.InferenceSession(_onnx_model().SerializeToString()).run(None, {"x": X})
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_embedded_weights_form(imported, built, tmp_path):
    mod, params = imported
    info = export_artifact(mod, params, "llvm", tmp_path / "one", embed_weights=True)
    assert not (tmp_path / "one" / "weights.bin").exists()
    assert info.manifest.weights_file is None
    assert info.manifest.weights == built.manifest.weights  # same weights...
    assert info.manifest.fingerprint != built.manifest.fingerprint  # ...in another compiled module
    y = runtime.load(built.directory)(X)
    assert np.array_equal(runtime.load(tmp_path / "one")(X), y)
    # The library alone also runs in stock TVM.
    library = tvm.runtime.load_module(str(tmp_path / "one" / "model.so"))
    vm = relax.VirtualMachine(library, tvm.cpu())
    assert np.array_equal(vm["main"](tvm.runtime.tensor(X)).numpy(), y)


def test_params_by_name(imported, built, tmp_path):
    mod, params = imported
    names = [v.name for v in mod["main"].params[1:]]
    info = export_artifact(mod, dict(zip(names, params)), "llvm", tmp_path / "named")
    assert info.manifest.fingerprint == built.manifest.fingerprint


def test_wrong_number_of_params(imported, tmp_path):
    mod, params = imported
    with pytest.raises(ValueError, match="main takes 3 params, got 2"):
        export_artifact(mod, params[:2], "llvm", tmp_path / "bad")


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="no aarch64 cross gcc")
def test_cross_compiled_library_is_aarch64(imported, tmp_path):
    from tvm.support.cc import cross_compiler

    mod, params = imported
    target = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    info = export_artifact(
        mod, params, target, tmp_path / "a64", fcompile=cross_compiler("aarch64-linux-gnu-gcc")
    )
    elf = (info.directory / "model.so").read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64


def test_tied_embedding_is_stored_once(tmp_path):
    """GPT-2 reads its token table as-is (lookup) and transposed (LM head): one copy on disk."""
    pytest.importorskip("torch")

    import model_zoo
    import onnx

    import fluidml_tvm

    path = model_zoo.model_path("gpt2-tiny")
    proto = onnx.load(str(path))
    initializer_bytes = sum(int(np.prod(i.dims)) * 4 for i in proto.graph.initializer)
    info, _ = fluidml_tvm.export(str(path), tmp_path / "gpt2", "llvm")
    assert info.manifest.weights_bytes <= initializer_bytes + 64 * len(info.manifest.weights)
    feeds = model_zoo.example_inputs("gpt2-tiny")
    with runtime.load(tmp_path / "gpt2") as model:
        out = model(*feeds.values())
    ref = ort.InferenceSession(str(path)).run(None, feeds)[0]
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_exported_weights_are_packed_once_at_build_time(tmp_path):
    """Matmul weights leave the build already in the kernels' [N/n, K, n] layout, at no extra bytes."""
    import fluidml_tvm
    from fluidml_tvm.example_model import build_example_model, example_inputs

    proto = build_example_model()
    initializer_bytes = sum(int(np.prod(i.dims)) * 4 for i in proto.graph.initializer)
    info, _ = fluidml_tvm.export(proto, tmp_path / "enc", "x86-64")
    shapes = [tuple(w.shape) for w in info.manifest.weights]
    assert any(len(s) == 3 and s[2] in (8, 16, 32) for s in shapes), shapes
    assert info.manifest.weights_bytes <= initializer_bytes + 64 * len(shapes)
    feeds = example_inputs(proto)
    with runtime.load(tmp_path / "enc") as model:
        out = model(*feeds.values())
    ref = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)[0]
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_rebuild_in_place_leaves_a_loaded_model_alone(imported, tmp_path):
    """Issue 8, item 5: files are replaced by rename, so a serving process keeps its old inodes
    (rewriting weights.bin in place made it compute with the new weights, or die with SIGBUS)."""
    mod, params = imported
    export_artifact(mod, params, "llvm", tmp_path / "live")
    model = runtime.load(tmp_path / "live")
    before = model(X)
    export_artifact(mod, [p.numpy() * 2 for p in params], "llvm", tmp_path / "live")
    assert np.array_equal(model(X), before)
    assert not np.array_equal(runtime.load(tmp_path / "live")(X), before)  # a new load sees the rebuild
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == ["manifest.json", "model.so", "weights.bin"]


def test_switching_to_embedded_weights_drops_the_stale_weights_file(imported, tmp_path):
    mod, params = imported
    export_artifact(mod, params, "llvm", tmp_path / "a")
    export_artifact(mod, params, "llvm", tmp_path / "a", embed_weights=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json", "model.so"]
    assert np.array_equal(runtime.load(tmp_path / "a")(X), runtime.load(tmp_path / "a", verify=False)(X))


def test_export_onto_a_file_refused_before_the_build(imported, tmp_path, monkeypatch):
    mod, params = imported
    (tmp_path / "taken").write_text("not an artifact")
    monkeypatch.setattr(tvm, "compile", lambda *a, **k: pytest.fail("built before refusing the path"))
    with pytest.raises(FileExistsError, match="artifact path .*taken exists and is not a directory"):
        export_artifact(mod, params, "llvm", tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "not an artifact"
