"""Deployed peak memory: ONNX Runtime vs stock TVM vs fluidml-tvm's lean runtime.

Each number is the peak RSS (VmHWM) of a fresh process that loads the model and runs one
inference:

* ``onnxruntime``  InferenceSession on the CPU provider.
* ``stock tvm``    ``import tvm``; the library built by ``tvm.compile`` with the default
                   pipeline and the weights bound as constants; ``relax.VirtualMachine``.
* ``lean``         ``fluidml_tvm.runtime.load`` of a ``fluidml_tvm.export`` directory (FluidML pipeline)
                   (tvm_ffi + libtvm_runtime.so, weights memory-mapped).

The reference for the lean runtime is ``baseline + weights + arena``: the peak RSS of a
process that has loaded the runtime but no model, the weights file size, and the
activation memory. The arena is counted as FluidML counts it, in two parts: the VM's
storage (the sum of ``vm.builtin.alloc_storage`` sizes in one call) and kernel scratch
(buffers a kernel allocates itself through ``TVMBackendAllocWorkspace``, outside the VM's
plan, kept by TVM's workspace pool: the largest per-kernel total, read from the LLVM IR).
Pages
of the weights file that a run never reads (most of an embedding table) never become
resident (the load-time crc32 check reads the file with pread, not through the mapping),
so the lean runtime is also measured with every weight page touched through the model's
mapping. The lean output must equal the in-process build's output bit for bit.

    .venv/bin/python scripts/bench_deploy_memory.py ~/.cache/fluidml-tvm/models/minilm.onnx

Builds are cached under ~/.cache/fluidml-tvm/deploy-bench/<model>/ (``--rebuild``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "scripts"))
from benchmarks_md import write_section  # noqa: E402

CACHE = Path.home() / ".cache" / "fluidml-tvm" / "deploy-bench"
MB = 1 << 20

_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024"
_INPUTS = "inputs = list(np.load(sys.argv[2]).values())"

# Each child prints one JSON line; argv: build directory, inputs .npz, outputs .npz.
CHILDREN = {
    "baseline": f"""
import sys, json, numpy as np
from fluidml_tvm.runtime.library import load_runtime_library
load_runtime_library()
print(json.dumps({{"peak": {_PEAK}}}))
""",
    "onnxruntime": f"""
import sys, json, numpy as np, onnxruntime as ort
{_INPUTS}
s = ort.InferenceSession(sys.argv[4], providers=["CPUExecutionProvider"])
out = s.run(None, dict(zip([i.name for i in s.get_inputs()], inputs)))
np.savez(sys.argv[3], *out)
print(json.dumps({{"peak": {_PEAK}}}))
""",
    "stock tvm": f"""
import sys, json, numpy as np, tvm
from tvm import relax
{_INPUTS}
vm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1] + "/stock.so"), tvm.cpu())
out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
out = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
np.savez(sys.argv[3], *[o.numpy() for o in out])
print(json.dumps({{"peak": {_PEAK}}}))
""",
    "lean": f"""
import sys, json, numpy as np
from fluidml_tvm import runtime
{_INPUTS}
model = runtime.load(sys.argv[1] + "/lean")
if sys.argv[5] == "resident":  # one byte of every page of every weight, through the mapping
    touched = sum(int(np.from_dlpack(w).reshape(-1).view(np.uint8)[::4096].sum()) for w in model._weights)
out = model(*inputs)
peak = {_PEAK}
np.savez(sys.argv[3], *(out if isinstance(out, tuple) else [out]))
arena = []
def count(func, name, before, ret, *args):
    if before and str(name) == "vm.builtin.alloc_storage":
        arena.append(int(args[1][0]))
    return 0
