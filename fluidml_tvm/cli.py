"""The ``fluidml-tvm`` command: build an ONNX model with FluidML planning."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .options import PLANNER_CHOICES
from .runtime.threads import use_all_cores

# The target of every subcommand that builds or tunes when none is given: this machine's CPU
# (with its core count, which tuning needs), the only target whose result runs where it is made.
DEFAULT_TARGET = "host"

# Where `fluidml-tvm demo` keeps the example model, its artifact and its plot (in the current directory).
DEMO_DIR = "fluidml-demo"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "targets":
        from .targets import preset_meanings

        for name, meaning in preset_meanings().items():
            print(f"{name:15} {meaning}")
        return 0
    use_all_cores()
    if args.command in ("tune", "rpc", "bench"):
        return args.func(args)

    from .frontend import ModelImportError
    from .targets import UnknownTargetError

    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "report":
            return _report(args)
        return _optimize(args.model, args)
    except (ModelImportError, UnknownTargetError, ValueError) as err:
        print(f"fluidml-tvm: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The ``fluidml-tvm`` argument parser, every subcommand in it."""
    parser = argparse.ArgumentParser(prog="fluidml-tvm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    opt = sub.add_parser(
        "optimize", help="build MODEL.onnx and print the memory plan",
        description="Build MODEL.onnx. -o DIR writes an artifact for fluidml_tvm.runtime.load: the library, "
                    "its weights (final layouts, memory-mapped at load) and a manifest. -o FILE.so writes one "
                    "library with the weights bound as constants (loading it costs about 2-4x the weights).")
    opt.add_argument("model", help="path of an ONNX model with static input shapes")
    _build_options(opt)
    demo = sub.add_parser(
        "demo", help=f"optimize the built-in example model (a small BERT-style encoder) into ./{DEMO_DIR}/",
        description=f"Build the example model into ./{DEMO_DIR}/ (its ONNX file, the artifact and the memory "
                    "timeline), run it with the lean runtime and compare it with ONNX Runtime.")
    _build_options(demo, output_required=False)
    rep = sub.add_parser(
        "report", help="build MODEL.onnx with TVM's default pipeline and with fluidml-tvm; write a page comparing them",
        description="Build MODEL.onnx twice, with TVM's default pipeline and with fluidml-tvm, run both on random "
                    "inputs and write DIR/index.html: both memory plans on one scale, live bytes over time, "
                    "per-kernel time, the weight layouts and layout folds chosen and why, and the figures "
                    "(DIR/report.json has the numbers).")
    rep.add_argument("model", help="path of an ONNX model with static input shapes")
    rep.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the page")
    _plan_options(rep)
    rep.add_argument("--runs", type=int, default=10, help="inferences per measurement of the profiles (default 10)")
    from .tuning.cli import add_tune_parser
    from .tuning.farm import add_rpc_parser
    from .bench import add_bench_parser

    add_tune_parser(sub)
    sub.add_parser("targets", help="list the target presets (--target NAME) and what each means")
    add_rpc_parser(sub)
    add_bench_parser(sub)
    return parser


def _build_options(p, output_required=True):
    p.add_argument("-o", "--output", required=output_required,
                   help="artifact directory, or FILE.so for one library with the weights inside"
                        + ("" if output_required else f" (default: {DEMO_DIR}/example_encoder)"))
    _plan_options(p)
    p.add_argument("--report", metavar="DIR",
                   help="also build with TVM's default pipeline and write a page comparing the two builds here "
                        "(`fluidml-tvm report`)" + ("" if output_required else f" (default: {DEMO_DIR}/report)"))
    p.add_argument("--plot", help="write the memory timeline as a PNG here (needs matplotlib)"
                   + ("" if output_required else f" (default: {DEMO_DIR}/memory_timeline.png)"))
    p.add_argument("--profile", metavar="PNG", help="run the artifact on random inputs and plot the time of each "
                                                    "kernel here (needs -o DIR and matplotlib)")


