"""Per-kernel time of a loaded model: each kernel timed by itself on its real arguments.

Timing every call inside an inference through the VM's instrument hook
counts the hook (a Python call, about a microsecond each way) as kernel
time, which on a ~1 ms model is most of it.  Instead, each kernel is run
alone by TVM's C++ time evaluator on copies of the arguments it got in one
inference, the caches set before each run as an inference leaves them
(:func:`_caches_as_in_an_inference`); the VM's own work (dispatch,
allocation, shape checks) is measured by itself, with every kernel skipped;
and what neither explains is a row of its own.  Nothing is scaled to make the parts add up.
"""

from __future__ import annotations

import statistics
import struct
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import threads
from .library import tvm_ffi
from .model import _aligned

LEFTOVER = "(VM: dispatch, allocation, checks)"
UNEXPLAINED = "(not explained: kernels in sequence vs alone, noise)"
_SKIP_RUN = 1  # the VM instrument's answer that skips the call (TVM's kSkipRun)
_KDL_CPU = 1
ALONE_REPEATS = 21
_PREPROC = "fluidml_tvm.profile.as_in_an_inference"


@dataclass(frozen=True)
class KernelTime:
    """One kernel (or the VM's own work): calls and seconds per inference."""

    name: str
    calls: int
    seconds: float


@dataclass(frozen=True)
class Profile:
    """Kernels heaviest first, the VM's own time, and the measured latency (seconds per inference)."""

    kernels: list
    vm: KernelTime
    latency: float

    @property
    def explained(self) -> float:
        """Kernels plus the VM's time, each measured by itself."""
        return sum(k.seconds for k in self.kernels) + self.vm.seconds

    @property
    def rows(self) -> list:
        """The kernels, the VM, and the rest of the measured latency (negative when the parts exceed it)."""
        return self.kernels + [self.vm, KernelTime(UNEXPLAINED, 0, self.latency - self.explained)]


def profile(model, inputs, runs: int = 30) -> Profile:
    """Profile ``model`` on ``inputs``: every kernel timed alone, the VM's time with kernels skipped.

    The VM's time is an inference with every kernel skipped, less what the
    hook itself costs (an inference with a pass-through hook, less a plain
    one); the three are timed in turns, ``runs`` each, so drift hits all alike.
    """
    counts = defaultdict(int)  # hook invocations, and the VM's own calls, per inference

    def pass_through(*_):
        counts["pass"] += 1
        return 0

    def skip_kernels(_func, name, before_run, _ret, *_args):
        counts["skip"] += 1
        if not before_run:
            return 0
        if str(name).startswith("vm."):
            counts["vm"] += 1
            return 0
        return _SKIP_RUN  # and the VM does not call back after a skipped call

    model(*inputs)
    times: dict = {None: [], pass_through: [], skip_kernels: []}
    try:
        for _ in range(runs):
            for hook, samples in times.items():
                model.set_instrument(hook)
                model(*inputs)  # the VMs take a new hook on their next call
                start = time.perf_counter()
                model(*inputs)
                samples.append(time.perf_counter() - start)
    finally:
        model.set_instrument(None)
    latency, hooked, vm_only = (statistics.median(t) for t in times.values())
    per_hook = (hooked - latency) / (counts["pass"] / (2 * runs))
    vm_seconds = vm_only - per_hook * counts["skip"] / (2 * runs)
    vm = KernelTime(LEFTOVER, counts["vm"] // (2 * runs), max(vm_seconds, 0.0))
    return Profile(_kernels_alone(model, inputs), vm, latency)


def kernel_times(model, inputs, runs: int = 20) -> list[KernelTime]:
    """:func:`profile`'s rows: the kernels heaviest first, then the VM's own time."""
    return profile(model, inputs, runs).rows


def _kernels_alone(model, inputs) -> list[KernelTime]:
    seconds: dict = defaultdict(float)
    calls: dict = defaultdict(int)
    evaluator = tvm_ffi.get_global_func("runtime.RPCTimeEvaluator")
    modules = [model._library, *model._library.imports]

    def time_alone(_func, name, before_run, _ret, *args):
        name = str(name)
        if before_run and not name.startswith("vm."):
            # Copies: the arena reuses these buffers later in the inference, and a kernel
            # that writes over its input must not change what the rest of the run reads.
            copies = [_copy(a) for a in args]
            module = next(m for m in modules if m.implements_function(name))
            # One run per repeat: run back to back, a kernel finds its weights in the core's
            # cache, which it never does in an inference (warm: 0.73-0.84 of the latency;
            # flushed to memory: 1.10-1.27, scripts/bench_profile.py).
            timer = evaluator(module, name, _KDL_CPU, 0, 1, ALONE_REPEATS, 0, 0, 0, 1, 0, preprocessor)
            raw = bytes(timer(*copies))
            seconds[name] += statistics.median(struct.unpack(f"{len(raw) // 8}d", raw))
            calls[name] += 1
        return 0

    with _caches_as_in_an_inference() as preprocessor:
        model.set_instrument(time_alone)
        try:
            model(*inputs)
        finally:
            model.set_instrument(None)
    rows = [KernelTime(n, calls[n], seconds[n]) for n in seconds]
    return sorted(rows, key=lambda r: -r.seconds)


def _private_cache_bytes() -> int:
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if int((index / "level").read_text()) <= 2:
                text = (index / "size").read_text().strip()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
                sizes.append(int(text.rstrip("KM")) * scale)
        except (OSError, ValueError):
            continue
    return max(sizes, default=2 << 20)


def _evict(scratch):
    scratch[::64] += 1


@contextmanager
def _caches_as_in_an_inference():
    """Register the time evaluator's preprocessor that leaves the caches as an inference would.

    In an inference a kernel's input was just written by its producer (in the
    core's cache) while its weights were last read an inference ago (in the
    shared cache at best): before each run every pool thread overwrites its
    core's private caches, then the first argument is read back.
    """
    count = threads.use_all_cores()
    scratch = [np.zeros(2 * _private_cache_bytes(), np.uint8) for _ in range(count)]
    with ThreadPoolExecutor(count) as pool:

        def preprocess(*args):
            list(pool.map(_evict, scratch))
            if isinstance(args[0], tvm_ffi.Tensor):
                np.from_dlpack(args[0]).sum()

        tvm_ffi.register_global_func(_PREPROC, preprocess, override=True)
        yield _PREPROC


def _copy(value):
    if isinstance(value, tvm_ffi.Tensor):
        return tvm_ffi.from_dlpack(_aligned(np.array(np.from_dlpack(value), copy=True)))
    return value
