"""Tuning through a real RPC tracker and server on loopback; a server killed mid-run stops tuning, records kept."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from fluidml_tvm.tuning import ApplyTuningDatabase, open_database, tune
from fluidml_tvm.schedule.database import RECORD_FILE
from fluidml_tvm.tuning.rpc import RemoteDevice, RemoteDeviceLost, remote_measurement
from fluidml_tvm.pipeline import stages

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
KEY = "fluidml-test"


@tvm.script.ir_module
class Matmul:
    @R.function
    def main(x: R.Tensor((32, 64), "float32"), w: R.Tensor((64, 48), "float32")):
        with R.dataflow():
            y = R.nn.relu(R.matmul(x, w))
            R.output(y)
        return y


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(log, *args) -> subprocess.Popen:
    # Own session: killing the group also kills the popen_worker a server leaves behind.
    return subprocess.Popen([sys.executable, "-m", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _wait_for(condition, what, timeout=60.0, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")
        time.sleep(0.5)


@pytest.fixture
def tracker(tmp_path_factory):
    port = _free_port()
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
        _kill(proc)


@pytest.fixture
def server(tracker, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("rpc") / "server.log"
    proc = _start(log, "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                  "--port-end", str(port + 10), "--tracker", tracker, "--key", KEY, "--silent")
    try:
        device = RemoteDevice.parse(tracker, KEY)
        _wait_for(lambda: device.count_servers() > 0, "the RPC server", proc=proc, log=log)
        yield proc
    finally:
        _kill(proc)


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
                                               _kill(server)), daemon=True)
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
