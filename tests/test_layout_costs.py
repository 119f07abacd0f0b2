"""Weight layouts chosen from measured kernel costs: the database, the XGBoost predictor, the planner's choice."""

import numpy as np
import pytest
import tvm

from fluidml_tvm.analysis.packing import plan_packing
from fluidml_tvm.analysis.weight_layouts import candidates, chosen_seconds, recorded_layouts, workload
from fluidml_tvm.layout.costs import MIN_TRAINING, LayoutCostDatabase, LayoutRecord
from fluidml_tvm.pipeline import get_pipeline, stages
from fluidml_tvm.targets import describe
from fluidml_tvm.transform.pack_weights import PackWeights
from fluidml_tvm.tuning.measure_layouts import kernel_module, measure_layouts, model_layouts

from conftest import TARGET, assert_close, run_vm, tensor_constants
from test_pack_weights import matmul_module

RNG = np.random.default_rng(0)
KEY = describe(TARGET).record_key
LANES = describe(TARGET).lanes


def _packed_blocks(mod) -> list[int]:
    """Column block of every packed weight ([N/n, K, n] constant) the fused module holds."""
    return [int(c.shape[-1]) for c in tensor_constants(mod) if c.ndim == 3]


def _fused(mod, database):
    with TARGET:
        return tvm.transform.Sequential([PackWeights(TARGET, database)] + stages(TARGET)["fuse"])(mod)


def test_records_round_trip_and_go_only_to_the_own_file(tmp_path):
    shipped = tmp_path / "shipped.jsonl"
    shipped.write_text(LayoutRecord(KEY, ("matmul", 8, 16, 32, "kn"), ("packed", 8), 2e-6).to_json() + "\n")
    db = LayoutCostDatabase(tmp_path / "mine", [shipped])
    db.add(LayoutRecord(KEY, ("matmul", 8, 16, 32, "kn"), ("packed", 16), 1e-6))
    again = LayoutCostDatabase(tmp_path / "mine", [shipped])
    assert again.measured(KEY, ("matmul", 8, 16, 32, "kn"), ("packed", 16)) == 1e-6
    assert again.measured(KEY, ("matmul", 8, 16, 32, "kn"), ("packed", 8)) == 2e-6
    assert len(shipped.read_text().splitlines()) == 1  # the shipped file is never written


def test_corrupt_line_is_named_and_the_rest_kept(tmp_path):
    path = tmp_path / "layout_costs.jsonl"
    good = LayoutRecord(KEY, ("matmul", 8, 16, 32, "kn"), ("packed", 8), 2e-6).to_json()
    path.write_text(good + "\n" + good[:30] + "\n")
    with pytest.warns(UserWarning, match=f"{path}:2: not a layout cost record"):
        db = LayoutCostDatabase(path)
    assert len(db) == 1


def _synthetic(lanes=8):
    """Records where a 3-vector block is 20% faster than 2 vectors and 1 vector 40% slower, at any shape."""
    factor = {lanes: 1.4, 2 * lanes: 1.0, 3 * lanes: 0.8}
    records = []
    for m in (16, 64, 128, 256):
        for k in (96, 384, 768):
            for n in (96, 384, 1536):
                work = ("matmul", m, k, n, "kn")
                for block, f in factor.items():
                    records.append(LayoutRecord(KEY, work, ("packed", block), 2 * m * k * n / 1e11 * f))
    return records


def test_predictor_ranks_layouts_of_an_unmeasured_workload(tmp_path):
    db = LayoutCostDatabase(tmp_path)
    for record in _synthetic():
        db.add(record)
    work = ("matmul", 32, 192, 768, "kn")  # never measured
    predicted = {b: db.predicted(KEY, work, ("packed", b), 8) for b in (8, 16, 24)}
    assert predicted[24] < predicted[16] < predicted[8]
    truth = 2 * 32 * 192 * 768 / 1e11
    assert 0.5 < predicted[16] / truth < 2


