"""Tune the benchmark models for an architecture and ship the best schedules in schedules/<arch>/.

    python scripts/tune_models.py --models minilm --trials 300        # tune (resumable), then ship
    python scripts/tune_models.py --models minilm --trials 0 --bench  # ship what is there, time it

Each model is tuned into its own work dir (``~/.cache/fluidml-tvm/tuning/<arch>/<model>``, the
full database with every measured candidate); re-running continues where a run stopped.
Shipping merges the best record of every workload over all models into
``schedules/<arch>/`` (small: one record per kernel). ``--bench`` builds each model with
FluidML planning with and without the shipped schedules and times both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

MODELS = ["minilm", "bert-base", "gpt2", "resnet18", "mobilenetv2"]
ARCH_TARGET = {"x86-64-avx2": "x86-64"}  # schedules/<arch> -> preset in fluidml_tvm/targets.py


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="x86-64-avx2", choices=sorted(ARCH_TARGET))
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--trials", type=int, default=300, help="measured candidates per model (total, resumable)")
    parser.add_argument("--trials-per-iter", type=int, default=16)
    parser.add_argument("--work-root", type=Path, default=Path.home() / ".cache/fluidml-tvm/tuning")
    parser.add_argument("--no-ship", action="store_true", help="do not rewrite schedules/<arch>/")
    parser.add_argument("--bench", action="store_true", help="time each model with and without the schedules")
    args = parser.parse_args(argv)

    from model_zoo import model_path

    from fluidml_tvm.tuning import tune

    target = ARCH_TARGET[args.arch]
    for name in args.models:
        if args.trials > 0:
            print(f"== tuning {name} for {args.arch}: {args.trials} trials", flush=True)
            report = tune(model_path(name), target, args.work_root / args.arch / name, args.trials,
                          trials_per_iter=args.trials_per_iter)
            print(report.summary(), flush=True)
    if not args.no_ship:
        ship(args.work_root / args.arch, ROOT / "schedules" / args.arch)
    if args.bench:
        for name in args.models:
            bench(name, target)
    return 0


def ship(work_root: Path, destination: Path) -> None:
    """Merge the best record per workload of every model's database into ``destination``."""
    from tvm.s_tir import meta_schedule as ms

    from fluidml_tvm.schedule.database import best_records, open_database

    merged = ms.database.MemoryDatabase()
    for work_dir in sorted(p for p in work_root.iterdir() if p.is_dir()):
        database = open_database(work_dir)
        for record in database.get_all_tuning_records():
            if record.run_secs is not None and all(float(s) < 1e9 for s in record.run_secs):
                merged.commit_workload(record.workload.mod)
                merged.commit_tuning_record(record)
    shipped = best_records(merged, destination)
    size = sum(f.stat().st_size for f in destination.glob("database_*.json"))
    print(f"shipped {len(shipped)} schedules to {destination} ({size / 1e6:.2f} MB)")


def bench(name: str, target: str) -> None:
    """Build ``name`` with FluidML planning, without and with the shipped schedules; time both."""
    import numpy as np
    import tvm
    from model_zoo import example_inputs, model_path
    from tvm import relax

    from fluidml_tvm.frontend import onnx_to_relax
    from fluidml_tvm.pipeline import stages
    from fluidml_tvm.targets import resolve_target
    from fluidml_tvm.tuning import ApplyTuningDatabase

    tgt = resolve_target(target)
    mod, _ = onnx_to_relax(model_path(name))
    inputs = [tvm.runtime.tensor(v) for v in example_inputs(name).values()]
    outputs, times = [], []
    for tuned in (False, True):
        parts = stages(tgt, kernels=False)  # row-major TVM kernels: the "TVM + MetaSchedule" baseline
        passes = parts["fuse"] + ([ApplyTuningDatabase(tgt)] if tuned else []) + parts["plan"] + parts["lower"] + parts["finalize"]
        with tgt:
            final = tvm.transform.Sequential(passes)(mod)
        ex = tvm.compile(final, tgt, relax_pipeline=None)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        out = vm["main"](*inputs)
        out = out[0] if isinstance(out, (list, tuple, tvm.ir.Array)) else out
        outputs.append(out.numpy())
        start = time.perf_counter()
        seconds = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=3)(*inputs).median
        times.append(seconds)
        print(f"{name}: {'shipped schedules' if tuned else 'untuned'}: {seconds * 1e3:.1f} ms "
              f"(timed in {time.perf_counter() - start:.0f} s)", flush=True)
    err = float(np.abs(outputs[0] - outputs[1]).max() / max(np.abs(outputs[0]).max(), 1e-6))
    print(f"{name}: speedup {times[0] / times[1]:.2f}x, max relative difference {err:.1e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
