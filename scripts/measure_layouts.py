"""Measure the candidate weight layouts of the benchmark models' kernels and ship the records.

    python scripts/measure_layouts.py --target x86-64 --target host      # all models, both targets

Every packable matmul/conv2d of each model is built under each candidate
column block (1-4 vectors) exactly as a model build makes it and timed on this
machine (``fluidml_tvm.tuning.measure_layouts``); then the kernels
FoldLayoutKernels compares (a copy kernel, its partner, the two merged) are
timed as the build's "fuse" stage meets them.  The records go to
``schedules/x86-64-avx2/layout_costs.jsonl`` (keyed by the exact target, so a
``host`` record serves only this CPU with this many cores).  Records already
there are not measured again; builds read them through PackWeights' layout
planner.  ``fluidml-tvm tune --packed`` does the same into a tuning directory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import model_zoo  # noqa: E402

MODELS = ["minilm", "bert-base", "gpt2", "resnet18", "mobilenetv2"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--target", action="append", default=[], help="preset or JSON target (repeatable)")
    parser.add_argument("--out", default=str(ROOT / "schedules" / "x86-64-avx2"), help="directory of the records")
    args = parser.parse_args(argv)

    import onnx

    from fluidml_tvm.frontend import onnx_to_relax
    from fluidml_tvm.layout.costs import LayoutCostDatabase
    from fluidml_tvm.targets import describe
    from fluidml_tvm.tuning.measure_layouts import measure_layouts, model_layouts
    from fluidml_tvm.tuning.tasks import fuse

    database = LayoutCostDatabase(args.out)
    for spec in args.target or ["x86-64"]:
        target = describe(spec)
        pending: dict = {}
        modules = {}
        for name in args.models:
            modules[name], _ = onnx_to_relax(onnx.load(str(model_zoo.model_path(name))))
            pending.update(model_layouts(modules[name], target))
        start = time.time()

        def report(done, total, work):
            print(f"  [{spec}] {done}/{total} {work} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)

        added = measure_layouts(database, target, pending, progress=report)
        print(f"{spec}: {len(pending)} kernels, {added} new records in {time.time() - start:.0f} s")
        for name, mod in modules.items():  # appends to the same file, read again by each build
            before = len(LayoutCostDatabase(args.out))
            fuse(mod, target, packed=True, database=args.out, measure=True)
            print(f"{spec}: {name}: {len(LayoutCostDatabase(args.out)) - before} fold kernel records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
