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
    assert "weights.bin" not in {p.name for p in tmp_path.iterdir()}  # one file, weights inside
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


def test_optimize_to_a_directory_writes_an_artifact_the_lean_runtime_runs(tmp_path, capsys):
    import numpy as np
    import onnxruntime as ort

    from fluidml_tvm import runtime
    from fluidml_tvm.example_model import example_inputs

    proto = build_example_model()
    model = tmp_path / "encoder.onnx"
    onnx.save(proto, str(model))
    png = tmp_path / "kernels.png"
    assert main(["optimize", str(model), "-o", str(tmp_path / "artifact"), "--profile", str(png)]) == 0
    assert "per-kernel time" in capsys.readouterr().out and png.stat().st_size > 0
    assert {p.name for p in (tmp_path / "artifact").iterdir()} >= {"model.so", "weights.bin", "manifest.json"}
    feeds = example_inputs(proto)
    with runtime.load(tmp_path / "artifact") as lean:
        out = lean(*feeds.values())
    ref = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)[0]
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
