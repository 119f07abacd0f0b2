"""How honest the per-kernel profile is on a ~1 ms model: kernels alone + the VM's time vs the latency.

Builds the example encoder (fluidml_tvm/example_model.py), then in fresh
processes, ``--rounds`` times per thread count, profiles it
(:func:`fluidml_tvm.runtime.profile.profile`) and reports the medians.

    python scripts/bench_profile.py [--rounds 5] [--threads 1 2] [--write]
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

CHILD = """
import json, sys
from fluidml_tvm import runtime
from fluidml_tvm.frontend import random_tensors
from fluidml_tvm.runtime.profile import profile
with runtime.load(sys.argv[1]) as m:
    x = list(random_tensors([(s.name, s.shape, s.dtype) for s in m.manifest.inputs]).values())
    p = profile(m, x)
print(json.dumps({"latency": p.latency, "kernels": sum(k.seconds for k in p.kernels), "vm": p.vm.seconds}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import onnx

    import fluidml_tvm
    from fluidml_tvm.example_model import build_example_model

    work = Path(tempfile.mkdtemp())
    onnx.save(build_example_model(), work / "model.onnx")
    fluidml_tvm.export(str(work / "model.onnx"), work / "artifact", "host")
    rows = []
    for threads in args.threads:
        env = {**os.environ, "TVM_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        results = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(work / "artifact")], env=env,
                                             capture_output=True, text=True, check=True).stdout)
                   for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        ratios = sorted((r["kernels"] + r["vm"]) / r["latency"] for r in results)
        rows.append(f"| {threads} | {med['latency'] * 1e3:.3f} | {med['kernels'] * 1e3:.3f} | {med['vm'] * 1e3:.3f} "
                    f"| {statistics.median(ratios):.2f} | {ratios[0]:.2f}–{ratios[-1]:.2f} |")
        print(rows[-1], flush=True)
    table = (f"The example encoder (~1 ms), {args.rounds} fresh processes per row, medians (and the range of the ratio); "
             f"measured on {cpu_name()}, shared with other work.\n\n"
             "| threads | latency ms | kernels alone ms | VM ms | (kernels + VM) / latency | its range |\n"
             "| ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows))
    print(table)
    if args.write:
        write_section("profile", "## Per-kernel profile: what it explains\n\n" + table)


if __name__ == "__main__":
    main()