def _plan_options(p):
    p.add_argument("--target", default=DEFAULT_TARGET,
                   help="TVM target: a kind ('llvm'), JSON, or a preset (host = this CPU; "
                        "`fluidml-tvm targets` lists the others)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="static shape for an input with symbolic dimensions (repeatable)")
    p.add_argument("--planner", default="best", choices=PLANNER_CHOICES,
                   help="memory planner: %(choices)s (default: best, the smallest plan of the arena heuristics)")
    p.add_argument("--solve-seconds", type=float, default=2.0, metavar="S",
                   help="when the heuristics miss the live-set bound, search up to S seconds per arena "
                        "for a smaller plan and prove it optimal (default 2; 0: off)")
    p.add_argument("--no-reorder", action="store_true", help="keep TVM's execution order")
    p.add_argument("--no-inplace", action="store_true", help="never write a kernel's output over its input")
    p.add_argument("--db", metavar="DIR", help="a directory `fluidml-tvm tune` wrote: its MetaSchedule database and "
                                               "layout cost records are applied (default: the shipped ones, if any)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (figures, stage times, paths); everything else to stderr")


def _optimize(model, args) -> int:
    import fluidml_tvm

    from .frontend import parse_input_shapes
    from .targets import cross_compiler, resolve_target

    # Everything that can be checked without the build fails first: a build takes minutes.
    directory = not args.output.endswith(".so")
    _check_output("-o", args.output, directory=directory)
    for flag, path in (("--plot", args.plot), ("--profile", args.profile)):
        if path:
            _check_output(flag, path, directory=False)
    if args.report:
        _check_output("--report", args.report, directory=True, wanted="the report's directory")
    if args.profile and not directory:
        raise ValueError("--profile runs an artifact directory: give -o DIR")
    input_shapes = parse_input_shapes(args.input_shape)
    out = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON object only
    options = _options(args)
    print(f"building {model} for {args.target} ...", file=out, flush=True)
    target = resolve_target(args.target)
    times: dict = {}
    progress = _progress(times)

    fcompile = cross_compiler(target)
    if not directory:
        result = fluidml_tvm.compile(model, target, options, input_shapes=input_shapes, progress=progress)
        start = time.perf_counter()
        result.export_library(args.output, **({"fcompile": fcompile} if fcompile else {}))
        progress("export", time.perf_counter() - start)
        report = result.report
    else:
        info, report = fluidml_tvm.export(model, args.output, target, options, input_shapes=input_shapes,
                                          fcompile=fcompile, progress=progress)
    print(report.summary(), file=out)
    print(f"planning took {report.plan_seconds:.2f} s; every plan validated", file=out)
    print(f"wrote {args.output}", file=out)
    files = {"output": args.output}
    if args.report:
        from .explain import compare_builds

        built = (args.output, info, report) if directory else None
        comparison = compare_builds(model, target, options, input_shapes=input_shapes, progress=progress,
                                    built=built)
        files["report"] = _write_report(comparison, args.report, out)
    if args.plot:
        from .plot import plot_memory_timeline

        plot_memory_timeline(report["main"], args.plot)
        files["plot"] = args.plot
        print(f"wrote {args.plot}", file=out)
    profile = None
    if args.profile:
        profile = _profile(args.output, args.profile, out)
        files["profile"] = args.profile
    if args.json:
        print(json.dumps(_json_summary(model, args.target, target, report, times, files, profile)))
    return 0


def _options(args):
    from .options import BuildOptions

    return BuildOptions(planner=args.planner, reorder=not args.no_reorder, inplace=not args.no_inplace,
                        validate=True, tuning_database=args.db, layout_records=args.db,
                        solve_seconds=args.solve_seconds)


def _progress(times: dict):
    def progress(stage: str, seconds: float) -> None:
        times[stage] = round(seconds, 3)
        print(f"  {stage:10} {seconds:7.2f} s", file=sys.stderr, flush=True)

    return progress


def _report(args) -> int:
    """``fluidml-tvm report``: both builds of MODEL, compared on one page."""
    from .explain import compare_builds
    from .frontend import parse_input_shapes

    _check_output("-o", args.output, directory=True, wanted="the report's directory")
    if args.runs < 1:
        raise ValueError(f"--runs {args.runs}: give a positive count")
    out = sys.stderr if args.json else sys.stdout
    print(f"building {args.model} for {args.target} twice (TVM's default pipeline, fluidml-tvm) ...", file=out, flush=True)
    times: dict = {}
    comparison = compare_builds(args.model, args.target, _options(args), input_shapes=parse_input_shapes(args.input_shape),
                                runs=args.runs, progress=_progress(times))
    page = _write_report(comparison, args.output, out)
    if args.json:
        from .report_page import _numbers

        print(json.dumps({"model": args.model, "target": args.target, "stage_seconds": times, "page": page,
                          "numbers": _numbers(comparison)}))
    return 0


def _write_report(comparison, directory, out) -> str:
    from .report_page import write_report

    written = write_report(comparison, directory)
    f, t = comparison.fluidml, comparison.tvm
    ours, theirs = f.total_bytes, t.planner_bytes + t.kernel_scratch_bytes
    print(f"activation memory (plan + kernel scratch): TVM's default build {theirs / 2**20:.2f} MiB, fluidml-tvm "
          f"{ours / 2**20:.2f} MiB (x{ours / max(theirs, 1):.2f})", file=out)
    if comparison.fluidml_profile is not None:
        a, b = comparison.tvm_profile.latency, comparison.fluidml_profile.latency
        print(f"latency: TVM's default build {a * 1e3:.3f} ms, fluidml-tvm {b * 1e3:.3f} ms (x{b / a:.2f})", file=out)
    print(f"wrote {written['html']}", file=out)
    return written["html"]


def _json_summary(model, target_name, target, report, times: dict, files: dict, profile) -> dict:
    """What ``--json`` prints: the figures of each function in bytes, the stage times in seconds, the paths."""
    functions = {}
    for name, f in report.functions.items():
        functions[name] = {
            "arena_bytes": f.arena_bytes, "strategy": f.strategy, "status": f.status,
            "live_set_lower_bound": f.live_set_lower_bound, "tvm_order_lower_bound": f.tvm_order_lower_bound,
            "tvm_planner_bytes": f.tvm_planner_bytes, "no_reuse_bytes": f.no_reuse_bytes,
            "kernel_scratch_left_bytes": f.kernel_scratch_left_bytes,
            "tvm_kernel_scratch_bytes": f.tvm_kernel_scratch_bytes,
            "total_bytes": f.total_bytes, "tvm_total_bytes": f.tvm_total_bytes,
            "tensors": len(f.tensors), "inplace": len(f.inplace), "left_to_tvm": len(f.unplanned),
        }
    summary = {"model": str(model), "target": target_name, "tvm_target": str(target), "stage_seconds": times,
               "plan_seconds": report.plan_seconds, "functions": functions,
               "files": {k: str(Path(v).resolve()) for k, v in files.items()}}
    if profile is not None:
        summary["kernel_seconds"] = profile
    return summary


def _check_output(flag: str, path, *, directory: bool, wanted: str = "an artifact directory (or FILE.so)") -> None:
    """ValueError naming ``flag`` when ``path`` cannot be written; an existing directory may be replaced."""
    path = Path(path)
    if path.is_dir() != directory and path.exists():
        what = "a directory" if path.is_dir() else "a file"
        wanted = wanted if directory else "a file"
        raise ValueError(f"{flag} {path}: {what} is in the way; {flag} writes {wanted} there")
    try:  # create the parent now and write a scratch file: the real test of a writable place
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot write there ({err.strerror or err})") from None


def _profile(artifact, png, out) -> dict:
    """Time each kernel of ``artifact``, print the heaviest to ``out`` and plot them all; ``{kernel: seconds}``."""
    from . import runtime
    from .frontend import random_tensors
    from .plot import plot_kernel_times
    from .runtime.profile import profile

    with runtime.load(artifact) as loaded:
        inputs = random_tensors([(s.name, s.shape, s.dtype) for s in loaded.manifest.inputs])
        measured = profile(loaded, list(inputs.values()))
    rows = measured.rows
    kernels = sum(r.seconds for r in measured.kernels)
    print(f"latency {measured.latency * 1e3:.3f} ms per inference: kernels timed alone {kernels * 1e3:.3f} ms, "
          f"VM {measured.vm.seconds * 1e3:.3f} ms, not explained {rows[-1].seconds * 1e3:.3f} ms", file=out)
    for r in measured.kernels[:10]:
        print(f"  {r.seconds * 1e3:8.3f} ms {100 * r.seconds / measured.latency:5.1f}%  x{r.calls:<3} {r.name}", file=out)
    plot_kernel_times(rows, png)
    print(f"wrote {png}", file=out)
    return {r.name: r.seconds for r in rows}


def _demo(args) -> int:
    """Build the example model into ``DEMO_DIR`` (kept: every path printed stays there) and run it."""
    import onnx

    from .example_model import build_example_model
    from .targets import cross_compiler

    folder = Path(DEMO_DIR)
    folder.mkdir(exist_ok=True)
    path = folder / "example_encoder.onnx"
    onnx.save(build_example_model(), str(path))
    args.output = args.output or str(folder / "example_encoder")
    args.plot = args.plot or str(folder / "memory_timeline.png")
    args.report = args.report or str(folder / "report")
    out = sys.stderr if args.json else sys.stdout
    print(f"demo: the example model and what is built from it go to {folder.resolve()}/", file=out)
    code = _optimize(str(path), args)
    if not args.output.endswith(".so") and cross_compiler(args.target) is None:  # runs here
        _check_demo(path, args.output, out)
    return code


def _check_demo(onnx_path, artifact, out):
    """Run the artifact with the lean runtime in a fresh process (no TVM compiler, as on a
    board) and compare it with ONNX Runtime when that is installed."""
    import subprocess

    import numpy as np
    import onnx

    from .example_model import example_inputs

    inputs = example_inputs(onnx.load(str(onnx_path)))
    np.savez(Path(artifact) / "demo_inputs.npz", **inputs)
    code = (
        "import sys, numpy as np\n"
        "from fluidml_tvm import runtime\n"
        "inputs = dict(np.load(sys.argv[1] + '/demo_inputs.npz'))\n"
        "with runtime.load(sys.argv[1]) as model:\n"
        "    out = model(*inputs.values())\n"
        "np.save(sys.argv[1] + '/demo_output.npy', out[0] if isinstance(out, tuple) else out)\n"
        "print('tvm' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(artifact)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"the lean runtime failed on {artifact}:\n{proc.stderr[-2000:]}")
    compiler_loaded = json.loads(proc.stdout.strip().splitlines()[-1].lower())
    result = np.load(Path(artifact) / "demo_output.npy")
    print(f"ran the artifact with the lean runtime (TVM compiler loaded: {'yes' if compiler_loaded else 'no'})",
          file=out)
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"output {result.shape}", file=out)
        return
    ref = ort.InferenceSession(str(onnx_path)).run(None, inputs)[0]
    err = float(np.abs(result - ref).max() / max(np.abs(ref).max(), 1e-6))
    print(f"output {result.shape}, relative error vs ONNX Runtime {err:.1e}", file=out)


if __name__ == "__main__":
    sys.exit(main())
