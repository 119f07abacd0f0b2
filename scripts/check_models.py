#!/usr/bin/env python
"""Check every zoo model: ONNX -> TVM Relax import, default-pipeline build, VM run vs ONNX Runtime.

    python scripts/check_models.py [NAME ...] [--modes embedded params] [--tol 1e-4] [--json FILE]

Modes: ``embedded`` = from_onnx(keep_params_in_input=False) (weights become constants);
``params`` = keep_params_in_input=True + detach_params (weights passed as VM arguments).
Error metric: max|tvm - ort| / max|ort| over all outputs.  Untuned TVM code is slow
(GPT-2 small: about a minute per inference).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import model_zoo  # noqa: E402


def _outputs(res) -> list[np.ndarray]:
    """Flatten a VM result (tensor or nested tuple) to numpy arrays."""
    if hasattr(res, "numpy"):
        return [res.numpy()]
    return [a for r in res for a in _outputs(r)]


def ort_reference(path: Path, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Run ONNX Runtime (default optimisations, CPU); return outputs and seconds per run."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess.run(None, feeds)  # warm-up
    t0 = time.perf_counter()
    outs = sess.run(None, feeds)
    return outs, time.perf_counter() - t0


def check_tvm(model, feeds: dict[str, np.ndarray], ref: list[np.ndarray], mode: str, target) -> dict:
    """Import/build/run one model in one mode; return a result row (stage timings, error)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    row = {"mode": mode, "status": "ok"}
    stage = "import"
    try:
        t0 = time.perf_counter()
        mod = from_onnx(model, keep_params_in_input=(mode == "params"))
        params = []
        if mode == "params":
            mod, pdict = detach_params(mod)
            params = list(pdict.get("main", []))
        row["import_s"] = time.perf_counter() - t0

        stage = "compile"
        t0 = time.perf_counter()
        ex = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
        row["compile_s"] = time.perf_counter() - t0

        stage = "run"
        dev = tvm.cpu()
        vm = relax.VirtualMachine(ex, dev)
        args = [tvm.runtime.tensor(feeds[i.name], dev) for i in model.graph.input if i.name in feeds]
        t0 = time.perf_counter()
        outs = _outputs(vm["main"](*args, *params))
        row["run_s"] = time.perf_counter() - t0

        stage = "match"
        if len(outs) != len(ref):
            raise RuntimeError(f"{len(outs)} outputs vs {len(ref)} from ORT")
        err = 0.0
        for a, b in zip(outs, ref):
            if a.shape != b.shape:
                raise RuntimeError(f"shape {a.shape} vs ORT {b.shape}")
            err = max(err, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)))
        row["rel_err"] = err
    except Exception as e:  # report and continue with the next model/mode
        row["status"] = f"FAIL@{stage}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}"
    finally:
        gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns non-zero if any model fails or exceeds the tolerance."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"models to check (default all: {', '.join(model_zoo.MODELS)})")
    ap.add_argument("--modes", nargs="+", choices=["embedded", "params"], default=["embedded", "params"])
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative error (default 1e-4)")
    ap.add_argument("--out", type=Path, default=None, help="model dir (default: zoo cache)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in model_zoo.MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(model_zoo.MODELS)}")

    import onnx
    import tvm

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    rows = []
    for name in args.names or list(model_zoo.MODELS):
        path = model_zoo.build_model(name, args.out)
        model = onnx.load(str(path))
        mb = model_zoo.params_bytes(model) / 1e6
        feeds = model_zoo.example_inputs(name)
        ref, ort_s = ort_reference(path, feeds)
        for mode in args.modes:
            print(f"[{name}] {mode}: import + compile + run ...", flush=True)
            row = {"model": name, "params_mb": mb, "ort_s": ort_s,
                   **check_tvm(model, feeds, ref, mode, target)}
            if row["status"] == "ok" and row["rel_err"] > args.tol:
                row["status"] = f"MISMATCH (> {args.tol:g})"
            print(f"[{name}] {mode}: {row['status']} "
                  + " ".join(f"{k}={row[k]:.3g}" for k in ("import_s", "compile_s", "run_s", "rel_err") if k in row),
                  flush=True)
            rows.append(row)
        del model
        gc.collect()

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"

    hdr = f"{'model':<12} {'params MB':>9} {'mode':<8} {'import s':>8} {'compile s':>9} {'run s':>7} {'ORT s':>7} " \
          f"{'rel err':>9}  status"
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for r in rows:
        print(f"{r['model']:<12} {r['params_mb']:>9.1f} {r['mode']:<8} {fmt(r.get('import_s'), '8.2f')} "
              f"{fmt(r.get('compile_s'), '9.2f')} {fmt(r.get('run_s'), '7.2f')} {r['ort_s']:>7.3f} "
              f"{fmt(r.get('rel_err'), '9.2e')}  {r['status']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
