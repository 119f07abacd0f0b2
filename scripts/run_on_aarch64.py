"""End-to-end check on the emulated aarch64 board: cross-compile, stage, run, compare.

    scripts/setup_aarch64_board.sh                 # once
    .venv/bin/python scripts/run_on_aarch64.py [MODEL.onnx] [--out DIR]

Without a model a small built-in MLP is used. The artifact is built for
``{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}`` and linked with
``aarch64-linux-gnu-gcc``; the same model is built for the host as the reference. The
outputs agree to float tolerance, not bit for bit: different instructions (NEON vs AVX2,
fused multiply-add) round differently.

What a board needs (all staged under DIR/board, besides the board's own Python):

* Python 3.11 with numpy and apache-tvm-ffi (the aarch64 wheels);
* ``libtvm_runtime.so`` from the aarch64 apache-tvm wheel, found through
  ``FLUIDML_TVM_RUNTIME_LIB`` (the rest of that wheel, the compiler, is not needed);
* ``fluidml_tvm/runtime/`` (plain Python; an empty ``fluidml_tvm/__init__.py`` beside it);
* the artifact directory: ``model.so``, ``weights.bin``, ``manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
BOARD = Path(os.environ.get("FLUIDML_AARCH64_BOARD", Path.home() / ".cache/fluidml-tvm/aarch64"))
TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}

_ON_BOARD = """
import json, platform, sys, time, numpy as np
t = time.time()
from fluidml_tvm import runtime
model = runtime.load(sys.argv[1])
out = model(*np.load(sys.argv[2]).values())
np.savez(sys.argv[3], *(out if isinstance(out, tuple) else [out]))
print(json.dumps({"machine": platform.machine(), "tvm_imported": "tvm" in sys.modules,
                  "seconds": round(time.time() - t, 1)}))
"""


def _model(onnx_path: Path | None):
    """(IRModule with params as inputs, params, inputs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from fluidml_tvm.frontend import random_inputs

    rng = np.random.default_rng(0)
    if onnx_path is None:
        w1 = rng.standard_normal((64, 128), "float32")
        w2 = rng.standard_normal((32, 128), "float32")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)],
            "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])],
            [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    else:
        model = onnx.load(str(onnx_path))
    mod, params = relax.frontend.detach_params(from_onnx(model, keep_params_in_input=True))
    return mod, params["main"], list(random_inputs(model).values())


def _stage(out: Path) -> Path:
    """Copy only the deploy side of the package: the board has no tvm to import."""
    package = out / "board" / "fluidml_tvm"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(ROOT / "fluidml_tvm" / "runtime", package / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text("")
    return package.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, help="ONNX file (default: a small MLP)")
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache/fluidml-tvm/aarch64-run")
    args = parser.parse_args()
    if not (BOARD / "READY").is_file():
        print(f"no board at {BOARD}: run scripts/setup_aarch64_board.sh", file=sys.stderr)
        return 2

    import tvm
    from tvm import relax
    from tvm.support.cc import cross_compiler

    from fluidml_tvm.artifact import export_artifact

    mod, params, inputs = _model(args.model)
    board_art = export_artifact(mod, params, TARGET, args.out / "artifact",
                                fcompile=cross_compiler("aarch64-linux-gnu-gcc"))
    host = export_artifact(mod, params, "llvm", args.out / "host-artifact")
    assert host.manifest.weights == board_art.manifest.weights  # same weights (the targets differ)
    vm = relax.VirtualMachine(host.executable, tvm.cpu())
    ref = vm["main"](*[tvm.runtime.tensor(x) for x in inputs],
                     *[tvm.runtime.tensor(w) for w in host.weights])
    ref = [ref] if isinstance(ref, tvm.runtime.Tensor) else list(ref)
    np.savez(args.out / "inputs.npz", *inputs)

    site = _stage(args.out)
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [str(BOARD / "python"), "-c", _ON_BOARD, str(args.out / "artifact"),
         str(args.out / "inputs.npz"), str(args.out / "board-out.npz")],
        capture_output=True, text=True, env=env, check=False,
    )
    if run.returncode:
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    got = list(np.load(args.out / "board-out.npz").values())
    diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref, strict=True))
    ok = seen["machine"] == "aarch64" and not seen["tvm_imported"] and all(
        np.allclose(g, r.numpy(), rtol=1e-4, atol=1e-4) for g, r in zip(got, ref)
    )
    print(
        f"board {seen['machine']}: load + run {seen['seconds']} s under QEMU, tvm imported: "
        f"{seen['tvm_imported']}, max abs diff vs host build {diff:.2e} -> {'OK' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
