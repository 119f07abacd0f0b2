"""The ``fluidml-tvm`` command: build an ONNX model with FluidML planning."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fluidml-tvm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    opt = sub.add_parser("optimize", help="build MODEL.onnx into a library and print the memory plan")
    opt.add_argument("model", help="path of an ONNX model with static input shapes")
    _build_options(opt)
    demo = sub.add_parser("demo", help="optimize the built-in example model (a small BERT-style encoder)")
    _build_options(demo, output_required=False)
    args = parser.parse_args(argv)

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
    p.add_argument("-o", "--output", required=output_required, help="library to write (.so)")
    p.add_argument("--target", default="llvm",
                   help="TVM target: a kind ('llvm'), JSON, or a preset (x86-64, aarch64, mali, adreno)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="static shape for an input with symbolic dimensions (repeatable)")
    p.add_argument("--planner", default="best", help="memory planner (default: best of the arena heuristics)")
    p.add_argument("--no-reorder", action="store_true", help="keep TVM's execution order")
    p.add_argument("--no-inplace", action="store_true", help="never write a kernel's output over its input")
    p.add_argument("--report", help="write the memory report as JSON here")
    p.add_argument("--plot", help="write the memory timeline as a PNG here (needs matplotlib)")


def _optimize(model, args) -> int:
    import fluidml_tvm

    shapes = {}
    for item in args.input_shape:
        name, _, dims = item.partition("=")
        if not dims:
            raise ValueError(f"--input-shape {item!r}: expected NAME=D0,D1,...")
        shapes[name] = [int(d) for d in dims.split(",")]
    print(f"building {model} for {args.target} ...", flush=True)
    result = fluidml_tvm.compile(model, args.target, input_shapes=shapes or None, planner=args.planner,
                                 reorder=not args.no_reorder, inplace=not args.no_inplace, validate=True)
    print(result.report.summary())
    print(f"planning took {result.report.plan_seconds:.2f} s; every plan validated")
    if args.output:
        _export(result, args.output)
        print(f"wrote {args.output}")
    if args.report:
        Path(args.report).write_text(result.report.to_json())
        print(f"wrote {args.report}")
    if args.plot:
        from .plot import plot_memory_timeline

        plot_memory_timeline(result.report["main"], args.plot)
        print(f"wrote {args.plot}")
    return 0


def _export(result, path):
    target = result.target
    host = target.host or target
    if "aarch64" in str(host.attrs.get("mtriple", "")):
        from tvm.support import cc  # cross-link for the board

        triple = str(host.attrs["mtriple"])
        result.export_library(path, fcompile=cc.cross_compiler(f"{triple.replace('-android', '-linux-gnu')}-gcc"))
    else:
        result.export_library(path)


def _demo(args) -> int:
    import onnx

    from .example_model import build_example_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example_encoder.onnx"
        onnx.save(build_example_model(), str(path))
        if args.output is None:
            args.output = str(Path(tmp) / "example_encoder.so")
        code = _optimize(str(path), args)
        _check_demo(path, args.output)
        return code


def _check_demo(onnx_path, lib_path):
    """Run the built library once and compare it with ONNX Runtime when that is installed."""
    import numpy as np
    import onnx
    import tvm
    from tvm import relax

    from .example_model import example_inputs

    inputs = example_inputs(onnx.load(str(onnx_path)))
    vm = relax.VirtualMachine(tvm.runtime.load_module(lib_path), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
    out = (out[0] if not hasattr(out, "numpy") else out).numpy()
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"ran the library: output {out.shape}")
        return
    ref = ort.InferenceSession(str(onnx_path)).run(None, inputs)[0]
    err = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-6))
    print(f"ran the library: output {out.shape}, relative error vs ONNX Runtime {err:.1e}")


if __name__ == "__main__":
    sys.exit(main())
