"""Kernel speed: fluidml-tvm's default schedules vs TVM's untuned code vs ONNX Runtime.

Two tables (markdown):

* per kernel, GFLOP/s: BERT's FFN matmul (128x768 . 768x3072) and ResNet-18's
  layer-1 conv (64->64, 3x3, 56x56), each built three ways -- with the
  "pack" + "schedule" stages, with TVM's default pipeline (untuned), and run by
  ONNX Runtime (a one-node model);
* end to end, median latency (``time_evaluator``) of zoo models built with and
  without the stages, and ONNX Runtime on the same number of threads.

Untuned transformer builds take tens of seconds per run, so they are timed once
(``--untuned-repeat``); skip them with ``--no-untuned``.

    .venv/bin/python scripts/bench_kernels.py                       # everything
    .venv/bin/python scripts/bench_kernels.py --models minilm --no-untuned
    .venv/bin/python scripts/bench_kernels.py --target '{"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}'
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

MODELS = ["minilm", "bert-base", "gpt2", "resnet18", "mobilenetv2"]


def build(mod, target, fast: bool):
    """With FluidML's kernels (pack + schedule stages) or without (TVM's own kernels)."""
    import tvm

    from fluidml_tvm.pipeline import get_pipeline

    return tvm.compile(mod, target, relax_pipeline=get_pipeline(target, kernels=fast))


def vm_timer(executable, inputs):
    """``timer(n)``: ``n`` timed runs of ``main`` (seconds each), after one warm-up run."""
    import tvm
    from tvm import relax

    from fluidml_tvm.runtime import use_all_cores

    use_all_cores()  # TVM would take half the CPUs; ONNX Runtime gets the same thread count
    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(x) for x in inputs]
    vm["main"](*args)
    return lambda n: list(vm.time_evaluator("main", tvm.cpu(), number=1, repeat=n)(*args).results)


def ort_session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_timer(session, feeds):
    """``timer(n)`` for an ONNX Runtime session, after one warm-up run."""
    session.run(None, feeds)

    def timer(n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
        return times

    return timer


def interleaved(timers: dict, repeat: int, rounds: int = 3) -> dict:
    """Seconds per run of each timer: the best of ``rounds`` round medians, the timers taking turns.

    This machine's second CPU is sometimes busy for seconds at a time; timing the
    systems in turns and keeping each one's best round keeps such a burst from
    landing on one column only.
    """
    from fluidml_tvm.tuning.measure_layouts import best_round_medians

    per_round = max(1, -(-repeat // rounds))
    return best_round_medians({name: (lambda t=timer: t(per_round)) for name, timer in timers.items()}, rounds)


def vm_seconds(executable, inputs, repeat: int) -> float:
    return float(np.median(vm_timer(executable, inputs)(repeat)))


def ort_seconds(session, feeds, repeat: int) -> float:
    return float(np.median(ort_timer(session, feeds)(repeat)))


# ---------------------------------------------------------------------------
# kernels


def one_node_model(op: str, x_shape, w: np.ndarray, **attrs):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], op.lower(), [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def bench_kernels(target, threads: int, repeat: int) -> list[tuple]:
    from fluidml_tvm.frontend import onnx_to_relax

    rng = np.random.default_rng(0)
    cases = [
        ("BERT FFN matmul 128x768 . 768x3072", "MatMul", (1, 128, 768),
         rng.standard_normal((768, 3072)).astype("float32"), {}, 2 * 128 * 768 * 3072),
        ("ResNet-18 conv 64->64 3x3 56x56", "Conv", (1, 64, 56, 56),
         rng.standard_normal((64, 64, 3, 3)).astype("float32"), {"pads": [1, 1, 1, 1]}, 2 * 64 * 64 * 9 * 56 * 56),
    ]
    rows = []
    for name, op, x_shape, w, attrs, flops in cases:
        model = one_node_model(op, x_shape, w, **attrs)
        mod, _ = onnx_to_relax(model)
        x = rng.standard_normal(x_shape).astype("float32")
        ours = vm_seconds(build(mod, target, True), [x], repeat)
        untuned = vm_seconds(build(mod, target, False), [x], max(3, repeat // 5))
        ort = ort_seconds(ort_session(model, threads), {"x": x}, repeat)
        rows.append((name, flops / ours / 1e9, flops / untuned / 1e9, flops / ort / 1e9))
        print(f"  {name}: ours {rows[-1][1]:.1f}, untuned {rows[-1][2]:.1f}, ORT {rows[-1][3]:.1f} GFLOP/s",
              file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------
# models


def bench_models(names, target, threads: int, repeat: int, untuned_repeat: int) -> list[tuple]:
    import onnx

    import model_zoo
    from fluidml_tvm.frontend import onnx_to_relax

    rows = []
    for name in names:
        model = onnx.load(str(model_zoo.model_path(name)))
        feeds = model_zoo.example_inputs(name)
        inputs = list(feeds.values())
        mod, _ = onnx_to_relax(model)
        start = time.perf_counter()
        ex = build(mod, target, True)
        build_s = time.perf_counter() - start
        ours = vm_seconds(ex, inputs, repeat)
        untuned = vm_seconds(build(mod, target, False), inputs, untuned_repeat) if untuned_repeat else None
        ort = ort_seconds(ort_session(model, threads), feeds, repeat)
        rows.append((name, ours, untuned, ort, build_s))
        print(f"  {name}: ours {1e3 * ours:.1f} ms, untuned "
              f"{'-' if untuned is None else f'{1e3 * untuned:.0f} ms'}, ORT {1e3 * ort:.1f} ms",
              file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="x86-64", help="preset name or TVM target JSON (default x86-64: AVX2, 2 cores)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--untuned-repeat", type=int, default=1)
    ap.add_argument("--no-untuned", action="store_true", help="skip untuned end-to-end builds")
    ap.add_argument("--no-kernels", action="store_true")
    args = ap.parse_args(argv)

    from fluidml_tvm.targets import resolve_target

    target = resolve_target(args.target)
    print(f"target: {target}, ONNX Runtime threads: {args.threads}\n")
    if not args.no_kernels:
        rows = bench_kernels(target, args.threads, args.repeat)
        print("| kernel | fluidml-tvm GFLOP/s | TVM untuned GFLOP/s | ONNX Runtime GFLOP/s |")
        print("| --- | ---: | ---: | ---: |")
        for name, ours, untuned, ort in rows:
            print(f"| {name} | {ours:.1f} | {untuned:.2f} | {ort:.1f} |")
        print()
    if args.models:
        rows = bench_models(args.models, target, args.threads, args.repeat,
                            0 if args.no_untuned else args.untuned_repeat)
        print("| model | fluidml-tvm ms | TVM untuned ms | ONNX Runtime ms | ours / ORT | speed-up vs untuned |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, ours, untuned, ort, _ in rows:
            u = "-" if untuned is None else f"{1e3 * untuned:.0f}"
            s = "-" if untuned is None else f"{untuned / ours:.0f}x"
            print(f"| {name} | {1e3 * ours:.1f} | {u} | {1e3 * ort:.1f} | {ours / ort:.2f} | {s} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
