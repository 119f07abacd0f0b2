"""Tuning: database round trip, resuming, interruption, corrupt databases, shipped schedules."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from fluidml_tvm.pipeline import stages
from fluidml_tvm.tuning import (ApplyTuningDatabase, CorruptDatabaseError, extract_tasks, open_database,
                                shipped_database_dir, tune)
from fluidml_tvm.schedule.database import RECORD_FILE, WORKLOAD_FILE

from conftest import tensor_constants

ROOT = Path(__file__).resolve().parents[1]
TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
M, K, N = 32, 64, 48
# Built from source, so a child process can build the same module.
MATMUL = f"""
from tvm import relax

def matmul_module():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(({M}, {K}), "float32"))
    w = relax.Var("w", relax.TensorType(({K}, {N}), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(relax.op.matmul(x, w)))
        bb.emit_func_output(y)
    return bb.get()

Matmul = matmul_module()
"""
_scope: dict = {}
exec(MATMUL, _scope)  # noqa: S102 - our own source, defined above
Matmul = _scope["Matmul"]


def small_search():
    """The XGBoost-guided evolutionary search, with a population small enough for a test."""
    return ms.search_strategy.EvolutionarySearch(population_size=32, init_min_unmeasured=16, genetic_num_iters=1)


def build(mod, database=None):
    parts = stages(TARGET)
    apply = [ApplyTuningDatabase(TARGET, database)] if database is not None else []
    with TARGET:
        final = tvm.transform.Sequential(parts["fuse"] + apply + parts["plan"] + parts["lower"]
                                         + parts["finalize"])(mod)
    return final, tvm.compile(final, TARGET, relax_pipeline=None)


def run(executable):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((M, K), "float32"), rng.standard_normal((K, N), "float32")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy(), np.maximum(x @ w, 0)


def scheduled(mod) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and f.attrs.get("tirx.is_scheduled", False)]


def record_lines(work_dir) -> list[str]:
    return (Path(work_dir) / RECORD_FILE).read_text().splitlines()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A database with one batch of 8 measured candidates for the matmul."""
    work_dir = tmp_path_factory.mktemp("tuned")
    report = tune(Matmul, TARGET, work_dir, trials=8, trials_per_iter=8, search=small_search(),
                  progress=False, seed=0)
    assert report.measured_now == 8 and report.complete
    return work_dir


@pytest.fixture
def copy(tuned, tmp_path):
    shutil.copytree(tuned, tmp_path / "db")
    return tmp_path / "db"


def test_extract_tasks_counts_calls():
    from fluidml_tvm.example_model import build_example_model

    tasks = extract_tasks(build_example_model(), TARGET)
    weights = [int(t.weight) for t in tasks]
    assert weights == sorted(weights, reverse=True)
    assert any("matmul" in t.task_name and int(t.weight) >= 2 for t in tasks)  # one per layer at least
    only = extract_tasks(build_example_model(), TARGET, op_names=["matmul"])
    assert only and all("matmul" in t.task_name for t in only)


def test_round_trip_applies_and_keeps_numerics(tuned):
    database = open_database(tuned, repair=False)
    assert len(database.get_all_tuning_records()) == 8
    untuned_mod, untuned = build(Matmul)
    tuned_mod, tuned_ex = build(Matmul, database)
    assert not scheduled(untuned_mod)
    assert scheduled(tuned_mod) == ["fused_matmul_relu"]
    (out, expected), (base, _) = run(tuned_ex), run(untuned)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out, base, rtol=1e-5, atol=1e-5)
    # A directory path works as well as a database object.
    assert scheduled(build(Matmul, str(tuned))[0]) == ["fused_matmul_relu"]


def test_rerun_with_the_same_budget_measures_nothing(copy):
    before = record_lines(copy)
    report = tune(Matmul, TARGET, copy, trials=8, trials_per_iter=8, progress=False)
    assert report.measured_before == report.measured_now == 8
    assert record_lines(copy) == before


