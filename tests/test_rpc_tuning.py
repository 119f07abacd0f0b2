"""Tuning through a real RPC tracker and servers on loopback: a server killed or frozen mid-run stops tuning
(or another server takes over) with every record kept; an unreachable tracker is a clear error at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from fluidml_tvm.tuning import ApplyTuningDatabase, open_database, tune
from fluidml_tvm.schedule.database import RECORD_FILE
from fluidml_tvm.tuning.rpc import RemoteDevice, RemoteDeviceLost, TrackerUnreachable, remote_measurement
from fluidml_tvm.pipeline import stages

from farm import free_port, kill_group

ROOT = Path(__file__).resolve().parents[1]
TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
TARGET_JSON = '{"kind": "llvm", "num-cores": 2}'
KEY = "fluidml-test"


@tvm.script.ir_module
class Matmul:
    @R.function
    def main(x: R.Tensor((32, 64), "float32"), w: R.Tensor((64, 48), "float32")):
        with R.dataflow():
            y = R.nn.relu(R.matmul(x, w))
            R.output(y)
        return y


def _start(log, *args) -> subprocess.Popen:
    # Own session: killing the group also kills the popen_worker a server leaves behind.
    return subprocess.Popen([sys.executable, "-m", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


def _wait_for(condition, what, timeout=60.0, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log else ""
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")
        time.sleep(0.5)


@pytest.fixture
def tracker(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("rpc") / "tracker.log"
    proc = _start(log, "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                  "--port-end", str(port + 1), "--silent")
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        _wait_for(listening, "the RPC tracker", proc=proc, log=log)
        yield f"127.0.0.1:{port}"
    finally:
        kill_group(proc)


def _start_server(tracker, log) -> subprocess.Popen:
    """One more RPC server under KEY, started once the tracker lists it."""
    device = RemoteDevice.parse(tracker, KEY)
    before = device.count_servers()
    port = free_port()
    proc = _start(log, "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                  "--port-end", str(port + 10), "--tracker", tracker, "--key", KEY, "--silent")
    try:
        _wait_for(lambda: device.count_servers() > before, "the RPC server", proc=proc, log=log)
    except BaseException:
        kill_group(proc)
        raise
    return proc


@pytest.fixture
def servers(tracker, tmp_path_factory):
    """``start()`` starts a server; all are killed (by process group) at the end."""
    started = []

    def start():
        started.append(_start_server(tracker, tmp_path_factory.mktemp("rpc") / "server.log"))
        return started[-1]

    try:
        yield start
    finally:
        for proc in started:
            kill_group(proc)


@pytest.fixture
def server(servers):
    return servers()


def _records(work_dir) -> int:
    path = work_dir / RECORD_FILE
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_no_server_is_a_clear_error(tracker):
    with pytest.raises(RemoteDeviceLost, match=f"no RPC server '{KEY}' at tracker {tracker}"):
        remote_measurement(tracker, KEY)


def test_bad_tracker_address():
    with pytest.raises(ValueError, match="HOST:PORT"):
        remote_measurement("localhost", KEY)


def test_tune_through_rpc_then_lose_the_server(tracker, server, tmp_path):
    runner, callbacks = remote_measurement(tracker, KEY, session_timeout_sec=30)
    # Kill the server as soon as the first batch of measurements is in the database.
    killer = threading.Thread(target=lambda: (_wait_for(lambda: _records(tmp_path) >= 4, "first batch", 300),
                                               kill_group(server)), daemon=True)
    killer.start()
    with pytest.raises(RemoteDeviceLost) as info:
        # Random candidates (no cost model) are enough to exercise the remote measurement.
        tune(Matmul, TARGET, tmp_path, trials=16, trials_per_iter=4, runner=runner,
             extra_callbacks=callbacks, search="replay-trace", progress=False, seed=0)
    message = str(info.value)
    assert f"'{KEY}' at tracker {tracker} went away" in message
    assert f"kept in {tmp_path}" in message

    # Every record measured through RPC before the server died is kept and valid;
    # the batch that failed because of the dead server was not recorded.
    database = open_database(tmp_path, repair=False)
    records = database.get_all_tuning_records()
    assert len(records) >= 4
    assert all(r.run_secs is not None and all(float(s) < 1e9 for s in r.run_secs) for r in records)

    # The records measured remotely build a correct module.
    parts = stages(TARGET)
    with TARGET:
        mod = tvm.transform.Sequential(parts["fuse"] + [ApplyTuningDatabase(TARGET, database)] + parts["plan"]
                                       + parts["lower"] + parts["finalize"])(Matmul)
    assert any(f.attrs and f.attrs.get("tirx.is_scheduled", False)
               for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET, relax_pipeline=None), tvm.cpu())
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((32, 64), "float32"), rng.standard_normal((64, 48), "float32")
    out = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    np.testing.assert_allclose(out, np.maximum(x @ w, 0), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# an unreachable tracker, a frozen server: through the command, every wait bounded


def _silent_port(black_hole: bool):
    """A port that takes connections and never answers, or (``black_hole``) drops them unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    held = [listener]
    if black_hole:  # the accept queue is full: the kernel drops every further SYN
        filler = socket.create_connection(listener.getsockname(), timeout=5)
        held.append(filler)
    return listener.getsockname()[1], held


