"""A device farm on loopback: a TVM RPC tracker and two emulated aarch64 boards (QEMU) under one key.

Tuning for aarch64 measures on both boards, survives one being killed, keeps
only valid measurements, and the tuned build runs on a board like ONNX Runtime
on the host. Timings under QEMU say nothing about a real board: only the flow,
the binaries and the numerics are checked.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from fluidml_tvm import export
from fluidml_tvm.layout.costs import LayoutCostDatabase
from fluidml_tvm.targets import cross_compiler, describe
from fluidml_tvm.tuning import fast_local_builder, open_database, tune
from fluidml_tvm.tuning.failures import FAILED_RUN_SECS, AllMeasurementsFailed
from fluidml_tvm.tuning.rpc import remote_measurement

from farm import KEY, SESSION_SEC, Farm

TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
EM_AARCH64 = 183  # ELF e_machine of aarch64


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


def test_tuning_across_two_boards_survives_one_killed_and_the_build_runs_on_the_board(farm, tmp_path):
    model = _mlp()
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
    # --packed timed the layout candidates on a board first: its records are under the aarch64 key
    layouts = LayoutCostDatabase(tmp_path / "db").records(describe(TARGET).record_key)
    assert {r.workload[0] for r in layouts} >= {"matmul"} and all(math.isfinite(r.seconds) for r in layouts)

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