def test_trials_per_task_skips_tasks_with_enough_records(copy):
    report = tune(Matmul, TARGET, copy, trials=100, trials_per_task=8, progress=False)
    assert report.measured_before == report.measured_now == 8 and report.complete


def test_truncated_record_is_named_dropped_and_moved_aside(copy):
    path = copy / RECORD_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write

    with pytest.raises(CorruptDatabaseError, match=rf"{RECORD_FILE}:8: not JSON"):
        open_database(copy, repair=False)
    with pytest.warns(UserWarning, match=rf"{RECORD_FILE}:8: .*kept|kept 7 record"):
        database = open_database(copy)
    assert len(database.get_all_tuning_records()) == 7
    aside = list(copy.glob(f"{RECORD_FILE}.corrupt-*"))
    assert len(aside) == 1 and len(aside[0].read_text().splitlines()) == 8
    assert record_lines(copy) == [json.dumps(json.loads(x), separators=(",", ":")) for x in lines[:7]]
    assert len(open_database(copy, repair=False).get_all_tuning_records()) == 7  # clean now


def test_garbage_lines_are_named(copy):
    path = copy / RECORD_FILE
    lines = path.read_text().splitlines()
    lines[2] = "garbage"
    lines[4] = "[7, []]"  # parses as JSON, but names no workload
    lines[5] = json.dumps([0, ["not", "a", "record"]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDatabaseError) as info:
        open_database(copy, repair=False)
    text = str(info.value)
    assert f"{path}:3: not JSON" in text
    assert f"{path}:5: workload index 7 does not name a workload" in text
    assert f"{path}:6:" in text
    with pytest.warns(UserWarning, match="dropped 3 unreadable line"):
        assert len(open_database(copy).get_all_tuning_records()) == 5


def test_corrupt_workload_drops_its_records(copy):
    path = copy / WORKLOAD_FILE
    path.write_text(path.read_text()[:100])
    with pytest.raises(CorruptDatabaseError, match=rf"{WORKLOAD_FILE}:1: not JSON"):
        open_database(copy, repair=False)
    with pytest.warns(UserWarning, match="its workload line is unreadable"):
        database = open_database(copy)
    assert len(database) == 0
    assert (copy / WORKLOAD_FILE).read_text() == "" and record_lines(copy) == []


CHILD = MATMUL + '''
import sys
from fluidml_tvm.tuning import tune
tune(Matmul, {"kind": "llvm", "num-cores": 2}, sys.argv[1], trials=64, trials_per_iter=4, search="replay-trace",
     progress=False)
'''


def test_interrupted_process_keeps_every_record_and_a_rerun_continues(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not ((tmp_path / RECORD_FILE).exists() and len(record_lines(tmp_path)) >= 4):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no records in time"
            time.sleep(0.5)
        child.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode != 0
    assert f"measured records are kept in {tmp_path}" in err.decode()
    kept = record_lines(tmp_path)
    assert len(kept) >= 4
    database = open_database(tmp_path, repair=False)
    assert all(r.run_secs is not None for r in database.get_all_tuning_records())

    # The same tuning again continues: the kept records count, new ones are appended.
    report = tune(Matmul, TARGET, tmp_path, trials=len(kept) + 4, trials_per_iter=4, search="replay-trace",
                  progress=False)
    assert report.measured_before == len(kept) and report.measured_now == len(kept) + 4
    assert record_lines(tmp_path)[: len(kept)] == kept and len(record_lines(tmp_path)) == len(kept) + 4


def test_shipped_databases_are_found_by_architecture():
    assert shipped_database_dir("llvm") is None  # generic x86-64: no AVX2 promised
    assert shipped_database_dir("c") is None
    shipped = ROOT / "schedules" / "x86-64-avx2"
    if (shipped / RECORD_FILE).exists():
        assert shipped_database_dir("x86-64") == shipped
        assert shipped_database_dir({"kind": "llvm", "mcpu": "skylake"}) == shipped
        assert open_database(shipped, repair=False).get_all_tuning_records()


def test_apply_without_a_database_for_the_target_changes_nothing():
    parts = stages(TARGET)
    with TARGET:
        fused = tvm.transform.Sequential(parts["fuse"])(Matmul)
    # the target it is given decides, with or without one in scope
    tvm.ir.assert_structural_equal(ApplyTuningDatabase(TARGET)(fused), fused)


def _cli(*argv):
    import argparse

    from fluidml_tvm.tuning.cli import add_tune_parser

    parser = argparse.ArgumentParser(prog="fluidml-tvm")
    add_tune_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def matmul_onnx(path) -> Path:
    """``Matmul`` as an ONNX file: the same fused kernel, so the ``tuned`` records apply to it."""
    import onnx

    w = np.random.default_rng(0).standard_normal((K, N)).astype("float32")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["m"]), onnx.helper.make_node("Relu", ["m"], ["y"])], "mm",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [M, K])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [M, N])],
        [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return Path(path)


TARGET_JSON = '{"kind": "llvm", "num-cores": 2}'


def test_cli_tune_with_the_budget_spent_reports_and_exits_0(copy, tmp_path, capsys):
    model = matmul_onnx(tmp_path / "mm.onnx")
    assert _cli("tune", str(model), "--trials", "8", "--db", str(copy), "--target", TARGET_JSON, "--quiet") == 0
    out = capsys.readouterr().out
    assert f"{copy}: 8 of 8 trials measured (0 in this run)" in out and "fused_matmul_relu" in out


def test_cli_tune_repairs_a_corrupt_database(copy, tmp_path, capsys):
    path = copy / RECORD_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    model = matmul_onnx(tmp_path / "mm.onnx")
    assert _cli("tune", str(model), "--trials", "7", "--db", str(copy), "--target", TARGET_JSON, "--quiet") == 0
    out, err = capsys.readouterr()
    (aside,) = copy.glob(f"{RECORD_FILE}.corrupt-*")
    assert f"fluidml-tvm: warning: corrupt tuning database in {copy}: dropped 1 unreadable line(s), kept 7" in err
    assert f"{RECORD_FILE} -> {aside.name}" in err and f"{path}:8: not JSON" in err
    assert f"{copy}: 7 of 7 trials measured (0 in this run)" in out
    assert len(open_database(copy, repair=False).get_all_tuning_records()) == 7


@pytest.mark.parametrize("flag", ["--trials", "--trials-per-task", "--trials-per-iter", "--rpc-timeout"])
@pytest.mark.parametrize("value", ["-5", "0", "ten"])
def test_cli_counts_must_be_positive(flag, value, tmp_path, capsys):
    argv = ["tune", "m.onnx", "--db", str(tmp_path / "db")] + (["--trials", "8"] if flag != "--trials" else [])
    with pytest.raises(SystemExit) as info:
        _cli(*argv, flag, value)
    assert info.value.code == 2
    assert f"argument {flag}: expected a positive integer, got" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()


def test_tuning_dependencies_are_declared():
    """tune runs MetaSchedule's popen workers and RPC: every package of those TVM extras is a dependency."""
    import importlib.metadata
    import re
    import tomllib

    def name(requirement):
        return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower()

    declared = {name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    needed = {name(r) for r in importlib.metadata.requires("apache-tvm")
              if re.search(r'extra == "(meta-schedule|popen-pool|rpc)"', r)}
    assert needed and needed <= declared, f"not declared in pyproject.toml: {sorted(needed - declared)}"


def test_cli_errors_exit_2_with_a_message(tmp_path, capsys):
    assert _cli("tune", str(tmp_path / "missing.onnx"), "--trials", "4", "--db", str(tmp_path)) == 2
    assert "no such ONNX file" in capsys.readouterr().err
    assert _cli("tune", "m.onnx", "--trials", "4", "--db", str(tmp_path), "--rpc-tracker", "nohost") == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_packed_tuning_measures_layouts_first_and_tunes_the_chosen_kernels(tmp_path):
    from fluidml_tvm.layout.costs import LayoutCostDatabase
    from fluidml_tvm.targets import describe

    w = relax.const(np.random.default_rng(0).standard_normal((K, N)).astype("float32"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((M, K), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(relax.op.matmul(x, w)))
        bb.emit_func_output(y)
    mod = bb.get()
    report = tune(mod, TARGET, tmp_path, 4, packed=True, search=small_search(), progress=False)
    records = LayoutCostDatabase(tmp_path).records(describe(TARGET).record_key)
    assert {r.workload for r in records} == {("matmul", M, K, N, "kn")}
    assert len(records) == 4  # blocks of 1, 2, 3, 4 vectors (4 lanes) that divide N=48
    fastest = min(records, key=lambda r: r.seconds).layout[1]
    (task,) = extract_tasks(mod, TARGET, packed=True, database=tmp_path)
    assert "packed_matmul" in task.task_name and report.measured_now >= 4
    final, built = build_packed(mod, tmp_path)
    shapes = [c.shape for c in tensor_constants(final)]
    assert (N // fastest, K, fastest) in shapes
    xs = np.random.default_rng(1).standard_normal((M, K)).astype("float32")
    vm = relax.VirtualMachine(built, tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(xs)).numpy(),
                               np.maximum(xs @ w.value.numpy(), 0), rtol=1e-4, atol=1e-5)


def build_packed(mod, database):
    from fluidml_tvm.pipeline import STAGES

    parts = stages(TARGET, database=database)
    with TARGET:
        final = tvm.transform.Sequential([p for name in STAGES[:-2] for p in parts[name]])(mod)
        return final, tvm.compile(mod, TARGET, relax_pipeline=tvm.transform.Sequential(
            [p for name in STAGES for p in parts[name]]))


def test_a_missing_package_is_named_not_a_resumable_stop(tmp_path):
    shadow = tmp_path / "shadow" / "cloudpickle"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'cloudpickle'\", name='cloudpickle')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow.parent), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "fluidml_tvm.cli", "tune", str(matmul_onnx(tmp_path / "mm.onnx")), "--trials", "4",
         "--trials-per-iter", "4", "--db", str(tmp_path / "db"), "--target", TARGET_JSON, "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "fluidml-tvm: error: tuning needs the Python package 'cloudpickle', which is not installed "
        "(pip install cloudpickle)")
    assert "run the same tuning again" not in proc.stderr


def test_tune_and_optimize_default_to_the_same_target():
    import argparse

    from fluidml_tvm.cli import _build_options
    from fluidml_tvm.tuning.cli import add_tune_parser

    tune_parser = add_tune_parser(argparse.ArgumentParser().add_subparsers())
    optimize_parser = argparse.ArgumentParser()
    _build_options(optimize_parser)
    assert tune_parser.get_default("target") == optimize_parser.get_default("target") == "host"


def test_a_target_without_a_core_count_is_named(tmp_path, capsys):
    model = matmul_onnx(tmp_path / "mm.onnx")
    assert _cli("tune", str(model), "--trials", "4", "--db", str(tmp_path / "db"), "--target", "llvm") == 2
    assert 'error: --target llvm: tuning needs the device\'s core count: add "num-cores"' in capsys.readouterr().err


def test_metaschedule_writes_its_log_to_files_and_only_warnings_to_the_console(tmp_path):
    """Was: with a progress bar the console got warnings only, and with ``--quiet`` every INFO line."""
    import logging

    from fluidml_tvm.tuning.tasks import extract_tasks
    from fluidml_tvm.tuning.tune import _console_handlers, _contexts

    tasks = extract_tasks(str(matmul_onnx(tmp_path / "mm.onnx")), TARGET_JSON)
    _contexts(tasks, tmp_path / "work", "evolutionary", 0)
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    console = _console_handlers(ms_logger)
    assert console and all(h.level >= logging.WARNING for h in console)
    assert ms_logger.getEffectiveLevel() <= logging.INFO  # the log files still get everything
