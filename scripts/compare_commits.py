"""Memory and latency of two commits of fluidml-tvm, measured in one run on this machine.

Each commit is checked out (``git worktree``) and imported in its own child
processes. Per model: both commits export the same ONNX file for the same
target; then their artifacts are timed with each commit's own runtime in
fresh processes, taking turns, ``--rounds`` times (median of ``--repeat``
inferences each); outputs must agree (relative error <= 1e-5). A refactor
should change nothing: the table shows the arena bytes and the latency ratio.

    python scripts/compare_commits.py OLD [NEW] [--models example gpt2-tiny minilm mobilenetv2]
        [--target '{"kind": "llvm", "mcpu": "haswell", "num-cores": 2}'] [--rounds 5] [--write]

The default target is a CPU both commits know by name (old commits keyed
their shipped records by CPU name), so both builds read the same records.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from benchmarks_md import cpu_name, write_section  # noqa: E402

MODELS = Path.home() / ".cache" / "fluidml-tvm" / "models"

# The venv's editable install of this checkout finds fluidml_tvm before PYTHONPATH does: drop its finder.
UNEDITABLE = """
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
"""

EXPORT = UNEDITABLE + """
import json, sys
import onnx, fluidml_tvm
name, path, target = sys.argv[1:4]
if name == "example":
    from fluidml_tvm.example_model import build_example_model
    model = build_example_model()
else:
    model = onnx.load(sys.argv[4])
info, report = fluidml_tvm.export(model, path, target)
assert fluidml_tvm.__file__.startswith(sys.argv[5]), fluidml_tvm.__file__
print(json.dumps({"arena_bytes": report["main"].arena_bytes}))
"""

TIME = UNEDITABLE + """
import json, statistics, sys, time
import numpy as np
from fluidml_tvm import runtime
with runtime.load(sys.argv[1]) as m:
    rng = np.random.default_rng(0)
    x = []
    for s in m.manifest.inputs:
        if "int" in s.dtype:
            x.append(rng.integers(0, 100, s.shape).astype(s.dtype))
        else:
            x.append(rng.standard_normal(s.shape).astype(s.dtype))
    out = m(*x)
    for _ in range(3):
        m(*x)
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        m(*x)
        times.append(time.perf_counter() - start)
    first = out[0] if isinstance(out, (list, tuple)) else out
    np.save(sys.argv[3], np.asarray(first))
print(json.dumps({"seconds": statistics.median(times)}))
"""


def _run(tree: Path, code: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          cwd=tree)  # not this checkout: -c puts the working directory first on sys.path
    if proc.returncode != 0:
        raise RuntimeError(f"{tree.name}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new", nargs="?", default="HEAD")
    ap.add_argument("--models", nargs="+", default=["example", "gpt2-tiny", "minilm", "mobilenetv2"])
    ap.add_argument("--target", default='{"kind": "llvm", "mcpu": "haswell", "num-cores": 2}')
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="fluidml-compare-"))
    commits = {}
    for rev in (args.old, args.new):
        sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        tree = work / sha
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), sha], cwd=ROOT, check=True)
        commits[rev] = (sha, tree)
    rows = []
    try:
        for name in args.models:
            arena, seconds = {}, {rev: [] for rev in commits}
            for rev, (sha, tree) in commits.items():
                arena[rev] = _run(tree, EXPORT, name, work / f"{name}-{sha}", args.target,
                                  MODELS / f"{name}.onnx", tree)["arena_bytes"]
            for _ in range(args.rounds):
                for rev, (sha, tree) in commits.items():
                    seconds[rev].append(_run(tree, TIME, work / f"{name}-{sha}", args.repeat,
                                             work / f"{name}-{sha}.npy")["seconds"])
            old_out, new_out = (np.load(work / f"{name}-{commits[r][0]}.npy") for r in (args.old, args.new))
            err = float(np.abs(old_out - new_out).max() / max(np.abs(old_out).max(), 1e-30))
            assert err <= 1e-5, f"{name}: outputs differ (relative {err:.1e})"
            old_s, new_s = (statistics.median(seconds[r]) for r in (args.old, args.new))
            rows.append(f"| {name} | {arena[args.old] / 2**20:.3f} | {arena[args.new] / 2**20:.3f} "
                        f"| {old_s * 1e3:.3f} | {new_s * 1e3:.3f} | {new_s / old_s:.2f} | {err:.0e} |")
            print(rows[-1], flush=True)
    finally:
        for _, tree in commits.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    old_sha, new_sha = commits[args.old][0], commits[args.new][0]
    table = (f"`{old_sha}` against `{new_sha}`, target `{args.target}`, {args.rounds} fresh processes per commit "
             f"and model taking turns (median of {args.repeat} inferences each, then the median); "
             f"measured on {cpu_name()}.\n\n"
             f"| model | arena MiB {old_sha} | arena MiB {new_sha} | ms {old_sha} | ms {new_sha} | ratio | "
             "output rel. diff |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows))
    print(table)
    if args.write:
        write_section("refactor", "## Before and after the architecture work (issue 9)\n\n" + table)


if __name__ == "__main__":
    main()
