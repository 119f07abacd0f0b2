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


def test_outputs_that_cannot_be_written_fail_before_the_build(tmp_path, capsys):
    model = tmp_path / "encoder.onnx"
    onnx.save(build_example_model(), str(model))
    a_file, a_dir = tmp_path / "a_file", tmp_path / "a_dir.so"
    a_file.write_text("not an artifact")
    a_dir.mkdir()
    cases = [
        (["-o", str(a_file)], f"-o {a_file}: a file is in the way; -o writes an artifact directory"),
        (["-o", str(a_file / "out")], f"-o {a_file / 'out'}: cannot write there"),
        (["-o", str(a_dir)], f"-o {a_dir}: a directory is in the way; -o writes a file there"),
        (["-o", "/proc/fluidml-tvm/model"], "-o /proc/fluidml-tvm/model: cannot write there"),
        (["-o", str(tmp_path / "art"), "--report", str(a_dir)], f"--report {a_dir}: a directory is in the way"),
        (["-o", str(tmp_path / "art"), "--plot", str(a_file / "t.png")], f"--plot {a_file / 't.png'}: cannot write"),
        (["-o", str(tmp_path / "m.so"), "--profile", str(tmp_path / "k.png")], "--profile runs an artifact directory"),
    ]
    for extra, message in cases:
        assert main(["optimize", str(model), *extra]) == 2, extra
        out, err = capsys.readouterr()
        assert err.strip().splitlines() == [f"fluidml-tvm: error: {err.strip().split('error: ', 1)[1]}"]
        assert message in err, (extra, err)
        assert "building" not in out  # failed before the build started
    assert a_file.read_text() == "not an artifact" and not any(a_dir.iterdir())


def test_bad_input_shapes_fail_with_the_flag_named(tmp_path, capsys):
    model = tmp_path / "encoder.onnx"
    onnx.save(build_example_model(), str(model))
    cases = [
        ("input_ids=1x64", "--input-shape 'input_ids=1x64': expected NAME=D0,D1,... with positive integer dimensions"),
        ("input_ids=1,-1", "--input-shape 'input_ids=1,-1': expected NAME=D0,D1,..."),
        ("ids=1,64", "--input-shape ids=...: the model has no input 'ids' (its inputs: input_ids)"),
        ("input_ids=1,32", "--input-shape input_ids=1,32: dimension 1 of input 'input_ids' is static, 64"),
        ("input_ids=1,64,1", "--input-shape input_ids=1,64,1: input 'input_ids' has rank 2"),
    ]
    for shape, message in cases:
        assert main(["optimize", str(model), "-o", str(tmp_path / "out"), "--input-shape", shape]) == 2, shape
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_model_without_weights_exports_and_a_second_export_replaces_it(tmp_path, capsys):
    import numpy as np

    from fluidml_tvm import runtime

    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    x_info, y_info = (onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 4]) for n in "xy")
    graph = onnx.helper.make_graph([node], "g", [x_info], [y_info])
    model = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(model))
    x = np.random.default_rng(0).standard_normal((2, 4)).astype("float32")
    for _ in range(2):  # the second export goes onto the existing artifact directory
        assert main(["optimize", str(model), "-o", str(tmp_path / "relu")]) == 0, capsys.readouterr().err
        with runtime.load(tmp_path / "relu") as lean:
            np.testing.assert_array_equal(lean(x), np.maximum(x, 0))
