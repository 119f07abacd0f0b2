"""A deployed model: the compiled library run by TVM's Relax VM, its weights mapped once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .library import load_runtime_library, tvm_ffi
from .manifest import FINGERPRINT_FUNCTION, ArtifactError, Manifest
from .threads import use_all_cores
from .weights import ALIGNMENT, open_weights

_KDL_CPU = 1
#: The VM's allocator kinds (tvm.runtime.vm.VirtualMachine.NAIVE_ALLOCATOR / POOLED_ALLOCATOR).
ALLOCATORS = {"naive": 1, "pooled": 2}


class Model:
    """A model loaded from an artifact directory; call it with numpy arrays.

    Loading checks the manifest, the weights file (size, header, fingerprint) and the
    library's fingerprint before anything runs. Weights stay in the memory-mapped file and
    are passed to every call by reference.

    ``allocator="pooled"`` (default) allocates the activation storage in the first call and
    reuses the same blocks in every later call; ``"naive"`` mallocs and frees it in every
    call (its pages are faulted in again each time, and glibc's heap creeps by a few MB).
    Kernels run on every usable CPU unless ``TVM_NUM_THREADS`` is set (:mod:`.threads`).
    """

    def __init__(self, directory: str | Path, *, verify: bool = False, allocator: str = "pooled"):
        directory = Path(directory)
        self.manifest = manifest = Manifest.load(directory)
        weights = []
        if manifest.weights_file is not None:
            weights = open_weights(
                directory / manifest.weights_file,
                manifest.weights,
                manifest.fingerprint,
                manifest.weights_bytes,
                verify=verify,
            )
        library = directory / manifest.library
        if not library.is_file():
            raise ArtifactError(f"library {library} is missing")
        use_all_cores()
        load_runtime_library()
        # keep_module_alive=False: the library (and any weights embedded in it) goes away
        # with this object instead of living until the process exits.
        self._library = tvm_ffi.load_module(str(library), keep_module_alive=False)
        self._vm = self._library["vm_load_executable"]()
        self._vm["vm_initialization"](_KDL_CPU, 0, ALLOCATORS[allocator])
        try:
            stamped = str(self._vm[FINGERPRINT_FUNCTION]())
        except Exception as err:  # a library not built by export_artifact
            raise ArtifactError(f"library {library} has no build fingerprint") from err
        if stamped != manifest.fingerprint:
            raise ArtifactError(
                f"library {library} is from another build: fingerprint {stamped[:12]}..., "
                f"the manifest says {manifest.fingerprint[:12]}..."
            )
        self._weights = [tvm_ffi.from_dlpack(w, require_alignment=ALIGNMENT) for w in weights]
        self._main = self._vm["main"]

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
        return _to_numpy(self._main(*args, *self._weights))

    def close(self) -> None:
        """Drop the library, the weights mapping and the VM, and free the pooled arena.

        The pooled allocator is process-wide and keeps every freed block for reuse (that is
        how the arena survives between calls); clearing it releases only blocks no live
        tensor uses, so other models simply allocate theirs again on their next call.
        """
        self._main = self._vm = self._library = None
        self._weights = []
        tvm_ffi.get_global_func("vm.builtin.memory_manager.clear")()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_instrument(self, callback) -> None:
        """Have the VM call ``callback(func, name, before_run, ret, *args)`` around every call."""
        self._vm["set_instrument"](callback)


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
