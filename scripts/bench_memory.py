"""Memory of planned builds: FluidML's arena vs TVM's planner, the bounds, and process peak RSS.

Per model (scripts/model_zoo.py): the bytes TVM's StaticPlanBlockMemory allocates,
FluidML's arena, the live-set lower bound of TVM's own execution order, the bytes
with no reuse at all, and the largest scratch one kernel allocates for itself.
Then the peak RSS (VmHWM) of a fresh process that imports TVM, loads the exported
library (weights embedded) and runs one inference: TVM's default pipeline, the
FluidML pipeline, and ONNX Runtime. Outputs are checked against each other
(FluidML vs TVM rel err <= 1e-5, vs ONNX Runtime <= 1e-4).

    python scripts/bench_memory.py [NAME ...] [--no-rss] [--write]

``--write`` puts the table into BENCHMARKS.md with this command line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import model_zoo  # noqa: E402
from benchmarks_md import write_section  # noqa: E402

CACHE = Path.home() / ".cache" / "fluidml-tvm" / "bench-memory"
MB = 1 << 20
TARGET = {"kind": "llvm", "num-cores": 2}

_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024"
# argv: library or onnx path, inputs .npz, outputs .npz
CHILD_TVM = f"""
import sys, json, numpy as np, tvm
from tvm import relax
inputs = list(np.load(sys.argv[2]).values())
vm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())
out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
out = [out] if hasattr(out, "numpy") else list(out)
np.savez(sys.argv[3], *[o.numpy() for o in out])
print(json.dumps({{"peak": {_PEAK}}}))
"""
CHILD_ORT = f"""
import sys, json, numpy as np, onnxruntime as ort
inputs = list(np.load(sys.argv[2]).values())
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
out = s.run(None, dict(zip([i.name for i in s.get_inputs()], inputs)))
np.savez(sys.argv[3], *out)
print(json.dumps({{"peak": {_PEAK}}}))
"""


def build(name: str, out: Path) -> dict:
    """Build both libraries; return FluidML's memory report figures for main."""
    import tvm
    from tvm import relax

    import fluidml_tvm
    from fluidml_tvm.frontend import onnx_to_relax

    out.mkdir(parents=True, exist_ok=True)
    path = model_zoo.model_path(name)
    np.savez(out / "inputs.npz", *model_zoo.example_inputs(name).values())
    start = time.perf_counter()
    result = fluidml_tvm.compile(str(path), TARGET, validate=True)
    build_s = time.perf_counter() - start
    result.export_library(out / "fluidml.so")
    mod, _ = onnx_to_relax(str(path))
    target = tvm.target.Target(TARGET)
    tvm.compile(mod, target, relax_pipeline=relax.get_default_pipeline(target)).export_library(str(out / "tvm.so"))
    r = result.report["main"]
    a = fluidml_tvm.compile(str(path), TARGET, scratch=False).report["main"]  # activations only
    # TVM's planner on TVM's own fused module: no packed kernels, no folded copy kernels
    stock = fluidml_tvm.compile(str(path), TARGET, scratch=False, kernels=False).report["main"]
    return {"arena": a.arena_bytes, "tvm": a.tvm_planner_bytes, "stock": stock.tvm_planner_bytes,
            "bound": a.tvm_order_lower_bound, "no_reuse": a.no_reuse_bytes, "inplace": len(a.inplace),
            "tensors": len(a.tensors),
            "strategy": a.strategy, "plan_s": result.report.plan_seconds, "build_s": build_s,
            "scratch": r.tvm_kernel_scratch_bytes, "left": r.kernel_scratch_left_bytes,
            "arena_all": r.arena_bytes, "bound_all": r.tvm_order_lower_bound,
            "total": r.total_bytes, "tvm_total": r.tvm_total_bytes}


