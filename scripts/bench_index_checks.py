"""What the index checks cost: each model built with and without CheckIndices, timed in turns.

Both builds are the full fluidml-tvm pipeline, differing only in ``index_checks``;
they run on the same inputs, in turns, each keeping its best round median
(``best_round_medians``), so load on the shared CPU spoils a round of both
rather than one column. ``--clock cpu`` (the default) times each call in process
CPU seconds on one TVM thread, which other processes' load barely moves; ``--clock
wall`` times wall seconds on all cores (noisy on a loaded machine).

    python scripts/bench_index_checks.py [NAME ...] [--target x86-64] [--clock cpu|wall]
        [--repeat 60] [--rounds 6] [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import model_zoo  # noqa: E402
from bench_kernels import interleaved, vm_timer  # noqa: E402
from benchmarks_md import write_section  # noqa: E402

MODELS = ["minilm", "gpt2-tiny"]


def check_kernels(executable_module) -> int:
    """How many index-check kernels a planned module calls."""
    from fluidml_tvm.analysis.gather_indices import CHECK_ATTR

    return sum(1 for f in executable_module.functions.values() if f.attrs is not None and CHECK_ATTR in f.attrs)


def check_kernel_seconds(executable, inputs) -> float:
    """Seconds per inference the check kernels take, from the VM's per-call hook (which adds ~1 us a call)."""
    import tvm
    from tvm import relax

    from fluidml_tvm.runtime.profile import kernel_times

    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(x) for x in inputs]

    class _Model:
        def __call__(self, *_):
            return vm["main"](*args)

        set_instrument = staticmethod(vm.set_instrument)

    return sum(k.seconds for k in kernel_times(_Model(), args, runs=50) if k.name.startswith("checked_indices"))


def cpu_timer(executable, inputs):
    """``timer(n)``: the process CPU seconds of each of ``n`` calls of ``main``, after one warm-up call."""
    import time

    import tvm
    from tvm import relax

    main = relax.VirtualMachine(executable, tvm.cpu())["main"]
    args = [tvm.runtime.tensor(x) for x in inputs]
    main(*args)

    def timer(n):
        seconds = []
        for _ in range(n):
            start = time.process_time()
            main(*args)
            seconds.append(time.process_time() - start)
        return seconds

    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--target", default="x86-64")
    parser.add_argument("--repeat", type=int, default=60, help="runs per system, over all rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="cpu: process CPU time on one thread (robust to load); wall: wall time, all cores")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    if args.clock == "cpu":
        os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool
    timer = cpu_timer if args.clock == "cpu" else vm_timer

    import onnx

    import fluidml_tvm
    from fluidml_tvm.targets import resolve_target

    target = resolve_target(args.target)
    rows = []
    for name in args.models:
        proto = onnx.load(str(model_zoo.model_path(name)))
        inputs = list(model_zoo.example_inputs(name).values())
        checked = fluidml_tvm.compile(proto, target, report=False)
        unchecked = fluidml_tvm.compile(proto, target, report=False, index_checks=False)
        seconds = interleaved({"unchecked": timer(unchecked.executable, inputs),
                               "checked": timer(checked.executable, inputs)}, args.repeat, args.rounds)
        cost = seconds["checked"] / seconds["unchecked"] - 1
        kernel = check_kernel_seconds(checked.executable, inputs)
        rows.append(f"| {name} | {check_kernels(checked.module)} | {kernel * 1e6:.1f} "
                    f"({kernel / seconds['checked']:.2%}) | {seconds['unchecked'] * 1e3:.3f} "
                    f"| {seconds['checked'] * 1e3:.3f} | {cost:+.1%} |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"Target `{args.target}`; {'process CPU time, one thread' if args.clock == 'cpu' else 'wall time, all cores'}; "
        f"best of {args.rounds} round medians, the two builds in turns.",
        "",
        "*check kernels us*: their time per inference from the VM's per-call hook (an upper",
        "bound: the hook adds about a microsecond a call), and its share of the checked latency.",
        "",
        "| model | check kernels | check kernels us (share) | unchecked ms | checked ms | cost (end to end) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    if args.write:
        write_section("bench_index_checks", table)


if __name__ == "__main__":
    main()
