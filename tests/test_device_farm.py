"""A device farm on loopback: a TVM RPC tracker and two emulated aarch64 boards (QEMU) under one key.

Tuning for aarch64 measures on both boards, survives one being killed, keeps
only valid measurements, and the tuned build runs on a board like ONNX Runtime
on the host. Timings under QEMU say nothing about a real board: only the flow,
the binaries and the numerics are checked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from fluidml_tvm import export
from fluidml_tvm.targets import cross_compiler
from fluidml_tvm.tuning import fast_local_builder, open_database, tune
from fluidml_tvm.tuning.failures import FAILED_RUN_SECS, AllMeasurementsFailed
from fluidml_tvm.tuning.rpc import RemoteDevice, TrackerUnreachable, remote_measurement

TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
KEY = "emulated-aarch64"
EM_AARCH64 = 183  # ELF e_machine of aarch64
STARTUP_SEC = 600  # two QEMU Pythons importing all of tvm on a loaded 2-core machine
SESSION_SEC = 300  # one measurement under QEMU, queueing included


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])],
        [numpy_helper.from_array(rng.standard_normal((64, 128), "float32"), "w1"),
         numpy_helper.from_array(rng.standard_normal((32, 128), "float32"), "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Farm:
    """A tracker on the host and emulated board servers, each process in its own process group."""

    def __init__(self, board: Path, logs: Path):
        self.board, self.logs, self.procs, self.killed = board, logs, {}, set()
        self.port = _free_port()
        self.device = RemoteDevice("127.0.0.1", self.port, KEY, session_timeout_sec=SESSION_SEC)

    def start(self, name: str, argv: list[str], env: dict) -> None:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - the process writes to it until killed
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        log.close()

    def start_all(self, servers: int) -> None:
        tracker = ["-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
                   "--port-end", str(self.port + 1)]
        self.start("tracker", [sys.executable, *tracker], dict(os.environ))
        # The board's Python must not see host paths (x86 extension modules).
        board_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        for i in range(servers):
            port = _free_port()
            self.start(f"board{i}", [str(self.board / "python"), "-m", "tvm.exec.rpc_server",
                                     "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1),
                                     "--tracker", f"127.0.0.1:{self.port}", "--key", KEY], board_env)
        self.wait_for(servers, STARTUP_SEC)

    def wait_for(self, servers: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (listed := self.listed()) != servers:
            dead = [n for n, p in self.procs.items() if p.poll() is not None and n not in self.killed]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log(n)[-1500:]}" for n in self.procs)
                pytest.fail(f"tracker lists {listed} of {servers} boards (exited: {dead})\n{logs}")
            time.sleep(1)

    def listed(self) -> int | None:
        """Servers the tracker lists; None while it does not answer yet (a loaded machine starts it slowly)."""
        try:
            return self.device.count_servers()
        except TrackerUnreachable:
            return None

    def kill(self, name: str) -> None:
        self.killed.add(name)
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the server, its popen worker, its session processes
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def served(self, name: str) -> int:
        """Candidates the board loaded (its server logs each load)."""
        return self.log(name).count("load_module")


@pytest.fixture
def farm(aarch64_board, tmp_path):
    farm = Farm(aarch64_board, tmp_path)
    try:
        farm.start_all(servers=2)
        yield farm
    finally:
        farm.stop()


@derived_object
class _CandidateMachines(ms.measure_callback.PyMeasureCallback):
    """Reads the ELF machine of every built candidate (before MetaSchedule deletes the files)."""

    def __init__(self):
        super().__init__()
        self.machines = []

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        for result in builder_results:
            assert result.error_msg is None, result.error_msg
            with open(str(result.artifact_path), "rb") as lib:
                head = lib.read(20)
            assert head[:4] == b"\x7fELF", f"{result.artifact_path} is not a shared library"
            self.machines.append(int.from_bytes(head[18:20], "little"))


@derived_object
class _KillBusiestBoard(ms.measure_callback.PyMeasureCallback):
    """After the first measured batch, kills the board that served it (between batches: nothing in flight)."""

    def __init__(self, farm: Farm):
        super().__init__()
        self.farm, self.victim = farm, None

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        if self.victim is None:
            self.victim = max(("board0", "board1"), key=self.farm.served)
            self.farm.kill(self.victim)
            self.farm.wait_for(1, 60)  # the tracker drops it when its connection closes


@pytest.mark.filterwarnings("ignore:layout costs are measured")  # on the device: not this test's subject
def test_tuning_across_two_boards_survives_one_killed_and_the_build_runs_on_the_board(farm, tmp_path):
    model = _mlp()
    remote = tvm.rpc.connect_tracker("127.0.0.1", farm.port).request(KEY, session_timeout=SESSION_SEC)
    assert str(remote.get_function("target.llvm_get_system_triple")()).startswith("aarch64")
    del remote

    runner, callbacks = remote_measurement(f"127.0.0.1:{farm.port}", KEY, session_timeout_sec=SESSION_SEC)
    machines, killer = _CandidateMachines(), _KillBusiestBoard(farm)
    report = tune(model, TARGET, tmp_path / "db", trials=6, trials_per_iter=2, packed=True,
                  runner=runner, extra_callbacks=[*callbacks, machines, killer], progress=False, seed=0)

    assert killer.victim is not None and farm.procs[killer.victim].poll() is not None
    survivor = ({"board0", "board1"} - {killer.victim}).pop()
    assert farm.served(killer.victim) >= 1 and farm.served(survivor) >= 1  # both boards measured
    assert report.measured_now == 6
    records = open_database(tmp_path / "db").get_all_tuning_records()
    assert len(records) == 6
    assert all(max(float(s) for s in r.run_secs) < FAILED_RUN_SECS for r in records)
    assert machines.machines and set(machines.machines) == {EM_AARCH64}

    info, _ = export(model, tmp_path / "artifact", TARGET, database=tmp_path / "db",
                     fcompile=cross_compiler(TARGET))
    x = np.random.default_rng(1).standard_normal((8, 64)).astype("float32")
    remote = tvm.rpc.connect_tracker("127.0.0.1", farm.port).request(KEY, session_timeout=SESSION_SEC)
    remote.upload(str(info.directory / info.manifest.library))
    dev = remote.cpu()
    vm = relax.VirtualMachine(remote.load_module(info.manifest.library), dev)
    got = vm["main"](tvm.runtime.tensor(x, dev), *[tvm.runtime.tensor(w, dev) for w in info.weights]).numpy()

    import onnxruntime as ort

    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_session_whose_measurements_all_fail_is_an_error_naming_the_cause(farm, tmp_path):
    # The old flow: candidates sent as object archives for the board to link with a g++ it does not have.
    archives = fast_local_builder(max_workers=1)
    archives.f_export = None  # MetaSchedule's default export: an object archive (tar)
    runner, callbacks = remote_measurement(f"127.0.0.1:{farm.port}", KEY, session_timeout_sec=SESSION_SEC)
    with pytest.raises(AllMeasurementsFailed, match="all 2 measurements of the first batch failed.*first failure: "):
        tune(_mlp(), TARGET, tmp_path / "db", trials=4, trials_per_iter=2, builder=archives, runner=runner,
             extra_callbacks=callbacks, progress=False, seed=0)
    assert open_database(tmp_path / "db").get_all_tuning_records() == []  # the failed batch is not recorded


def test_tuning_for_aarch64_without_a_board_says_why_nothing_was_measured(aarch64_board, tmp_path):
    # No runner given: this machine cannot load the aarch64 candidates, every measurement fails.
    with pytest.raises(AllMeasurementsFailed, match="first failure: .*"):
        tune(_mlp(), TARGET, tmp_path / "db", trials=2, trials_per_iter=2, progress=False, seed=0)


def test_tuning_a_target_without_num_cores_says_to_add_it(tmp_path):
    with pytest.raises(ValueError, match='add "num-cores": N'):
        tune(_mlp(), {k: v for k, v in TARGET.items() if k != "num-cores"}, tmp_path, trials=2, progress=False)
