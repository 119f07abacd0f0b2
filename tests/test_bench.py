"""``fluidml-tvm bench``: the artifact timed here with the lean runtime, or on an emulated aarch64 board through
an RPC tracker, its output compared with ONNX Runtime. Only the flow and the numbers' shape are checked: timings,
above all under QEMU, are no subject of a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fluidml_tvm.bench import TOLERANCE
from fluidml_tvm.cli import main
from fluidml_tvm.tuning.rpc import RemoteDevice

from farm import free_port, kill_group

KEY = "bench-aarch64"
STARTUP_SEC = 300  # a QEMU Python importing all of tvm on a loaded machine


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> Path:
    """MatMul + Relu + Gemm with a symbolic batch dimension."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        [numpy_helper.from_array(rng.standard_normal((64, 128), "float32"), "w1"),
         numpy_helper.from_array(rng.standard_normal((32, 128), "float32"), "w2")])
    path = tmp_path_factory.mktemp("bench") / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _peak_rss_mb() -> float:
    line = next(li for li in Path("/proc/self/status").read_text().splitlines() if li.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_bench_here_times_the_lean_runtime_and_matches_onnxruntime(mlp, tmp_path, capsys):
    code = main(["bench", str(mlp), "--input-shape", "x=8,64", "--repeat", "7", "--json", str(tmp_path / "b.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["where"] == "here (lean runtime)" and result["repeat"] == 7
    assert 0 < result["min_ms"] <= result["p10_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["max_rel_error"] <= TOLERANCE
    # The peak is the fresh process's own, not the compiler's it was started from (which has built the model).
    assert 0 < result["peak_rss_mb"] < _peak_rss_mb()
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["where", "repeat", "min"] and lines[1].startswith("here (lean runtime)")


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "aarch64"], "--target aarch64 builds for another machine: give --rpc-tracker and --rpc-key"),
    (["--rpc-key", "board"], "--rpc-tracker '': expected HOST:PORT"),
    (["--rpc-tracker", "127.0.0.1:9"], "--rpc-key"),
    (["--json", "/proc/nope/b.json"], "--json /proc/nope/b.json: cannot write there"),
])
def test_bad_arguments_are_one_line_before_the_build(mlp, capsys, args, message):
    code = main(["bench", str(mlp), "--input-shape", "x=8,64", *args])
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "building" not in err


def _wait_registered(device: RemoteDevice, procs, timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if device.count_servers() == 1:
                return
        except ConnectionError:  # the tracker is still starting
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            board = logs / "board.log"
            pytest.fail("the server did not register" + (":\n" + board.read_text()[-2000:] if board.exists() else ""))
        time.sleep(1)


def test_bench_on_an_emulated_board_through_the_tracker(aarch64_board, mlp, tmp_path, capsys):
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    host_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    board_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no x86 modules on the board
    procs = []
    try:
        with open(tmp_path / "tracker.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "fluidml_tvm.cli", "rpc", "tracker", "--port",
                                           str(port)], env=host_env, stdout=log, stderr=log, start_new_session=True))
        with open(tmp_path / "board.log", "wb") as log:  # the one command a board runs (full apache-tvm wheel)
            procs.append(subprocess.Popen(
                [str(aarch64_board / "python"), "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                 "--key", KEY, "--host", "127.0.0.1", "--port", str(free_port()), "--port-end", "65535"],
                env=board_env, stdout=log, stderr=log, start_new_session=True))
        _wait_registered(RemoteDevice("127.0.0.1", port, KEY), procs, STARTUP_SEC, tmp_path)

        code = main(["bench", str(mlp), "--target", "aarch64", "--input-shape", "x=8,64", "--repeat", "3",
                     "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", KEY, "--json", str(tmp_path / "b.json")])
        _, err = capsys.readouterr()
        assert code == 0, err
    finally:
        for proc in procs:
            kill_group(proc)
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["where"] == f"rpc '{KEY}'" and result["repeat"] == 3 and result["peak_rss_mb"] is None
    assert result["max_rel_error"] <= TOLERANCE  # aarch64 code, run on the board, like ONNX Runtime on the host
    assert "load_module" in (tmp_path / "board.log").read_text()  # the board, not this machine, ran it


def test_a_board_that_cannot_load_the_library_is_one_line(mlp, tmp_path, capsys):
    """An aarch64 library sent to an x86 server (this machine's): the server's refusal, in one line."""
    port, procs = free_port(), []
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    try:
        for args in (["tracker", "--port", str(port)],
                     ["server", "--tracker", f"127.0.0.1:{port}", "--key", KEY, "--port", str(free_port())]):
            procs.append(subprocess.Popen([sys.executable, "-m", "fluidml_tvm.cli", "rpc", *args, "--silent"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        _wait_registered(RemoteDevice("127.0.0.1", port, KEY), procs, 60, tmp_path)
        code = main(["bench", str(mlp), "--target", "aarch64", "--input-shape", "x=8,64", "--repeat", "1",
                     "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", KEY])
    finally:
        for proc in procs:
            kill_group(proc)
    _, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if not line.startswith("building ")]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"fluidml-tvm: error: the RPC device '{KEY}' at tracker")
