"""Share one loaded model between threads, in fresh processes, and check every output.

Each round is a new process that loads the artifact, computes a reference output for each of
a few distinct inputs single-threaded, then calls the model from ``--threads`` threads
``--calls`` times each (every thread cycling through the inputs, so outputs swapped between
threads are caught) and compares each output with its reference bit for bit. A round is
clean when every output matches and the process exits normally (no crash, no exception).

    .venv/bin/python scripts/stress_threads.py                 # 20 rounds, 4 threads x 200 calls
    .venv/bin/python scripts/stress_threads.py --artifact out/minilm --rounds 5
    TVM_NUM_THREADS=1 .venv/bin/python scripts/stress_threads.py --artifact out/minilm \
        --rounds 3 --calls 50 --max-concurrency 1      # serialized calls, for comparison

Without ``--artifact`` it builds a small multi-layer model (:func:`build_artifact`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

WIDTH, LAYERS = 256, 4


def build_artifact(path: Path) -> Path:
    """Export a model of a few matmul+bias+relu layers, big enough that calls overlap in threads."""
    import tvm
    from tvm import relax

    from fluidml_tvm.artifact import export_artifact

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((16, WIDTH), "float32"))
    ws = [relax.Var(f"w{i}", relax.TensorType((WIDTH, WIDTH), "float32")) for i in range(LAYERS)]
    with bb.function("main", [x, *ws], attrs={"num_input": 1}):
        with bb.dataflow():
            h = x
            for w in ws:
                h = bb.emit(relax.op.nn.relu(relax.op.matmul(h, w)))
            out = bb.emit_output(relax.Tuple([relax.op.nn.softmax(h), relax.op.sum(h)]))
        bb.emit_func_output(out)
    rng = np.random.default_rng(0)
    weights = [(rng.standard_normal((WIDTH, WIDTH)) / WIDTH**0.5).astype("float32") for _ in ws]
    export_artifact(bb.get(), weights, tvm.target.Target("llvm"), path)
    return path


def _inputs(manifest, count: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    feeds = []
    for _ in range(count):
        feed = []
        for spec in manifest.inputs:
            shape = [d if d >= 0 else 1 for d in spec.shape]
            if np.dtype(spec.dtype).kind == "f":
                feed.append(rng.standard_normal(shape).astype(spec.dtype))
            else:
                feed.append(rng.integers(0, 100, shape).astype(spec.dtype))
        feeds.append(feed)
    return feeds


def one_round(artifact: Path, threads: int, calls: int, max_concurrency: int | None = None) -> dict:
    """Load ``artifact`` in this process and hammer it; return counts of calls, wrong outputs,
    errors, and calls per second over the threaded part."""
    from fluidml_tvm import runtime

    model = runtime.load(artifact, max_concurrency=max_concurrency)
    feeds = _inputs(model.manifest, 7)
    refs = [model(*f) for f in feeds]
    wrong, errors = [0], []

    def same(a, b) -> bool:
        a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))

    def work(t: int) -> None:
        for i in range(calls):
            k = (t + i) % len(feeds)
            try:
                if not same(model(*feeds[k]), refs[k]):
                    wrong[0] += 1
            except Exception as err:  # noqa: BLE001 - reported, not hidden
                errors.append(repr(err)[:200])

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - start
    model.close()
    return {"calls": threads * calls, "wrong": wrong[0], "errors": errors[:5],
            "calls_per_s": round(threads * calls / seconds, 1)}


def run_rounds(artifact: Path, rounds: int, threads: int, calls: int,
               max_concurrency: int | None = None) -> list[dict]:
    """Each round in a fresh process; a crash is a round with its exit status."""
    results = []
    limit = ["--max-concurrency", str(max_concurrency)] if max_concurrency else []
    for _ in range(rounds):
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--artifact", str(artifact),
             "--threads", str(threads), "--calls", str(calls), *limit],
            capture_output=True, text=True, check=False,
        )
        lines = child.stdout.strip().splitlines()
        if child.returncode or not lines:
            results.append({"crashed": child.returncode, "stderr": child.stderr.strip()[-300:]})
        else:
            results.append(json.loads(lines[-1]))
    return results


def clean(result: dict) -> bool:
    return "crashed" not in result and not result["wrong"] and not result["errors"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, help="artifact directory (default: build a small model)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--calls", type=int, default=200, help="calls per thread")
    parser.add_argument("--max-concurrency", type=int, help="VMs per model (1: serialize calls)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = one_round(args.artifact, args.threads, args.calls, args.max_concurrency)
        print(json.dumps(result))
        return 0 if clean(result) else 1
    with tempfile.TemporaryDirectory() as scratch:
        artifact = args.artifact or build_artifact(Path(scratch) / "model")
        results = run_rounds(artifact, args.rounds, args.threads, args.calls, args.max_concurrency)
    for i, r in enumerate(results):
        print(f"round {i + 1}: {'clean' if clean(r) else 'NOT CLEAN'} {json.dumps(r)}")
    bad = sum(not clean(r) for r in results)
    print(f"{len(results) - bad}/{len(results)} rounds clean "
          f"({args.threads} threads x {args.calls} calls each, one model per process)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