def child(code: str, subject: Path, out: Path, tag: str) -> tuple[int, list]:
    proc = subprocess.run([sys.executable, "-c", code, str(subject), str(out / "inputs.npz"),
                           str(out / f"out-{tag}.npz")], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{tag} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak"], list(np.load(out / f"out-{tag}.npz").values())


def rel_err(a: list, b: list) -> float:
    return max(float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-6)) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(model_zoo.MODELS))
    parser.add_argument("--no-rss", action="store_true", help="plan figures only (no inference runs)")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    plan_rows, total_rows, rss_rows = [], [], []
    for name in args.models:
        out = CACHE / name
        print(f"== {name}", flush=True)
        f = build(name, out)
        plan_rows.append(
            f"| {name} | {f['stock'] / MB:.2f} | {f['arena'] / f['stock']:.2f} "
            f"| {f['tvm'] / MB:.2f} | {f['arena'] / MB:.2f} | {f['arena'] / f['tvm']:.2f} "
            f"| {f['bound'] / MB:.2f} | {f['arena'] / f['bound']:.3f} | {f['no_reuse'] / MB:.1f} "
            f"| {f['tensors']} / {f['inplace']} | {f['strategy']} |"
        )
        total_rows.append(
            f"| {name} | {f['tvm'] / MB:.2f} + {f['scratch'] / MB:.2f} = {f['tvm_total'] / MB:.2f} "
            f"| {f['arena_all'] / MB:.2f} + {f['left'] / MB:.2f} = {f['total'] / MB:.2f} "
            f"| {f['total'] / f['tvm_total']:.2f} | {f['arena_all'] / f['bound_all']:.3f} "
            f"| {f['plan_s']:.2f} | {f['build_s']:.1f} |"
        )
        print(plan_rows[-1], total_rows[-1], sep="\n", flush=True)
        if args.no_rss:
            continue
        peak_tvm, out_tvm = child(CHILD_TVM, out / "tvm.so", out, "tvm")
        peak_ours, out_ours = child(CHILD_TVM, out / "fluidml.so", out, "fluidml")
        peak_ort, out_ort = child(CHILD_ORT, model_zoo.model_path(name), out, "ort")
        e_tvm, e_ort = rel_err(out_ours, out_tvm), rel_err(out_ours, out_ort)
        ok = "yes" if e_tvm <= 1e-5 and e_ort <= 1e-4 else "NO"
        rss_rows.append(
            f"| {name} | {peak_tvm / MB:.0f} | {peak_ours / MB:.0f} | {(peak_tvm - peak_ours) / MB:+.0f} "
            f"| {peak_ort / MB:.0f} | {e_tvm:.1e} | {e_ort:.1e} | {ok} |"
        )
        print(rss_rows[-1], flush=True)
    table = (
        "Intermediate tensors only (`scratch=False`), the same set StaticPlanBlockMemory plans. "
        "*TVM default pipeline*: StaticPlanBlockMemory on TVM's own fused module (what a stock build "
        "allocates); *TVM planner*: the same planner on the module FluidML plans (packed kernels, copy "
        "kernels folded), which isolates the planner:\n\n"
        "| model | TVM default pipeline MiB | arena / TVM default | TVM planner MiB | FluidML arena MiB "
        "| arena / TVM | live-set bound (TVM order) MiB "
        "| arena / bound | no reuse MiB | tensors / in place | planner |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(plan_rows)
        + "\n\nWith kernel scratch (the default): TVM's planner plus the largest scratch a kernel takes from "
        "TVM's workspace pool, against FluidML's arena (scratch lifted into it) plus the scratch left in kernels:\n\n"
        "| model | TVM: planner + scratch MiB | FluidML: arena + scratch left MiB | FluidML / TVM "
        "| arena / bound (same tensors, TVM order) | plan s | build s |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(total_rows)
    )
    if rss_rows:
        table += (
            "\n\nPeak RSS of a fresh process (`import tvm`, load the library with embedded weights, one inference):\n\n"
            "| model | TVM default MiB | FluidML MiB | saved MiB | ONNX Runtime MiB | rel err vs TVM "
            "| rel err vs ORT | outputs match |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rss_rows)
        )
    print(table)
    if args.write:
        write_section("bench_memory", table)


if __name__ == "__main__":
    main()
