"""Loading an artifact as a trust boundary (issue 8, items 3, 4 and 5): names that escape the
directory, files that are not regular, libraries that are not the manifest's, weight tables
and bytes from another build, truncated files. Every refusal is an ArtifactError, raised
before any code of the library runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tvm.script import ir as I
from tvm.script import relax as R

from fluidml_tvm import runtime
from fluidml_tvm.artifact import export_artifact
from fluidml_tvm.runtime.manifest import ArtifactError, TensorSpec, WeightEntry, fingerprint

ROOT = Path(__file__).resolve().parents[1]
import stress_threads  # noqa: E402  (its model has four weights of one shape)

_EVIL = r"""
#include <stdio.h>
__attribute__((constructor)) static void ran(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("library code ran\n", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return stress_threads.build_artifact(tmp_path_factory.mktemp("trust") / "model")


@pytest.fixture
def artifact(built, tmp_path) -> Path:
    """A private copy that a test may damage."""
    return Path(shutil.copytree(built, tmp_path / "model"))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """A shared object outside the artifact whose constructor writes a marker file."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    source, library, marker = tmp_path / "evil.c", tmp_path / "outside" / "evil.so", tmp_path / "marker"
    library.parent.mkdir()
    source.write_text(_EVIL)
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', str(source), "-o", str(library)],
                   check=True)
    # The marker does appear when the library is loaded: its absence below means it never was.
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(library)!r})"], check=True)
    assert marker.read_text() == "library code ran\n"
    marker.unlink()
    return library, marker


def _edit_manifest(artifact: Path, edit) -> None:
    path = artifact / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def _rehash(raw: dict) -> None:
    """Recompute the manifest's fingerprint after an edit, as a careless tool might."""
    inputs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in raw["inputs"]]
    weights = [WeightEntry(**{**w, "shape": tuple(w["shape"])}) for w in raw["weights"]]
    raw["fingerprint"] = fingerprint(raw["graph"], raw["target"], inputs, weights)


def _load_in_child(artifact: Path) -> subprocess.CompletedProcess:
    """runtime.load in a fresh process: a crash (SIGBUS, SIGSEGV) shows as a signal, not a dead test run."""
    code = "import sys; from fluidml_tvm import runtime; runtime.load(sys.argv[1]); print('loaded')"
    return subprocess.run([sys.executable, "-c", code, str(artifact)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False, timeout=120)


def _x() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((16, stress_threads.WIDTH)).astype("float32")


# --- item 3: names that escape the directory, code that runs before it is checked -------------

@pytest.mark.parametrize("name", ["ABSOLUTE", "../outside/evil.so", "sub/model.so", "..", ""])
def test_library_name_outside_the_directory_refused(artifact, evil, name):
    library, marker = evil
    (artifact / "sub").mkdir()
    shutil.copy(library, artifact / "sub" / "model.so")
    name = str(library) if name == "ABSOLUTE" else name
    _edit_manifest(artifact, lambda raw: raw.update(library=name))
    with pytest.raises(ArtifactError, match="field 'library' must be a plain file name"):
        runtime.load(artifact)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["/dev/zero", "../weights.bin", "a/weights.bin"])
def test_weights_name_outside_the_directory_refused(artifact, name):
    _edit_manifest(artifact, lambda raw: raw.update(weights_file=name))
    with pytest.raises(ArtifactError, match="field 'weights_file' must be a plain file name"):
        runtime.load(artifact)


def test_symlinked_library_refused_before_it_runs(artifact, evil):
    library, marker = evil
    (artifact / "model.so").unlink()
    (artifact / "model.so").symlink_to(library)
    with pytest.raises(ArtifactError, match="library model.so cannot be opened.*symlinks are refused"):
        runtime.load(artifact)
    assert not marker.exists()


def test_foreign_library_in_the_directory_refused_before_it_runs(artifact, evil):
    """The checksum is checked on the descriptor that is then loaded: the constructor never runs."""
    library, marker = evil
    shutil.copy(library, artifact / "model.so")
    with pytest.raises(ArtifactError, match="library model.so does not match the manifest"):
        runtime.load(artifact)
    assert not marker.exists()


def test_fifo_and_device_weights_refused(artifact):
    (artifact / "weights.bin").unlink()
    os.mkfifo(artifact / "weights.bin")  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(ArtifactError, match="weights file weights.bin is not a regular file"):
        runtime.load(artifact)
    (artifact / "weights.bin").unlink()
    (artifact / "weights.bin").symlink_to("/dev/zero")
    with pytest.raises(ArtifactError, match="symlinks are refused"):
        runtime.load(artifact)


def test_symlinked_or_directory_manifest_refused(artifact, tmp_path):
    shutil.copy(artifact / "manifest.json", tmp_path / "elsewhere.json")
    (artifact / "manifest.json").unlink()
    (artifact / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ArtifactError, match="manifest manifest.json cannot be opened.*symlinks are refused"):
        runtime.load(artifact)
    (artifact / "manifest.json").unlink()
    (artifact / "manifest.json").mkdir()
    with pytest.raises(ArtifactError, match="manifest manifest.json is not a regular file"):
        runtime.load(artifact)


# --- item 4: the fingerprint covers graph, library, weight table and bytes ---------------------

def test_flipped_weight_byte_refused(artifact):
    path = artifact / "weights.bin"
    data = bytearray(path.read_bytes())
    data[json.loads((artifact / "manifest.json").read_text())["weights"][2]["offset"] + 100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weight 'w2' does not match its crc32"):
        runtime.load(artifact)


@pytest.mark.parametrize("rehash", [False, True], ids=["as-is", "fingerprint-recomputed"])
@pytest.mark.parametrize("edit", ["shift-offset-64", "swap-two-weights"])
def test_edited_weight_table_refused(artifact, edit, rehash):
    """Either the manifest no longer hashes to its fingerprint, or the library carries the old one."""
    def change(raw):
        w = raw["weights"]
        if edit == "shift-offset-64":
            w[1]["offset"] += 64
        else:  # same shape and dtype: only the bytes differ
            w[0]["offset"], w[1]["offset"] = w[1]["offset"], w[0]["offset"]
            w[0]["crc32"], w[1]["crc32"] = w[1]["crc32"], w[0]["crc32"]
        if rehash:
            _rehash(raw)

    _edit_manifest(artifact, change)
    match = "from another build" if rehash else "do not hash to its 'fingerprint'"
    with pytest.raises(ArtifactError, match=match):
        runtime.load(artifact, verify=False)  # caught without re-reading the weights


@I.ir_module
class Relu:
    @R.function
    def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 8), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.relu(R.matmul(x, w))
            R.output(y)
        return y


@I.ir_module
class Sigmoid:
    @R.function
    def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 8), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.sigmoid(R.matmul(x, w))
            R.output(y)
        return y


