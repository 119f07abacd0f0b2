"""fluidml_tvm.runtime: the deploy side, its weights format and its refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from fluidml_tvm import runtime
from fluidml_tvm.artifact import export_artifact
from fluidml_tvm.runtime.manifest import ArtifactError
from fluidml_tvm.runtime.weights import ALIGNMENT, layout_weights, open_weights, write_weights

ROOT = Path(__file__).resolve().parents[1]


@I.ir_module
class Small:
    @R.function
    def main(
        x: R.Tensor((4, 16), "float32"),
        w: R.Tensor((8, 16), "float32"),
        b: R.Tensor((8,), "float32"),
    ):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            wt = R.permute_dims(w)  # weight-only: lifted and done at build time
            y = R.nn.relu(R.add(R.matmul(x, wt), b))
            s = R.sum(y)
            R.output(y, s)
        return (y, s)


def _params(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, 16), "float32"), rng.standard_normal(8).astype("float32")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The Small artifact, a foreign build of it (other weights), and an input."""
    base = tmp_path_factory.mktemp("artifacts")
    info = export_artifact(Small, _params(0), "llvm", base / "small")
    foreign = export_artifact(Small, _params(1), "llvm", base / "foreign")
    x = np.random.default_rng(2).standard_normal((4, 16), "float32")
    return info, foreign, x


@pytest.fixture
def artifact(built, tmp_path) -> Path:
    """A private copy of the Small artifact that a test may damage."""
    return Path(shutil.copytree(built[0].directory, tmp_path / "small"))


def _in_process(info, x):
    vm = relax.VirtualMachine(info.executable, tvm.cpu())
    y, s = vm["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(w) for w in info.weights])
    return y.numpy(), s.numpy()


def test_outputs_identical_to_in_process_build(built, artifact):
    info, _, x = built
    y, s = runtime.load(artifact)(x)
    ref_y, ref_s = _in_process(info, x)
    assert np.array_equal(y, ref_y) and np.array_equal(s, ref_s)
    w, b = _params(0)
    np.testing.assert_allclose(y, np.maximum(x @ w.T + b, 0), rtol=1e-5, atol=1e-5)


def test_misaligned_input_is_realigned(built, artifact):
    """Kernels vectorized for AVX-512 use aligned loads: a misaligned input must not reach them."""
    from fluidml_tvm.runtime.model import _aligned

    info, _, x = built
    raw = np.empty(x.nbytes + 2 * ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT + 4  # deliberately 4 bytes past an aligned address
    shifted = raw[start:start + x.nbytes].view(np.float32).reshape(x.shape)
    shifted[...] = x
    assert shifted.ctypes.data % ALIGNMENT and _aligned(shifted).ctypes.data % ALIGNMENT == 0
    assert np.array_equal(_aligned(shifted), x)
    y, s = runtime.load(artifact)(shifted)
    assert np.array_equal(y, _in_process(info, x)[0])


_CHILD = """
import json, sys, numpy as np
from fluidml_tvm import runtime
y, s = runtime.load(sys.argv[1])(np.load(sys.argv[2]))
np.save(sys.argv[3], y)
maps = open("/proc/self/maps").read()
print(json.dumps({"tvm": "tvm" in sys.modules, "torch": "torch" in sys.modules,
                  "compiler": "libtvm_compiler" in maps, "runtime": "libtvm_runtime" in maps}))
"""


def test_deploy_process_never_loads_the_compiler(built, artifact, tmp_path):
    info, _, x = built
    x_path, y_path = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x_path, x)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(artifact), str(x_path), str(y_path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path, check=True,
    )
    seen = json.loads(child.stdout.splitlines()[-1])
    assert seen == {"tvm": False, "torch": False, "compiler": False, "runtime": True}
    assert np.array_equal(np.load(y_path), _in_process(info, x)[0])


def test_arena_allocated_once_and_reused(built, artifact):
    _, _, x = built
    model = runtime.load(artifact)
    blocks: list[set[int]] = []

    def record(func, name, before_run, ret, *args):
        if not before_run and str(name) == "vm.builtin.alloc_tensor":
            blocks[-1].add(ret.data_ptr())
        return 0

    model.set_instrument(record)
    for _ in range(5):
        blocks.append(set())
        model(x)
    # After the first two calls no new block is ever taken from the system.
    assert set().union(*blocks) == blocks[0] | blocks[1]
    model.close()


def test_missing_weights_refused(artifact):
    (artifact / "weights.bin").unlink()
    with pytest.raises(ArtifactError, match="weights file .* is missing"):
        runtime.load(artifact)


@pytest.mark.parametrize("keep", [0, 10, 64, -1])
def test_truncated_weights_refused(artifact, keep):
    path = artifact / "weights.bin"
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(ArtifactError, match="truncated"):
        runtime.load(artifact)


def test_weights_from_another_build_refused(built, artifact):
    shutil.copy(built[1].directory / "weights.bin", artifact / "weights.bin")
    with pytest.raises(ArtifactError, match="from another build"):
        runtime.load(artifact)


def test_library_from_another_build_refused(built, artifact):
    shutil.copy(built[1].directory / "model.so", artifact / "model.so")
    with pytest.raises(ArtifactError, match="library .* from another build"):
        runtime.load(artifact)


def test_corrupt_bytes_refused_by_default(artifact):
    """Item 4 of issue 8: one flipped weight byte loaded silently unless verify=True was asked."""
    path = artifact / "weights.bin"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weight 'wt' does not match its crc32"):
        runtime.load(artifact)
    runtime.load(artifact, verify=False)  # the explicit opt-out: header and sizes still agree


def test_missing_manifest_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not a fluidml-tvm artifact"):
        runtime.load(tmp_path)


def test_wrong_input_refused(built, artifact):
    model = runtime.load(artifact)
    with pytest.raises(ValueError, match=r"input 'x' must be float32\[4, 16\]"):
        model(np.zeros((4, 15), "float32"))
    with pytest.raises(TypeError, match="takes 1 inputs"):
        model()


def test_weights_held_once(tmp_path):
    """Weights stay file-backed: loading and running adds (almost) no anonymous memory."""
    n = 2048

    @I.ir_module
    class Big:
        @R.function
        def main(x: R.Tensor((1, n), "float32"), w: R.Tensor((n, n), "float32")):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    w = np.ones((n, n), "float32")  # 16 MB
    export_artifact(Big, [w], "llvm", tmp_path / "big")
    probe = """
import json, sys, numpy as np
from fluidml_tvm import runtime
def status():
    return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in open("/proc/self/status")
            if l.startswith(("RssAnon", "RssFile"))}
model = runtime.load(sys.argv[1])
before = status()
y = model(np.ones((1, 2048), "float32"))
after = status()
print(json.dumps({"anon": after["RssAnon"] - before["RssAnon"],
                  "file": after["RssFile"] - before["RssFile"], "y": float(y[0, 0])}))
"""
    child = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "big")], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, check=True,
    )
    grew = json.loads(child.stdout.splitlines()[-1])
    assert grew["y"] == n
    assert grew["file"] >= w.nbytes * 0.9  # the weights, mapped from the file
    assert grew["anon"] < w.nbytes * 0.25  # ...and not copied


