"""The fluidml-tvm command line."""

import json
import subprocess
import sys

import onnx

from fluidml_tvm.cli import main
from fluidml_tvm.example_model import build_example_model


def test_optimize_writes_library_report_and_plot(tmp_path, capsys):
    model = tmp_path / "encoder.onnx"
    onnx.save(build_example_model(), str(model))
    lib, report, plot = tmp_path / "encoder.so", tmp_path / "plan.json", tmp_path / "timeline.png"
    code = main(["optimize", str(model), "-o", str(lib), "--report", str(report), "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    assert "arena" in out and "TVM" in out and "every plan validated" in out
    assert lib.stat().st_size > 0 and plot.stat().st_size > 0
    plan = json.loads(report.read_text())["functions"]["main"]
    assert plan["arena_bytes"] > 0 and plan["tensors"]


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.so")]) == 2
    assert "no such ONNX file" in capsys.readouterr().err
    model = tmp_path / "encoder.onnx"
    onnx.save(build_example_model(), str(model))
    assert main(["optimize", str(model), "-o", str(tmp_path / "x.so"), "--target", "toaster"]) == 2
    assert "unknown target 'toaster'" in capsys.readouterr().err


def test_demo_runs_as_a_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fluidml_tvm.cli", "demo"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "relative error vs ONNX Runtime" in proc.stdout
