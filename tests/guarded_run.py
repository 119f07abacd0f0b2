"""Build an ONNX model and run it on several input sets in a child process.

A model that reads out of bounds may segfault; in a child, that fails the
test that asked (with the case it died on) instead of killing pytest.

    python tests/guarded_run.py MODEL.onnx FEEDS.npz OUT.npz [--export DIR] [--index-checks off]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = '{"kind": "llvm", "num-cores": 2}'


def guarded_outcomes(proto, feed_sets: list, workdir: Path, *, export: bool = False,
                     index_checks: bool = True, timeout: float = 600) -> list:
    """Per input set: ``("ok", [outputs])`` or ``("error", "ExceptionType: message")``.

    Raises AssertionError when the child dies (a crash), naming the case it was running.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model, feeds, out = workdir / "model.onnx", workdir / "feeds.npz", workdir / "out.npz"
    model.write_bytes(proto.SerializeToString())
    np.savez(feeds, **{f"{i}/{name}": x for i, f in enumerate(feed_sets) for name, x in f.items()})
    cmd = [sys.executable, __file__, str(model), str(feeds), str(out)]
    if export:
        cmd += ["--export", str(workdir / "artifact")]
    if not index_checks:
        cmd += ["--index-checks", "off"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        raise AssertionError(
            f"the child died (exit {proc.returncode}) after {len(lines)} of {len(feed_sets)} cases; "
            f"stderr: {proc.stderr.strip()[-600:]}"
        )
    outputs = np.load(out)
    result = []
    for i, line in enumerate(lines):
        if line["ok"]:
            result.append(("ok", [outputs[f"{i}/{k}"] for k in range(line["outputs"])]))
        else:
            result.append(("error", line["error"]))
    return result


def _main(argv) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("feeds")
    parser.add_argument("out")
    parser.add_argument("--export")
    parser.add_argument("--index-checks", default="on")
    args = parser.parse_args(argv)

    import onnx

    import fluidml_tvm

    proto = onnx.load(args.model)
    names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    stored = np.load(args.feeds)
    count = 1 + max((int(k.split("/")[0]) for k in stored.files), default=-1)
    feed_sets = [[stored[f"{i}/{n}"] for n in names] for i in range(count)]
    checks = args.index_checks == "on"
    if args.export:
        from fluidml_tvm import runtime

        fluidml_tvm.export(proto, args.export, TARGET, index_checks=checks)
        run = runtime.load(args.export)
    else:
        import tvm
        from tvm import relax

        result = fluidml_tvm.compile(proto, TARGET, report=False, index_checks=checks)
        vm = relax.VirtualMachine(result.executable, tvm.cpu())

        def run(*xs):
            out = vm["main"](*[tvm.runtime.tensor(x) for x in xs])
            return tuple(o.numpy() for o in out) if isinstance(out, (list, tuple, tvm.ir.Array)) else out.numpy()

    saved = {}
    for i, xs in enumerate(feed_sets):
        try:
            out = run(*xs)
        except Exception as err:  # what the model raises is the result under test
            message = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            print(json.dumps({"ok": False, "error": f"{type(err).__name__}: {message}"}), flush=True)
            continue
        outs = out if isinstance(out, tuple) else (out,)
        saved.update({f"{i}/{k}": o for k, o in enumerate(outs)})
        print(json.dumps({"ok": True, "outputs": len(outs)}), flush=True)
    np.savez(args.out, **saved)


if __name__ == "__main__":
    _main(sys.argv[1:])
