"""``fluidml-tvm bench``: build a model's artifact and time it here (lean runtime) or on a board through an RPC tracker.

Locally the artifact runs in a fresh process with :mod:`fluidml_tvm.runtime`
(no TVM compiler), which also gives the peak memory of a deployment. On a
board, ``model.so`` and the weights are uploaded once to an RPC server under
the key and ``main`` is timed there with the remote VM's ``time_evaluator``.
Either way one output is compared with ONNX Runtime on the host. Timings on an
emulated (QEMU) board are no measure of any real device.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: Largest error of the compared output, relative to its largest magnitude, that still counts as a match
#: (fast exp/erf/tanh and reordered float sums stay well under it).
TOLERANCE = 1e-3


@dataclass(frozen=True)
class Timing:
    """Latency of one ``main`` call over ``repeat`` timed runs after ``warmup`` untimed ones, in milliseconds."""

    where: str
    repeat: int
    min_ms: float
    p10_ms: float
    median_ms: float
    p90_ms: float
    max_ms: float
    peak_rss_mb: float | None  # the whole process (Python, numpy, runtime, model); None over RPC
    max_rel_error: float  # of the first output against ONNX Runtime

    @classmethod
    def of(cls, where: str, seconds, peak_rss_mb, error) -> Timing:
        ms = np.asarray(seconds, dtype=float) * 1e3
        p10, median, p90 = np.percentile(ms, [10, 50, 90])
        return cls(where, len(ms), float(ms.min()), float(p10), float(median), float(p90), float(ms.max()),
                   peak_rss_mb, float(error))

    def row(self) -> str:
        rss = f"{self.peak_rss_mb:8.1f}" if self.peak_rss_mb is not None else "       -"
        return (f"{self.where:<28} {self.repeat:>6} {self.min_ms:9.3f} {self.p10_ms:9.3f} {self.median_ms:9.3f} "
                f"{self.p90_ms:9.3f} {self.max_ms:9.3f} {rss} {self.max_rel_error:10.1e}")


HEADER = (f"{'where':<28} {'repeat':>6} {'min ms':>9} {'p10 ms':>9} {'median':>9} {'p90 ms':>9} {'max ms':>9} "
          f"{'peak MB':>8} {'vs ORT':>10}")


def add_bench_parser(subparsers):
    """Add the ``bench`` subcommand to ``fluidml-tvm``'s subparsers."""
    # Here, not at the top: the lean-runtime child runs this module and must not import TVM.
    from .tuning.cli import int_at_least

    p = subparsers.add_parser(
        "bench", help="build MODEL.onnx and time it here or on a board through an RPC tracker",
        description="Build MODEL.onnx for --target and time `main`: without a tracker here, in a fresh process "
                    "with the lean runtime (peak memory too); with --rpc-tracker/--rpc-key on a board's RPC "
                    "server (model.so and weights uploaded once). One output is compared with ONNX Runtime. "
                    "Timings on an emulated board (QEMU) say nothing about a real one.")
    p.add_argument("model", help="path of an ONNX model")
    p.add_argument("--target", default="host", help="TVM target or preset, as for optimize (default host)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="static shape for an input with symbolic dimensions (repeatable)")
    p.add_argument("--db", metavar="DIR", help="a tuning database to build with (default: the shipped one, if any)")
    p.add_argument("--repeat", type=int_at_least(1), default=50, metavar="N", help="timed runs (50)")
    p.add_argument("--warmup", type=int_at_least(0), default=3, metavar="N", help="untimed runs first (3)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="run on a board behind this TVM RPC tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="the board's key at the tracker")
    p.add_argument("--rpc-timeout", type=int_at_least(1), default=600, metavar="SEC",
                   help="seconds the whole remote session may take (600)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.set_defaults(func=run_bench)
    return p


def run_bench(args) -> int:
    """Run ``fluidml-tvm bench``; 0 when the output matches ONNX Runtime, 1 when not, 2 on bad input."""
    from .frontend import ModelImportError, parse_input_shapes
    from .targets import UnknownTargetError
    from .tuning.rpc import TrackerUnreachable

    try:
        timing = bench(args.model, args.target, input_shapes=parse_input_shapes(args.input_shape), db=args.db,
                       repeat=args.repeat, warmup=args.warmup, tracker=args.rpc_tracker, key=args.rpc_key,
                       timeout=args.rpc_timeout, json_path=args.json)
    except (ModelImportError, UnknownTargetError, TrackerUnreachable, BenchError, ValueError) as err:
        print(f"fluidml-tvm: error: {err}", file=sys.stderr)
        return 2
    print(HEADER)
    print(timing.row())
    if args.json:
        print(f"wrote {args.json}")
    if timing.max_rel_error > TOLERANCE:
        print(f"fluidml-tvm: the output differs from ONNX Runtime: max error {timing.max_rel_error:.1e} of its "
              f"largest magnitude (tolerance {TOLERANCE:g})", file=sys.stderr)
        return 1
    return 0


class BenchError(RuntimeError):
    """The artifact could not be run where asked (one line, naming the flag or the device)."""


def bench(model, target="host", *, input_shapes=None, db=None, repeat=50, warmup=3, tracker=None, key=None,
          timeout=600, json_path=None) -> Timing:
    """Build ``model`` for ``target`` and time it here, or on ``key`` at ``tracker`` (``"HOST:PORT"``)."""
    from .frontend import load_onnx, random_tensors
    from .targets import cross_compiler
    from .tuning.rpc import RemoteDevice

    proto = load_onnx(model)  # a clear error for a bad model before anything starts
    device = None
    if tracker or key:
        device = RemoteDevice.parse(tracker or "", key or "", session_timeout_sec=timeout)
        if device.count_servers() == 0:
            raise BenchError(f"--rpc-key {key}: no RPC server '{key}' is registered at tracker {tracker} "
                             f"(on the board: fluidml-tvm rpc server --tracker HOST:PORT --key {key} --host 0.0.0.0)")
    elif cross_compiler(target) is not None:
        raise BenchError(f"--target {target} builds for another machine: give --rpc-tracker and --rpc-key to "
                         "run it on the board")
    if json_path:  # a build takes minutes: find out now that the result can be written
        try:
            Path(json_path).open("w").close()
        except OSError as err:
            raise ValueError(f"--json {json_path}: cannot write there ({err.strerror or err})") from None

    from .compiler import export

    with tempfile.TemporaryDirectory(prefix="fluidml-bench-") as tmp:
        print(f"building {model} for {target} ...", file=sys.stderr, flush=True)
        info, _ = export(model, Path(tmp) / "artifact", target, input_shapes=input_shapes, database=db,
                         fcompile=cross_compiler(target))
        inputs = random_tensors([(s.name, s.shape, s.dtype) for s in info.manifest.inputs])
        reference = _onnxruntime_output(proto, inputs)
        if device is None:
            seconds, output, rss = _run_local(info.directory, inputs, repeat, warmup, Path(tmp))
            where = "here (lean runtime)"
        else:
            seconds, output = _run_remote(device, info, inputs, repeat, warmup)
            rss, where = None, f"rpc '{device.key}'"
    timing = Timing.of(where, seconds, rss, _relative_error(output, reference))
    if json_path:
        Path(json_path).write_text(json.dumps({"model": str(model), "target": str(target), **asdict(timing)},
                                              indent=2) + "\n")
    return timing


def _run_local(artifact: Path, inputs: dict, repeat: int, warmup: int, scratch: Path):
    """``(seconds per run, first output, peak RSS in MB)`` from a fresh process running the lean runtime."""
    np.savez(scratch / "inputs.npz", **inputs)
    proc = subprocess.run([sys.executable, "-c", "from fluidml_tvm.bench import _child; _child()", str(artifact),
                           str(scratch), str(repeat), str(warmup)], capture_output=True, text=True, check=False)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"running {artifact.name} with the lean runtime failed: {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["compiler_loaded"]:  # the number would include the compiler's 250 MB
        raise BenchError("the lean runtime imported the TVM compiler: its peak memory is not a deployment's")
    return result["seconds"], np.load(scratch / "output.npy"), result["peak_rss_kb"] / 1024


def _child() -> None:
    """In the fresh process: load, warm up, time, and report what a deployment would see (argv from _run_local)."""
    import time

    from . import runtime

    artifact, scratch, repeat, warmup = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    inputs = list(np.load(scratch / "inputs.npz").values())
    seconds = []
    with runtime.load(artifact) as model:
        for _ in range(warmup):
            model(*inputs)
        for _ in range(repeat):
            start = time.perf_counter()
            out = model(*inputs)
            seconds.append(time.perf_counter() - start)
    np.save(scratch / "output.npy", out[0] if isinstance(out, tuple) else out)
    print(json.dumps({"seconds": seconds, "peak_rss_kb": _peak_rss_kb(), "compiler_loaded": "tvm" in sys.modules}))


def _peak_rss_kb() -> int:
    """This process's peak resident memory: VmHWM, which a new program starts afresh (getrusage's ru_maxrss
    keeps the parent's peak across fork and exec: the compiler's, here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource  # not Linux: the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_remote(device, info, inputs: dict, repeat: int, warmup: int):
    """``(seconds per run, first output)`` of ``main`` on a server under the device's key."""
    import tvm
    from tvm import relax

    name = info.manifest.library
    try:
        remote = device.connect()
        remote.upload(str(info.directory / name))
        dev = remote.cpu()
        vm = relax.VirtualMachine(remote.load_module(name), dev)
        # Inputs and weights are copied to the board once; every timed run reuses them there.
        args = [tvm.runtime.tensor(x, dev) for x in inputs.values()]
        args += [tvm.runtime.tensor(w, dev) for w in info.weights]
        out = vm["main"](*args)
        output = (out[0] if isinstance(out, (list, tuple, tvm.ir.Array)) else out).numpy()
        for _ in range(max(warmup - 1, 0)):  # the call above was the first warm-up run
            vm["main"](*args)
        result = vm.time_evaluator("main", dev, number=1, repeat=repeat)(*args)
    except (RuntimeError, OSError, ValueError) as err:  # TVM's errors (RPCError, ...) are RuntimeErrors
        why = next((line for line in str(err).splitlines()[::-1] if line.strip()), type(err).__name__).strip()
        raise BenchError(f"the RPC device {device}: {why[:300]}") from None
    return list(result.results), output


def _onnxruntime_output(proto, inputs: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def _relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    if output.shape != reference.shape:
        raise BenchError(f"the first output has shape {output.shape}, ONNX Runtime's {reference.shape}")
    scale = max(float(np.abs(reference).max()), 1e-6)
    return float(np.abs(output.astype(np.float64) - reference).max()) / scale
