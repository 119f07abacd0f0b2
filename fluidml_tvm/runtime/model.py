"""A deployed model: the compiled library run by TVM's Relax VM, its weights mapped once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .files import load_library, open_directory
from .library import load_runtime_library, tvm_ffi
from .errors import ArtifactError
from .manifest import ALIGNMENT, FINGERPRINT_FUNCTION, Manifest
from .threads import usable_cpus, use_all_cores
from .weights import open_weights

_KDL_CPU = 1
#: The VM's allocator kinds (tvm.runtime.vm.VirtualMachine.NAIVE_ALLOCATOR / POOLED_ALLOCATOR).
ALLOCATORS = {"naive": 1, "pooled": 2}


class Model:
    """A model loaded from an artifact directory; call it with numpy arrays.

    Loading checks the manifest (every field, and that they hash to its fingerprint), the
    weights file (size, header, each tensor's crc32 unless ``verify=False``) and the
    library (its sha256, before it is loaded through the descriptor just hashed, then the
    fingerprint it carries) before anything runs. Weights stay in the memory-mapped file,
    held once, and are passed to every call by reference. A file replaced on disk after
    load does not affect the model (it keeps the old inode); a file truncated in place is
    out of scope (its mapped pages past the new end fault).

    Threads: a model may be called from any number of threads at once. Each concurrent
    call runs on its own Relax VM (a VM is not thread-safe), all made from the one loaded
    library and passing the same mapped weights; a VM is made when every existing one is
    busy, at most ``max_concurrency`` of them (default: the usable CPUs), and reused after.
    ``max_concurrency=1`` serializes calls on one VM (the least memory: one activation
    arena). To run calls in parallel, call from several threads; each calling thread runs
    kernels on its own TVM thread pool of ``TVM_NUM_THREADS`` threads, so for throughput
    set ``TVM_NUM_THREADS`` to cores / calling threads (e.g. 1 with one thread per core).

    ``allocator="pooled"`` (default) allocates the activation storage in the first call and
    reuses the same blocks in every later call; ``"naive"`` mallocs and frees it in every
    call (its pages are faulted in again each time, and glibc's heap creeps by a few MB).
    Kernels run on every usable CPU unless ``TVM_NUM_THREADS`` is set (:mod:`.threads`).
    """

    def __init__(self, directory: str | Path, *, verify: bool = True, allocator: str = "pooled",
                 max_concurrency: int | None = None):
        if allocator not in ALLOCATORS:
            raise ValueError(f"allocator must be one of {sorted(ALLOCATORS)}, got {allocator!r}")
        self.directory = directory = Path(directory)
        dir_fd = open_directory(directory)
        try:
            self.manifest = manifest = Manifest.load(directory, dir_fd)
            weights = []
            use_all_cores()
            load_runtime_library()
            try:
                if manifest.weights_file is not None:
                    weights = open_weights(
                        manifest.weights_file, manifest.weights, manifest.fingerprint,
                        manifest.weights_bytes, verify=verify, dir_fd=dir_fd,
                    )
                # Not kept alive in tvm_ffi's globals: the library (and any weights embedded
                # in it) goes away with this object instead of living until the process exits.
                library = load_library(dir_fd, manifest.library, manifest.library_sha256,
                                       tvm_ffi.get_global_func("ffi.Module.load_from_file.so"))
            except ArtifactError as err:  # it names the file; say in which artifact
                raise ArtifactError(f"{directory}: {err}") from None
        finally:
            os.close(dir_fd)
        self._library, self._allocator = library, ALLOCATORS[allocator]
        self._instrument = self._no_instrument = object()  # the callback every VM should have
        self._has: dict[int, object] = {}  # id(vm) -> the callback it has
        vm = self._new_vm(library)
        try:
            stamped = str(vm[FINGERPRINT_FUNCTION]())
        except Exception as err:  # a library not built by export_artifact
            raise ArtifactError(f"library {manifest.library} has no build fingerprint") from err
        if stamped != manifest.fingerprint:
            raise ArtifactError(
                f"library {manifest.library} is from another build: fingerprint {stamped[:12]}..., "
                f"the manifest says {manifest.fingerprint[:12]}..."
            )
        self._weights = [tvm_ffi.from_dlpack(w, require_alignment=ALIGNMENT) for w in weights]
        self._idle = [vm]  # VMs no call is using
        self._vms = 1
        self._busy = 0
        self._closed = False
        self._max = max_concurrency or usable_cpus()
        self._changed = threading.Condition()

    def _new_vm(self, library):
        vm = library["vm_load_executable"]()
        vm["vm_initialization"](_KDL_CPU, 0, self._allocator)
        self._has[id(vm)] = self._no_instrument
        return vm

    def _instrumented(self, vm):
        # A VM is told of set_instrument when a call takes it: never while another thread runs it.
        callback = self._instrument
        if self._has.get(id(vm)) is not callback:
            vm["set_instrument"](None if callback is self._no_instrument else callback)
            self._has[id(vm)] = callback
        return vm

    def __call__(self, *inputs: np.ndarray) -> np.ndarray | tuple:
        """Run ``main`` on the inputs (in manifest order); return numpy copies of the outputs."""
        specs = self.manifest.inputs
        if len(inputs) != len(specs):
            raise TypeError(f"model takes {len(specs)} inputs, got {len(inputs)}")
        args = []
        for spec, x in zip(specs, inputs):
            x = np.ascontiguousarray(x)
            if x.dtype != spec.dtype or not _fits(x.shape, spec.shape):
                raise ValueError(
                    f"input {spec.name!r} must be {spec.dtype}{list(spec.shape)}, "
                    f"got {x.dtype}{list(x.shape)}"
                )
            args.append(tvm_ffi.from_dlpack(_aligned(x), require_alignment=ALIGNMENT))
        vm, weights = self._acquire()
        try:
            return _to_numpy(self._instrumented(vm)["main"](*args, *weights))
        finally:
            self._release(vm)

    def _acquire(self):
        """A VM for this call (and the weights, which outlive a close() until the call ends)."""
        with self._changed:
            while not self._closed and not self._idle and self._vms >= self._max:
                self._changed.wait()
            if self._closed:
                raise RuntimeError(f"model {self.directory} is closed")
            self._busy += 1
            if self._idle:
                return self._idle.pop(), self._weights
            self._vms += 1
            library, weights = self._library, self._weights
        try:
            return self._new_vm(library), weights  # outside the lock: takes a while
        except BaseException:
            self._release(None)
            raise

    def _release(self, vm) -> None:
        with self._changed:
            self._busy -= 1
            if vm is None:
                self._vms -= 1
            elif not self._closed:
                self._idle.append(vm)
            self._changed.notify()
            last = self._closed and self._busy == 0
        if last:
            _free_pooled_memory()

    def close(self) -> None:
        """Drop the library, the weights mapping and the VMs, and free the pooled arena.

        Calls already running finish (they hold what they use); later calls raise. The
        pooled allocator is process-wide and keeps every freed block for reuse (that is
        how the arena survives between calls); clearing it releases only blocks no live
        tensor uses, so other models simply allocate theirs again on their next call.
        """
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._idle, self._library, self._weights = [], None, []
            self._changed.notify_all()
            last = self._busy == 0
        if last:
            _free_pooled_memory()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_instrument(self, callback) -> None:
        """Have the VMs call ``callback(func, name, before_run, ret, *args)`` around every call
        they make (``None``: stop), from the next model call on; one running meanwhile keeps its hook."""
        self._instrument = self._no_instrument if callback is None else callback


def _free_pooled_memory() -> None:
    tvm_ffi.get_global_func("vm.builtin.memory_manager.clear")()


def _aligned(x: np.ndarray) -> np.ndarray:
    """``x`` at a 64-byte aligned address: compiled kernels use aligned vector loads on inputs."""
    if x.ctypes.data % ALIGNMENT == 0:
        return x
    raw = np.empty(x.nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    out = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


def _fits(shape: tuple[int, ...], spec: tuple[int, ...]) -> bool:
    return len(shape) == len(spec) and all(s in (-1, d) for s, d in zip(spec, shape))


def _to_numpy(value):
    # Copy: the output buffer goes back to the VM's pool for the next call, and the caller's
    # array cannot alias memory a later call (or a planned arena) overwrites.
    if isinstance(value, tvm_ffi.Tensor):
        return np.from_dlpack(value).copy()
    if isinstance(value, tvm_ffi.Array):
        return tuple(_to_numpy(v) for v in value)
    return value


def load(path: str | Path, **kwargs) -> Model:
    """Load an artifact directory written by :func:`fluidml_tvm.artifact.export_artifact`."""
    return Model(path, **kwargs)