_DTYPES = st.sampled_from(["float32", "float16", "int64", "int8", "bool", "float64"])
_SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(_SHAPES, _DTYPES), max_size=6))
def test_weights_file_roundtrip(tmp_path_factory, specs):
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal(shape) * 10).astype(dtype) for shape, dtype in specs]
    entries, size = layout_weights([(f"w{i}", a) for i, a in enumerate(arrays)])
    ends = [e.offset + e.nbytes for e in entries]
    assert all(e.offset % ALIGNMENT == 0 for e in entries)
    assert all(end <= nxt.offset for end, nxt in zip(ends, entries[1:]))
    assert size % ALIGNMENT == 0 and all(end <= size for end in ends)

    path = tmp_path_factory.mktemp("w") / "weights.bin"
    write_weights(path, entries, arrays, "ab" * 32, size)
    loaded = open_weights(path, entries, "ab" * 32, size)
    for a, b in zip(arrays, loaded, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
        assert not b.flags.owndata  # a view of the mapping, not a copy


def test_missing_runtime_library_is_explained(artifact):
    code = "import sys; from fluidml_tvm import runtime; runtime.load(sys.argv[1])"
    child = subprocess.run(
        [sys.executable, "-c", code, str(artifact)],
        capture_output=True, text=True, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "FLUIDML_TVM_RUNTIME_LIB": "/nowhere/lib.so"},
    )
    assert "libtvm_runtime.so not found at /nowhere/lib.so" in child.stderr


def test_profile_times_every_kernel_alone_and_rescales_nothing(built, artifact):
    from fluidml_tvm.runtime.profile import LEFTOVER, UNEXPLAINED, profile

    _, _, x = built
    with runtime.load(artifact) as model:
        calls = []
        model.set_instrument(lambda f, name, before, *_: calls.append(str(name)) if before else None or 0)
        model(x)
        model.set_instrument(None)
        measured = profile(model, [x], runs=5)
        y, _ = model(x)  # the hooks are gone: a plain call again
    kernels = [n for n in calls if not n.startswith("vm.")]
    # One row per kernel, with its calls in one inference; the VM's own calls in their row.
    assert {k.name: k.calls for k in measured.kernels} == {n: kernels.count(n) for n in set(kernels)}
    assert measured.vm.name == LEFTOVER and measured.vm.calls == len(calls) - len(kernels)
    assert all(k.seconds > 0 for k in measured.kernels) and measured.vm.seconds >= 0
    assert measured.kernels == sorted(measured.kernels, key=lambda r: -r.seconds)
    # The parts are measured, not scaled to the latency: what they leave is its own row.
    assert [r.name for r in measured.rows[-2:]] == [LEFTOVER, UNEXPLAINED]
    assert measured.rows[-1].seconds == pytest.approx(measured.latency - measured.explained)
    assert np.array_equal(y, _in_process(built[0], x)[0])


_THREADS = """
import sys
from fluidml_tvm import runtime
runtime.load(sys.argv[1])
from fluidml_tvm.runtime.library import tvm_ffi
print(tvm_ffi.get_global_func("runtime.NumThreads")())
"""


@pytest.mark.parametrize("env", [None, "1"])
def test_kernels_run_on_every_core_unless_told(artifact, env):
    # TVM alone would take half the CPUs on x86 (it assumes hyper-threads).
    environ = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    if env is not None:
        environ["TVM_NUM_THREADS"] = env
    child = subprocess.run([sys.executable, "-c", _THREADS, str(artifact)], capture_output=True, text=True,
                           cwd=ROOT, check=True, env={**environ, "PYTHONPATH": str(ROOT)})
    expected = int(env) if env else len(os.sched_getaffinity(0))
    assert int(child.stdout.split()[-1]) == expected


def test_runs_on_emulated_aarch64_board(aarch64_board):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_on_aarch64.py")],
        capture_output=True, text=True, cwd=ROOT, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "aarch64" in result.stdout
