"""End-to-end latency: fluidml-tvm against ONNX Runtime, TVM's default pipeline, and MetaSchedule.

Per model, in one run, on the same inputs (the systems timed in turns, each keeping its best round median):

* ONNX Runtime with 1 and 2 intra-op threads;
* TVM's default pipeline (untuned kernels; one run, they take up to a minute);
* TVM + MetaSchedule: the shipped tuning database (schedules/, tuned on
  row-major kernels) applied, no FluidML layout planning (``kernels=False``);
* fluidml-tvm: packed layouts, the same database where its workloads match,
  default schedules for the rest, memory plan.

FLOP/s are the model's matmul/conv FLOPs over the median time, against the
peak of the target's ISA (AVX2 FMA: 32 fp32 FLOP/cycle/core) at the nominal
clock.  ONNX Runtime picks its kernels for the host CPU (AVX-512 here) whatever
target the TVM builds use.

    python scripts/bench_latency.py [NAME ...] [--target x86-64] [--repeat 10] [--no-untuned] [--write]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import model_zoo  # noqa: E402
from bench_kernels import interleaved, ort_session, ort_timer, vm_timer  # noqa: E402
from benchmarks_md import write_section  # noqa: E402

MODELS = ["minilm", "bert-base", "gpt2", "resnet18", "mobilenetv2"]


def model_flops(model) -> int:
    """2 x multiply-adds of every MatMul, Gemm and Conv, from inferred shapes."""
    import onnx

    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out:
            continue
        if node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0])
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            k = a[-2] if trans_a else a[-1]
            total += 2 * int(np.prod(out)) * k
        elif node.op_type == "Conv":
            w = shapes.get(node.input[1])
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    return total


def peak_gflops(target) -> float:
    """Cores x FMA width x clock: 32 fp32 FLOP/cycle/core for AVX2, 64 with AVX-512."""
    from tvm.target import codegen

    mhz = max(float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz"))
    cores = int(target.attrs["num-cores"]) if "num-cores" in target.attrs else 1
    per_cycle = 64 if codegen.llvm_cpu_has_features(["avx512f"], target) else 32
    return cores * per_cycle * mhz / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--target", default="x86-64")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-untuned", action="store_true", help="skip TVM's untuned default pipeline")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()

    import onnx
    import tvm
    from tvm import relax

    from fluidml_tvm.frontend import onnx_to_relax
    from fluidml_tvm.pipeline import get_pipeline
    from fluidml_tvm.targets import resolve_target
    from fluidml_tvm.tuning import shipped_database

    target = resolve_target(args.target)
    peak = peak_gflops(target)
    rows = []
    for name in args.models:
        proto = onnx.load(str(model_zoo.model_path(name)))
        feeds = model_zoo.example_inputs(name)
        inputs = list(feeds.values())
        mod, _ = onnx_to_relax(proto)
        flops = model_flops(proto)
        timers = {
            "ort1": ort_timer(ort_session(proto, 1), feeds),
            "ort2": ort_timer(ort_session(proto, 2), feeds),
            "ours": vm_timer(tvm.compile(mod, target, relax_pipeline=get_pipeline(target)), inputs),
        }
        # without a database for the target, this would be the untuned column again
        if shipped_database(target) is not None:
            timers["tuned"] = vm_timer(tvm.compile(mod, target, relax_pipeline=get_pipeline(target, kernels=False)),
                                       inputs)
        seconds = interleaved(timers, args.repeat)
        ort1, ort2, ours, tuned = (seconds.get(k) for k in ("ort1", "ort2", "ours", "tuned"))
        untuned = None
        if not args.no_untuned:
            default = relax.get_default_pipeline(target)
            untuned = vm_timer(tvm.compile(mod, target, relax_pipeline=default), inputs)(1)[0]
        ms = lambda s: f"{s * 1e3:.1f}" if s is not None else "-"  # noqa: E731
        rows.append(
            f"| {name} | {ms(ort1)} | {ms(ort2)} | {ms(untuned)} | {ms(tuned)} | {ms(ours)} "
            f"| {ours / ort2:.2f} | {f'{ours / tuned:.2f}' if tuned else '-'} "
            f"| {flops / ours / 1e9:.0f} ({flops / ours / 1e9 / peak:.0%}) "
            f"| {flops / ort2 / 1e9:.0f} |"
        )
        print(rows[-1], flush=True)
    table = (
        f"Target `{args.target}` ({target.attrs.get('mcpu', 'generic')}, peak {peak:.0f} GFLOP/s); "
        f"{args.repeat} runs each, taking turns in 3 rounds: the best round median, ms "
        "(the untuned build: one run).\n\n"
        "| model | ORT 1 thread | ORT 2 threads | TVM default (untuned) | TVM + MetaSchedule (shipped DB) "
        "| fluidml-tvm | fluidml / ORT 2t | fluidml / MetaSchedule | fluidml GFLOP/s (of peak) | ORT 2t GFLOP/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(table)
    if args.write:
        write_section(f"bench_latency {args.target}", table)


if __name__ == "__main__":
    main()