@pytest.mark.parametrize("kind", ["nothing listening", "black-holed", "never answers"])
def test_unreachable_tracker_is_a_clear_error(kind):
    held = []
    if kind == "nothing listening":
        port = free_port()
    else:
        port, held = _silent_port(black_hole=kind == "black-holed")
    try:
        with pytest.raises(TrackerUnreachable, match=rf"--rpc-tracker 127\.0\.0\.1:{port}: no RPC tracker answers"
                                                     rf".*(connection refused|no answer within 5 s)"):
            remote_measurement(f"127.0.0.1:{port}", KEY, session_timeout_sec=60)
    finally:
        for s in held:
            s.close()


def _matmul_onnx(path) -> Path:
    w = np.random.default_rng(0).standard_normal((64, 48)).astype("float32")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["m"]), onnx.helper.make_node("Relu", ["m"], ["y"])], "mm",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [32, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [32, 48])],
        [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return Path(path)


def _tune_command(model, db, tracker, trials, timeout=5):
    """``fluidml-tvm tune`` through the tracker, in its own process group (killed whole by _kill)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", "fluidml_tvm.cli", "tune", str(model), "--db", str(db), "--trials", str(trials),
         "--trials-per-iter", "4", "--target", TARGET_JSON, "--rpc-tracker", tracker, "--rpc-key", KEY,
         "--rpc-timeout", str(timeout), "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc, timeout):
    """``(returncode, stdout, stderr)``; a command still running after ``timeout`` s fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"the command did not end within {timeout} s")
    return proc.returncode, out, err


def test_unreachable_tracker_command_exits_2_with_one_line(tmp_path):
    port = free_port()
    proc = _tune_command(_matmul_onnx(tmp_path / "mm.onnx"), tmp_path / "db", f"127.0.0.1:{port}", 8, timeout=60)
    code, _, err = _finish(proc, 40)  # TVM's own connect retries for 60 s
    assert code == 2
    assert err.strip().splitlines() == [
        f"fluidml-tvm: error: --rpc-tracker 127.0.0.1:{port}: no RPC tracker answers there (connection refused: "
        f"nothing listens on that port); start one with: python -m tvm.exec.rpc_tracker --host 127.0.0.1 "
        f"--port {port}"]


def test_frozen_server_stops_tuning_with_every_record_kept(tracker, servers, tmp_path):
    frozen = servers()
    model, db = _matmul_onnx(tmp_path / "mm.onnx"), tmp_path / "db"
    proc = _tune_command(model, db, tracker, trials=64)
    try:
        _wait_for(lambda: _records(db) >= 4, "the first batch", timeout=300, proc=proc, log=None)
        os.killpg(frozen.pid, signal.SIGSTOP)  # the server and its session, as a hung board
        before = (db / RECORD_FILE).read_text().splitlines()
        code, _, err = _finish(proc, 240)
    finally:
        kill_group(proc)
    assert code == 3, err[-2000:]
    assert "Traceback" not in err
    assert f"tuning stopped: the RPC device '{KEY}' at tracker {tracker}" in err
    assert f"kept in {db}" in err

    # Nothing measured before the freeze was lost; what was added since is real measurements.
    after = (db / RECORD_FILE).read_text().splitlines()
    assert after[: len(before)] == before
    records = open_database(db, repair=False).get_all_tuning_records()
    assert len(records) == len(after) and all(float(s) < 1e9 for r in records for s in r.run_secs)
    # (that the same command then continues from the kept records: test_tuning's resume tests)


def test_a_second_server_takes_over_from_a_frozen_one(tracker, servers, tmp_path):
    frozen = servers()  # registered first: the tracker hands it out first
    servers()
    os.killpg(frozen.pid, signal.SIGSTOP)
    db = tmp_path / "db"
    code, out, err = _finish(_tune_command(_matmul_onnx(tmp_path / "mm.onnx"), db, tracker, trials=8), 300)
    assert code == 0, err[-2000:]
    assert f"{db}: 8 of 8 trials measured" in out
    # The candidate sent to the frozen server timed out (recorded as failed); the others were measured.
    secs = [float(r.run_secs[0]) for r in open_database(db, repair=False).get_all_tuning_records()]
    assert len(secs) == 8 and sum(s >= 1e9 for s in secs) == 1