model.set_instrument(count)
model(*inputs)
print(json.dumps({{"peak": peak, "arena": sum(arena)}}))
""",
}


def build(onnx_path: Path, out: Path, rebuild: bool) -> None:
    """Write out/stock.so (weights embedded, default pipeline) and out/lean (an artifact)."""
    stat = onnx_path.stat()
    stamp = f"v5 {onnx_path.resolve()} {stat.st_size} {stat.st_mtime_ns}"  # bump v on changes
    if not rebuild and (out / "stamp").is_file() and (out / "stamp").read_text() == stamp:
        return
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    import fluidml_tvm
    from fluidml_tvm.frontend import random_inputs

    model = onnx.load(str(onnx_path))
    target = tvm.target.Target("llvm")
    out.mkdir(parents=True, exist_ok=True)
    tvm.compile(
        from_onnx(model), target, relax_pipeline=relax.get_default_pipeline(target)
    ).export_library(str(out / "stock.so"))
    info, _ = fluidml_tvm.export(model, out / "lean", target)
    np.savez(out / "inputs.npz", *list(random_inputs(model).values()))
    # The in-process build's output, for the bit-exactness check.
    vm = relax.VirtualMachine(info.executable, tvm.cpu())
    inputs = [tvm.runtime.tensor(x) for x in np.load(out / "inputs.npz").values()]
    ref = vm["main"](*inputs, *[tvm.runtime.tensor(w) for w in info.weights])
    ref = [ref] if isinstance(ref, tvm.runtime.Tensor) else list(ref)
    np.savez(out / "reference.npz", *[r.numpy() for r in ref])
    llvm_ir = info.executable.mod.imports[0].inspect_source("ll")
    (out / "kernel_scratch").write_text(str(_kernel_scratch(llvm_ir)))
    (out / "stamp").write_text(stamp)


def _kernel_scratch(llvm_ir: str) -> int:
    """Largest total of TVMBackendAllocWorkspace sizes in one function, in 4 KB pages."""
    # Workspace calls look like `call ptr %N(i32 dev_type, i32 %dev_id, i64 nbytes, i32, i32)`.
    call = re.compile(r"call ptr %\w+\(i32 \d+, i32 %dev_id, i64 (\d+), i32 \d+, i32 \d+\)")
    pages = (
        sum(-(-int(n) // 4096) * 4096 for n in call.findall(function))
        for function in llvm_ir.split("\ndefine ")
    )
    return max(pages, default=0)


def measure(kind: str, out: Path, onnx_path: Path, mode: str = "") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILDREN[kind], str(out), str(out / "inputs.npz"),
         str(out / f"out-{kind.replace(' ', '-')}.npz"), str(onnx_path), mode],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if result.returncode:
        raise RuntimeError(f"{kind} child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="ONNX files")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    rows = []
    for onnx_path in args.models:
        out = CACHE / onnx_path.stem
        build(onnx_path, out, args.rebuild)
        peaks = {kind: measure(kind, out, onnx_path) for kind in CHILDREN}
        resident = measure("lean", out, onnx_path, "resident")["peak"]
        weights = json.loads((out / "lean" / "manifest.json").read_text())["weights_bytes"]
        baseline, storage = peaks["baseline"]["peak"], peaks["lean"]["arena"]
        scratch = int((out / "kernel_scratch").read_text())
        reference = baseline + weights + storage + scratch
        lean = peaks["lean"]["peak"]
        ref_out = list(np.load(out / "reference.npz").values())
        lean_out = list(np.load(out / "out-lean.npz").values())
        ort_out = list(np.load(out / "out-onnxruntime.npz").values())
        identical = all(np.array_equal(a, b) for a, b in zip(ref_out, lean_out, strict=True))
        ort_diff = max(float(np.abs(a - b).max()) for a, b in zip(ort_out, lean_out))
        rows.append(
            f"| {onnx_path.stem} | {weights / MB:.1f} | {storage / MB:.1f} | {scratch / MB:.1f} "
            f"| {baseline / MB:.1f} "
            f"| {peaks['onnxruntime']['peak'] / MB:.1f} | {peaks['stock tvm']['peak'] / MB:.1f} "
            f"| {lean / MB:.1f} | {resident / MB:.1f} | {reference / MB:.1f} "
            f"| {max(lean, resident) / reference:.3f} | {resident / peaks['onnxruntime']['peak']:.2f} "
            f"| {'yes' if identical else 'NO'} | {ort_diff:.1e} |"
        )
        print(rows[-1], flush=True)
    table = (
        "| model | weights MB | VM storage MB | kernel scratch MB | runtime baseline MB "
        "| ONNX Runtime peak MB "
        "| stock TVM peak MB | lean peak MB | lean, all weights resident MB "
        "| baseline+weights+arena MB | worst lean / reference | lean resident / ORT | lean == in-process "
        "| max abs diff vs ORT |\n" + "|" + " --- |" * 14 + "\n" + "\n".join(rows)
    )
    print(table)
    if args.write:
        write_section("bench_deploy_memory", table)


if __name__ == "__main__":
    main()