@I.ir_module
class NoWeightsRelu:
    @R.function
    def main(x: R.Tensor((4, 8), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.relu(x)
            R.output(y)
        return y


@I.ir_module
class NoWeightsSigmoid:
    @R.function
    def main(x: R.Tensor((4, 8), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.sigmoid(x)
            R.output(y)
        return y


@pytest.mark.parametrize("pair", [(Relu, Sigmoid), (NoWeightsRelu, NoWeightsSigmoid)], ids=["same-weights", "no-weights"])
def test_two_graphs_with_the_same_weights_do_not_mix(tmp_path, pair):
    w = np.random.default_rng(0).standard_normal((8, 8)).astype("float32")
    params = [[w] if len(mod["main"].params) > 1 else [] for mod in pair]
    a, b = (export_artifact(mod, p, "llvm", tmp_path / name) for mod, p, name in zip(pair, params, "ab"))
    assert a.manifest.weights == b.manifest.weights
    assert a.manifest.fingerprint != b.manifest.fingerprint
    shutil.copy(b.directory / "model.so", a.directory / "model.so")
    with pytest.raises(ArtifactError, match="library model.so does not match the manifest"):
        runtime.load(a.directory)
    x = np.random.default_rng(1).standard_normal((4, 8)).astype("float32")
    assert np.allclose(runtime.load(b.directory)(x), 1 / (1 + np.exp(-(x @ w if params[1] else x))), atol=1e-6)


# --- item 5: truncated and torn files ----------------------------------------------------------

@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_library_refused_not_sigbus(artifact, keep):
    path = artifact / "model.so"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    child = _load_in_child(artifact)
    assert child.returncode == 1, (child.returncode, child.stderr[-2000:])
    assert "ArtifactError" in child.stderr and "library model.so does not match the manifest" in child.stderr


def test_refusals_are_one_line_naming_the_artifact(artifact):
    (artifact / "weights.bin").write_bytes(b"")
    with pytest.raises(ArtifactError) as err:
        runtime.load(artifact)
    assert str(artifact) in str(err.value) and "\n" not in str(err.value)


def test_intact_artifact_still_loads_and_runs(built):
    with runtime.load(built) as model:
        y, s = model(_x())
    assert y.shape == (16, stress_threads.WIDTH) and np.isfinite(s)
    assert not any(p.name.startswith(".") for p in built.iterdir())  # no temporary files left