def test_no_predictor_below_the_minimum_of_records(tmp_path):
    db = LayoutCostDatabase(tmp_path)
    for record in _synthetic()[: MIN_TRAINING - 1]:
        db.add(record)
    assert db.predicted(KEY, ("matmul", 32, 192, 768, "kn"), ("packed", 16), 8) is None


@pytest.mark.parametrize("transposed", [False, True])
def test_planner_follows_the_measured_costs_and_numerics_hold(tmp_path, transposed):
    m, k, n = 24, 48, 48
    w = RNG.standard_normal((n, k) if transposed else (k, n)).astype("float32")
    mod = matmul_module((m, k), w, transposed=transposed)
    (decision,) = plan_packing(mod["main"], LANES)
    layouts = candidates(decision, LANES)
    assert len(layouts) >= 3 and layouts[0] == ("packed", decision.block)
    slowest_first = sorted(layouts, key=lambda layout: layout[1] != 12)  # make the 3-vector block fastest
    db = LayoutCostDatabase(tmp_path)
    for rank, layout in enumerate(slowest_first):
        db.add(LayoutRecord(KEY, workload(decision), layout, 1e-3 * (1 + rank)))
    with TARGET:
        packed = PackWeights(TARGET, db)(mod)
    (chosen,) = recorded_layouts(packed["main"])
    assert chosen_seconds(chosen) == pytest.approx(1e-3)
    fused = _fused(mod, db)
    assert _packed_blocks(fused) == [12]
    x = RNG.standard_normal((m, k)).astype("float32")
    expected = x @ (w.T if transposed else w)
    built = tvm.compile(mod, TARGET, relax_pipeline=get_pipeline(TARGET, fast_math=False))
    assert_close(run_vm(built, [x])[0], expected)
    assert packed is not mod


def test_without_costs_the_default_block_is_kept(tmp_path):
    w = RNG.standard_normal((48, 48)).astype("float32")
    mod = matmul_module((24, 48), w)
    (decision,) = plan_packing(mod["main"], LANES)
    assert _packed_blocks(_fused(mod, LayoutCostDatabase(tmp_path))) == [decision.block]


def test_measured_records_are_real_timings_of_each_layout(tmp_path):
    work = ("matmul", 16, 32, 48, "nk")
    layouts = [("packed", 8), ("packed", 16), ("dense", 8)]
    db = LayoutCostDatabase(tmp_path)
    assert measure_layouts(db, TARGET, {work: layouts}, rounds=1) == 3
    times = [db.measured(KEY, work, layout) for layout in layouts]
    assert all(0 < t < 1e-2 for t in times)
    assert measure_layouts(LayoutCostDatabase(tmp_path), TARGET, {work: layouts}) == 0  # kept on disk
    # the timed module is the kernel a build makes: same numbers as the plain matmul
    mod = kernel_module(work, ("dense", 8))
    w = next(c for c in tensor_constants(mod))
    x = RNG.standard_normal((16, 32)).astype("float32")
    built = tvm.compile(mod, TARGET, relax_pipeline=get_pipeline(TARGET))
    assert_close(run_vm(built, [x])[0], x @ w.T)


def test_model_layouts_lists_each_workload_once():
    from fluidml_tvm.example_model import build_example_model
    from fluidml_tvm.frontend import onnx_to_relax

    mod, _ = onnx_to_relax(build_example_model())
    decisions = plan_packing(mod["main"], LANES)
    pending = model_layouts(mod, TARGET)
    assert len(decisions) > len(pending) > 0  # the encoder's layers share shapes
    assert pending == {workload(d): candidates(d, LANES) for d in decisions}


def test_a_target_that_does_not_run_here_is_refused(tmp_path):
    from fluidml_tvm.targets import resolve_target

    with pytest.raises(ValueError, match="does not run here"):
        measure_layouts(LayoutCostDatabase(tmp_path), resolve_target("aarch64"),
                        {("matmul", 16, 32, 48, "kn"): [("packed", 8)]})
    assert not (tmp_path / "layout_costs.jsonl").exists()
