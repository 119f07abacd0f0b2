"""Records keyed by CPU class: an unseen CPU uses the records of its ISA class, on any core count."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import fluidml_tvm
from fluidml_tvm.example_model import build_example_model
from fluidml_tvm.layout.costs import RECORD_FILE, LayoutCostDatabase, LayoutRecord, MeasuredLayoutCosts
from fluidml_tvm.targets import SCHEDULES_DIR, describe

ROOT = Path(__file__).resolve().parents[1]
AVX512 = "llvm -arch=x86_64 -isa=avx512"
AVX2 = "llvm -arch=x86_64 -isa=avx2"
SHIPPED = SCHEDULES_DIR / "x86-64-avx2" / RECORD_FILE


def _cpu(mcpu, cores=2):
    return describe({"kind": "llvm", "mcpu": mcpu, "num-cores": cores})


@pytest.mark.parametrize("mcpu, key", [
    ("znver4", AVX512), ("sapphirerapids", AVX512), ("icelake-server", AVX512), ("skylake-avx512", AVX512),
    ("cascadelake", AVX512), ("rocketlake", AVX512), ("x86-64-v4", AVX512),
    ("znver3", AVX2), ("alderlake", AVX2), ("haswell", AVX2), ("x86-64-v3", AVX2),
])
def test_an_unseen_x86_cpu_gets_its_class_and_the_shipped_schedules(mcpu, key):
    for cores in (1, 2, 16):  # the core count is not part of the class
        target = _cpu(mcpu, cores)
        assert target.record_key == key
        assert target.schedules_dir == SCHEDULES_DIR / "x86-64-avx2" and target.schedules_dir.is_dir()
    assert [c for c, _ in _cpu(mcpu).record_classes] == ([AVX512, AVX2] if key == AVX512 else [AVX2])


def test_targets_without_a_vector_class_say_so():
    plain = describe({"kind": "llvm"})  # LLVM's generic x86-64: SSE code, no shipped schedules fit it
    assert plain.record_key == "llvm -arch=x86_64 -isa=sse" and plain.schedules_dir is None
    assert describe({"kind": "llvm", "mattr": ["+avx2", "+fma"]}).record_key == AVX2
    assert describe("rpi4").record_key == describe("aarch64").record_key == "llvm -arch=aarch64 -isa=neon"


WORK = ("matmul", 128, 384, 384, "kn")


def _db(tmp_path, records) -> LayoutCostDatabase:
    path = tmp_path / RECORD_FILE
    path.write_text("".join(r.to_json() + "\n" for r in records))
    return LayoutCostDatabase(path)


def test_avx512_falls_back_to_the_avx2_records_when_its_class_has_none(tmp_path):
    db = _db(tmp_path, [LayoutRecord(AVX2, WORK, ("packed", 16), 3e-4, 2), LayoutRecord(AVX2, WORK, ("packed", 32), 2e-4, 2)])
    target = _cpu("znver4")
    assert db.record_class(target) == (AVX2, 8)
    costs = MeasuredLayoutCosts(db, target, {"0": WORK}, {"0": [("packed", 16), ("packed", 32)]})
    assert costs.costs["0"] == {("packed", 16): 3e-4, ("packed", 32): 2e-4}
    # with records of its own class, those are used
    db.add(LayoutRecord(AVX512, WORK, ("packed", 16), 1e-4, 2))
    db.add(LayoutRecord(AVX512, WORK, ("packed", 32), 5e-4, 2))
    assert db.record_class(target) == (AVX512, 16)
    costs = MeasuredLayoutCosts(db, target, {"0": WORK}, {"0": [("packed", 16), ("packed", 32)]})
    assert costs.costs["0"] == {("packed", 16): 1e-4, ("packed", 32): 5e-4}


def test_the_nearest_core_count_measured_answers(tmp_path):
    db = _db(tmp_path, [LayoutRecord(AVX2, WORK, ("packed", 16), 4e-4, 2), LayoutRecord(AVX2, WORK, ("packed", 16), 1e-4, 8)])
    assert db.measured(AVX2, WORK, ("packed", 16), 2) == 4e-4
    assert db.measured(AVX2, WORK, ("packed", 16), 3) == 4e-4
    assert db.measured(AVX2, WORK, ("packed", 16), 6) == 1e-4
    assert db.measured(AVX2, WORK, ("packed", 16), 64) == 1e-4
    assert db.measured(AVX2, WORK, ("packed", 16), 6, nearest=False) is None
    assert db.measured(AVX512, WORK, ("packed", 16), 2) is None


def test_a_record_keyed_by_cpu_name_is_read_in_its_class(tmp_path):
    old = {"target": "llvm -mtriple= -mcpu=emeraldrapids -mattr= -num-cores=2", "workload": list(WORK),
           "layout": ["packed", 16], "seconds": 1e-4}
    record = LayoutRecord.from_json(json.dumps(old))
    assert (record.target, record.cores) == (AVX512, 2)
    (tmp_path / RECORD_FILE).write_text(json.dumps(old) + "\n")
    assert LayoutCostDatabase(tmp_path).measured(AVX512, WORK, ("packed", 16), 2) == 1e-4
    # the migration script writes the class form, and a second run changes nothing
    script = [sys.executable, str(ROOT / "scripts" / "migrate_layout_records.py"), str(tmp_path)]
    env = {"PYTHONPATH": str(ROOT)}
    assert "1 record(s) rekeyed" in subprocess.run(script, capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads((tmp_path / RECORD_FILE).read_text())["target"] == AVX512
    assert "0 record(s) rekeyed" in subprocess.run(script, capture_output=True, text=True, env=env, check=True).stdout


def test_shipped_records_are_in_class_form():
    keys = {(r["target"], r["cores"]) for r in map(json.loads, SHIPPED.read_text().splitlines())}
    assert {k for k, _ in keys} == {AVX2, AVX512}


def test_an_unseen_cpu_builds_with_the_shipped_layout_costs():
    """znver4 (AVX-512, never measured by name): each weight's layout is chosen from its class's times."""
    result = fluidml_tvm.compile(build_example_model(), {"kind": "llvm", "mcpu": "znver4", "num-cores": 2},
                                 report=False)
    layouts = json.loads(str(result.module["main"].attrs["fluidml_tvm.weight_layouts"]))
    assert layouts and all(d["seconds"] for d in layouts)  # None: no record, the default block kept
