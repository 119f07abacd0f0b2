"""The fluidml-tvm command line."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from fluidml_tvm.cli import DEMO_DIR, build_parser, main
from fluidml_tvm.compiler import BUILD_STAGES
from fluidml_tvm.example_model import build_example_model
from fluidml_tvm.memory.planners import PLANNERS
from fluidml_tvm.options import BuildOptions

ROOT = Path(__file__).resolve().parents[1]


def test_optimize_writes_library_report_and_plot(tmp_path, capsys):
    model = tmp_path / "encoder.onnx"
    onnx.save(build_example_model(), str(model))
    lib, report, plot = tmp_path / "encoder.so", tmp_path / "report", tmp_path / "timeline.png"
    code = main(["optimize", str(model), "-o", str(lib), "--report", str(report), "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    assert "arena" in out and "TVM" in out and "every plan validated" in out
    assert f"wrote {report / 'index.html'}" in out
    assert "weights.bin" not in {p.name for p in tmp_path.iterdir()}  # one file, weights inside
    assert lib.stat().st_size > 0 and plot.stat().st_size > 0
    plan = json.loads((report / "report.json").read_text())["fluidml"]
    assert plan["arena_bytes"] > 0 and plan["tensors"]


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.so")]) == 2
    assert "no such ONNX file" in capsys.readouterr().err
    model = tmp_path / "encoder.onnx"
    onnx.save(build_example_model(), str(model))
    assert main(["optimize", str(model), "-o", str(tmp_path / "x.so"), "--target", "toaster"]) == 2
    assert "unknown target 'toaster'" in capsys.readouterr().err


def test_demo_runs_as_a_command_and_keeps_what_it_prints_in_its_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fluidml_tvm.cli", "demo"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "relative error vs ONNX Runtime" in proc.stdout
    written = [line.split("wrote ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("wrote ")]
    assert {Path(w).name for w in written} == {"example_encoder", "memory_timeline.png", "index.html"}
    for path in written:  # was: the artifact's path, printed and then deleted with a temporary directory
        assert (tmp_path / path).exists() and tmp_path / DEMO_DIR in (tmp_path / path).parents, path
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEMO_DIR]  # nothing else in the working directory


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
    assert "kernels timed alone" in capsys.readouterr().out and png.stat().st_size > 0
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
        (["-o", str(tmp_path / "art"), "--report", str(a_file)],
         f"--report {a_file}: a file is in the way; --report writes the report's directory there"),
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


def test_json_prints_one_object_on_stdout_and_each_stage_on_stderr(tmp_path, capsys):
    model = tmp_path / "encoder.onnx"
    onnx.save(build_example_model(), str(model))
    lib = tmp_path / "encoder.so"
    assert main(["optimize", str(model), "-o", str(lib), "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)  # the whole of stdout is one JSON object
    assert list(summary["stage_seconds"]) == list(BUILD_STAGES)
    assert all(seconds >= 0 for seconds in summary["stage_seconds"].values())
    main_plan = summary["functions"]["main"]
    assert 0 < main_plan["arena_bytes"] <= main_plan["no_reuse_bytes"] and main_plan["tensors"] > 0
    assert summary["target"] == "host" and summary["files"]["output"] == str(lib.resolve())
    stage_lines = [line.split()[0] for line in err.splitlines() if line.startswith("  ")]
    assert stage_lines == list(BUILD_STAGES)  # progress, in order, on stderr
    assert "arena" in err and "wrote" in err  # the human summary went to stderr


def test_planner_choices_are_checked_by_the_command_line_and_listed_in_its_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["optimize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.so"), "--planner", "fastest"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fastest'" in err and all(name in err for name in PLANNERS)
    help_text = build_parser()._subparsers._group_actions[0].choices["optimize"].format_help()
    assert all(name in help_text for name in PLANNERS)


def test_build_options_are_checked_once_in_the_api():
    from fluidml_tvm.pipeline import get_pipeline

    with pytest.raises(ValueError, match="unknown memory planner 'fastest'; choose one of: best, "):
        get_pipeline("llvm", planner="fastest")
    with pytest.raises(TypeError, match="unknown build option 'plannr'"):
        get_pipeline("llvm", plannr="best")
    with pytest.raises(ValueError, match="build option kernels='no'"):
        BuildOptions(kernels="no")
    options = BuildOptions.of(planner="linear", database="/tmp/db")  # one `tune` directory: both records
    assert options.tuning_database == options.layout_records == "/tmp/db" and options.planner == "linear"
    assert BuildOptions.of(options, inplace=False) == BuildOptions(
        planner="linear", inplace=False, tuning_database="/tmp/db", layout_records="/tmp/db")


def test_every_subcommand_defaults_to_the_host_target_and_tuning_can_use_it():
    from fluidml_tvm.targets import describe

    parser = build_parser()
    defaults = {
        parser.parse_args(["optimize", "m.onnx", "-o", "x"]).target,
        parser.parse_args(["demo"]).target,
        parser.parse_args(["tune", "m.onnx", "--db", "d", "--trials", "1"]).target,
        parser.parse_args(["bench", "m.onnx"]).target,
    }
    assert defaults == {"host"}  # tune's was x86-64
    assert int(describe("host").target.attrs["num-cores"]) >= 1  # what tuning asks of its target


def test_make_demo_writes_nothing_into_the_repository_and_its_files_are_ignored():
    recipe = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    demo_line = next(line for line in recipe.splitlines() if "fluidml-tvm demo" in line)
    assert ".png" not in demo_line.split("#")[0]  # was: --plot memory_timeline.png into the repo root
    ignored = subprocess.run(["git", "check-ignore", f"{DEMO_DIR}/example_encoder/model.so", "memory_timeline.png"],
                             cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    assert ignored == [f"{DEMO_DIR}/example_encoder/model.so", "memory_timeline.png"]


def test_package_metadata_builds_without_deprecation_warnings(tmp_path):
    code = ("import sys, warnings; warnings.simplefilter('always'); from setuptools import build_meta; "
            "build_meta.prepare_metadata_for_build_editable(sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Deprecat" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


def test_the_tuning_bar_is_drawn_full_once():
    import io

    from tqdm import tqdm

    from fluidml_tvm.tuning.tune import _Progress

    log = io.StringIO()  # a CI log: every redraw of the bar stays visible
    bar = tqdm(total=4, unit="trial", desc="tuning", file=log, mininterval=0, miniters=1)
    progress = _Progress(bar, [type("Task", (), {"task_name": "layer_norm"})()])
    for _ in range(2):
        progress._inst.apply(None, 0, [None, None], [], [])  # the Python method, without the FFI's type checks
    bar.close()
    assert log.getvalue().count("4/4") == 1 and "2/4" in log.getvalue()
