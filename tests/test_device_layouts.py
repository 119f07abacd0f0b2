"""Layout costs measured on an emulated aarch64 board through the RPC tracker, then used by a build for it.

Each candidate kernel is linked on the host with the aarch64 cross compiler,
uploaded to the board's server and timed there. Timings under QEMU say
nothing about a real board: only the flow (records under the board's key,
finite times, a build choosing from them, a frozen board stopping cleanly)
is checked.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal

import numpy as np
import onnx
import pytest
from farm import KEY, Farm
from onnx import TensorProto, helper, numpy_helper

from fluidml_tvm import export
from fluidml_tvm.frontend import onnx_to_relax
from fluidml_tvm.analysis.weight_layouts import chosen_seconds, recorded_layouts
from fluidml_tvm.layout.costs import LayoutCostDatabase
from fluidml_tvm.pipeline import stages
from fluidml_tvm.targets import cross_compiler, describe
from fluidml_tvm.transform import PackWeights
from fluidml_tvm.tuning.measure_layouts import measure_layouts, model_layouts
from fluidml_tvm.tuning import tune
from fluidml_tvm.tuning.rpc import RemoteDeviceLost, remote_measurement
from fluidml_tvm.tuning.timers import RemoteTimer

TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}


def _matmuls() -> onnx.ModelProto:
    """Two MatMuls with 8 output columns each: two candidate blocks (one and two NEON vectors) per weight."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])],
        "matmuls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [numpy_helper.from_array(rng.standard_normal((32, 8), "float32"), "w1"),
         numpy_helper.from_array(rng.standard_normal((8, 8), "float32"), "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def board(aarch64_board, tmp_path):
    farm = Farm(aarch64_board, tmp_path, session_timeout_sec=120)
    try:
        farm.start_all(servers=1)
        yield farm
    finally:
        farm.stop()


def _chosen_seconds(mod, database) -> list:
    """The time of each weight layout PackWeights chose for ``main`` in a build for TARGET with
    ``database``'s records (None: no record, the default block)."""
    (pack,) = [p for p in stages(TARGET, database=database)["pack"] if isinstance(p, PackWeights)]
    with describe(TARGET).target:
        packed = pack(mod)
    return [chosen_seconds(d) for d in recorded_layouts(packed["main"])]


def test_layout_costs_measured_on_the_board_choose_the_layouts_of_a_build_for_it(board, tmp_path):
    model = _matmuls()
    mod, _ = onnx_to_relax(model)
    pending = model_layouts(mod, TARGET)
    assert sorted(len(ls) for ls in pending.values()) == [2, 2]
    db = tmp_path / "db"
    assert _chosen_seconds(mod, db) == [None, None]  # no records for the board yet: the NEON defaults

    timer = RemoteTimer(TARGET, board.device, number=1, repeat=2)
    try:
        added = measure_layouts(LayoutCostDatabase(db), TARGET, pending, rounds=2, timer=timer)
    finally:
        timer.close()

    assert added == 4 and board.served("board0") == 4  # every candidate ran on the board
    records = LayoutCostDatabase(db).records(describe(TARGET).record_key)
    assert sorted((r.workload, r.layout) for r in records) == sorted((w, l) for w, ls in pending.items() for l in ls)
    assert all(math.isfinite(r.seconds) and r.seconds > 0 for r in records)

    # The build's planner reads them: each weight gets its fastest measured layout, at the measured cost.
    fastest = {}
    for r in records:
        if r.workload not in fastest or r.seconds < fastest[r.workload].seconds:
            fastest[r.workload] = r
    assert sum(_chosen_seconds(mod, db)) == pytest.approx(sum(r.seconds for r in fastest.values()), rel=1e-9)
    info, _ = export(model, tmp_path / "artifact", TARGET, database=db, fcompile=cross_compiler(TARGET))
    blocks = sorted(int(w.shape[-1]) for w in info.weights if w.ndim == 3)  # packed [N/n, K, n]
    assert blocks == sorted(int(r.layout[1]) for r in fastest.values())


def test_a_board_frozen_during_layout_measurement_is_an_error_and_the_records_so_far_are_kept(board, tmp_path):
    """Directly and through ``tune --packed``: no hang, a clear error, every finished record kept."""
    mod, _ = onnx_to_relax(_matmuls())
    pending = model_layouts(mod, TARGET)
    db = tmp_path / "db"

    def freeze(done, _total, _work):
        if done == 1:
            os.killpg(board.procs["board0"].pid, signal.SIGSTOP)  # the server and its session process

    timer = RemoteTimer(TARGET, dataclasses.replace(board.device, session_timeout_sec=30), number=1, repeat=1)
    with pytest.raises(RemoteDeviceLost, match="did not answer within 30 s while"):
        measure_layouts(LayoutCostDatabase(db), TARGET, pending, rounds=1, timer=timer, progress=freeze)
    first = next(iter(pending))
    kept = LayoutCostDatabase(db).records(describe(TARGET).record_key)
    assert sorted(r.layout for r in kept) == sorted(pending[first]) and {r.workload for r in kept} == {first}

    # `tune --packed` on the frozen board resumes after the kept records and stops with them named
    runner, callbacks = remote_measurement(board.tracker, KEY, session_timeout_sec=30)
    with pytest.raises(RemoteDeviceLost, match=f"during layout measurement; 2 layout cost records for this "
                                               f"target are kept in {db}"):
        tune(_matmuls(), TARGET, db, trials=2, packed=True, runner=runner, extra_callbacks=callbacks, progress=False)
    assert len(LayoutCostDatabase(db).records(describe(TARGET).record_key)) == 2
