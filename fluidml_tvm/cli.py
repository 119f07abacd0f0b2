"""The ``fluidml-tvm`` command: build an ONNX model with FluidML planning."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .runtime.threads import use_all_cores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fluidml-tvm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    opt = sub.add_parser(
        "optimize", help="build MODEL.onnx and print the memory plan",
        description="Build MODEL.onnx. -o DIR writes an artifact for fluidml_tvm.runtime.load: the library, "
                    "its weights (final layouts, memory-mapped at load) and a manifest. -o FILE.so writes one "
                    "library with the weights bound as constants (loading it costs about 2-4x the weights).")
    opt.add_argument("model", help="path of an ONNX model with static input shapes")
    _build_options(opt)
    demo = sub.add_parser("demo", help="optimize the built-in example model (a small BERT-style encoder)")
    _build_options(demo, output_required=False)
    from .tuning.cli import add_tune_parser
    from .tuning.farm import add_rpc_parser
    from .bench import add_bench_parser

    add_tune_parser(sub)
    sub.add_parser("targets", help="list the target presets (--target NAME) and what each means")
    add_rpc_parser(sub)
    add_bench_parser(sub)
    args = parser.parse_args(argv)
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
        return _optimize(args.model, args)
    except (ModelImportError, UnknownTargetError, ValueError) as err:
        print(f"fluidml-tvm: error: {err}", file=sys.stderr)
        return 2


def _build_options(p, output_required=True):
    p.add_argument("-o", "--output", required=output_required,
                   help="artifact directory, or FILE.so for one library with the weights inside")
    p.add_argument("--target", default="host",
                   help="TVM target: a kind ('llvm'), JSON, or a preset (host = this CPU; "
                        "`fluidml-tvm targets` lists the others)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="static shape for an input with symbolic dimensions (repeatable)")
    p.add_argument("--planner", default="best", help="memory planner (default: best of the arena heuristics)")
    p.add_argument("--solve-seconds", type=float, default=2.0, metavar="S",
                   help="when the heuristics miss the live-set bound, search up to S seconds per arena "
                        "for a smaller plan and prove it optimal (default 2; 0: off)")
    p.add_argument("--no-reorder", action="store_true", help="keep TVM's execution order")
    p.add_argument("--no-inplace", action="store_true", help="never write a kernel's output over its input")
    p.add_argument("--db", metavar="DIR", help="a tuning database to apply (default: the shipped one, if any)")
    p.add_argument("--report", help="write the memory report as JSON here")
    p.add_argument("--plot", help="write the memory timeline as a PNG here (needs matplotlib)")
    p.add_argument("--profile", metavar="PNG", help="run the artifact on random inputs and plot the time of each "
                                                    "kernel here (needs -o DIR and matplotlib)")


def _optimize(model, args) -> int:
    import fluidml_tvm

    from .frontend import parse_input_shapes
    from .targets import cross_compiler, resolve_target

    # Everything that can be checked without the build fails first: a build takes minutes.
    directory = not args.output.endswith(".so")
    _check_output("-o", args.output, directory=directory)
    for flag, path in (("--report", args.report), ("--plot", args.plot), ("--profile", args.profile)):
        if path:
            _check_output(flag, path, directory=False)
    if args.profile and not directory:
        raise ValueError("--profile runs an artifact directory: give -o DIR")
    input_shapes = parse_input_shapes(args.input_shape)
    print(f"building {model} for {args.target} ...", flush=True)
    target = resolve_target(args.target)
    options = dict(input_shapes=input_shapes, planner=args.planner, reorder=not args.no_reorder,
                   inplace=not args.no_inplace, validate=True, database=args.db,
                   solve_seconds=args.solve_seconds)
    fcompile = cross_compiler(target)
    if not directory:
        result = fluidml_tvm.compile(model, target, **options)
        result.export_library(args.output, **({"fcompile": fcompile} if fcompile else {}))
        report = result.report
    else:
        _, report = fluidml_tvm.export(model, args.output, target, fcompile=fcompile, **options)
    print(report.summary())
    print(f"planning took {report.plan_seconds:.2f} s; every plan validated")
    print(f"wrote {args.output}")
    if args.report:
        Path(args.report).write_text(report.to_json())
        print(f"wrote {args.report}")
    if args.plot:
        from .plot import plot_memory_timeline

        plot_memory_timeline(report["main"], args.plot)
        print(f"wrote {args.plot}")
    if args.profile:
        _profile(args.output, args.profile)
    return 0


def _check_output(flag: str, path, *, directory: bool) -> None:
    """ValueError naming ``flag`` when ``path`` cannot be written; an existing artifact directory may be replaced."""
    path = Path(path)
    if path.is_dir() != directory and path.exists():
        what = "a directory" if path.is_dir() else "a file"
        wanted = "an artifact directory (or FILE.so)" if directory else "a file"
        raise ValueError(f"{flag} {path}: {what} is in the way; {flag} writes {wanted} there")
    try:  # create the parent now and write a scratch file: the real test of a writable place
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot write there ({err.strerror or err})") from None


def _profile(artifact, png) -> None:
    from . import runtime
    from .frontend import random_tensors
    from .plot import plot_kernel_times
    from .runtime.profile import kernel_times

    with runtime.load(artifact) as loaded:
        inputs = random_tensors([(s.name, s.shape, s.dtype) for s in loaded.manifest.inputs])
        rows = kernel_times(loaded, list(inputs.values()))
    total = sum(r.seconds for r in rows)
    print(f"per-kernel time ({total * 1e3:.2f} ms per inference):")
    for r in rows[:10]:
        print(f"  {r.seconds * 1e3:8.3f} ms {100 * r.seconds / total:5.1f}%  x{r.calls:<3} {r.name}")
    plot_kernel_times(rows, png)
    print(f"wrote {png}")


def _demo(args) -> int:
    import onnx

    from .targets import cross_compiler

    from .example_model import build_example_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example_encoder.onnx"
        onnx.save(build_example_model(), str(path))
        if args.output is None:
            args.output = str(Path(tmp) / "example_encoder")
        code = _optimize(str(path), args)
        if not args.output.endswith(".so") and cross_compiler(args.target) is None:  # runs here
            _check_demo(path, args.output)
        return code


def _check_demo(onnx_path, artifact):
    """Run the artifact with the lean runtime in a fresh process (no TVM compiler, as on a
    board) and compare it with ONNX Runtime when that is installed."""
    import json
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
    out = np.load(Path(artifact) / "demo_output.npy")
    print(f"ran the artifact with the lean runtime (TVM compiler loaded: {'yes' if compiler_loaded else 'no'})")
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"output {out.shape}")
        return
    ref = ort.InferenceSession(str(onnx_path)).run(None, inputs)[0]
    err = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-6))
    print(f"output {out.shape}, relative error vs ONNX Runtime {err:.1e}")


if __name__ == "__main__":
    sys.exit(main())
