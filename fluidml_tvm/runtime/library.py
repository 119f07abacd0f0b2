"""Find and load libtvm_runtime.so without importing the TVM compiler."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys
from pathlib import Path

#: Path to libtvm_runtime.so; overrides the lookup (a board without the tvm package).
RUNTIME_LIB_ENV = "FLUIDML_TVM_RUNTIME_LIB"


def _import_tvm_ffi():
    # tvm_ffi/__init__.py imports torch when it is installed (a workaround for a Windows
    # symbol clash); that costs ~190 MB RSS and ~1.3 s. Hide torch during the import unless
    # the process already uses it; a later `import torch` works as usual.
    if "torch" in sys.modules:
        import tvm_ffi

        return tvm_ffi
    sys.modules["torch"] = None
    try:
        import tvm_ffi
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return tvm_ffi


tvm_ffi = _import_tvm_ffi()


def runtime_library_path() -> Path:
    """Where libtvm_runtime.so is: $FLUIDML_TVM_RUNTIME_LIB, else tvm/lib of the tvm package."""
    if override := os.environ.get(RUNTIME_LIB_ENV):
        return Path(override)
    # find_spec locates the package without executing tvm/__init__.py (which loads the compiler).
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"libtvm_runtime.so not found: install apache-tvm or set {RUNTIME_LIB_ENV}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "lib" / "libtvm_runtime.so"


@functools.cache
def load_runtime_library() -> ctypes.CDLL:
    """Load libtvm_runtime.so once per process (after libtvm_ffi.so, which it links against)."""
    path = runtime_library_path()
    if not path.is_file():
        raise FileNotFoundError(f"libtvm_runtime.so not found at {path} (set {RUNTIME_LIB_ENV})")
    # RTLD_GLOBAL: the model library resolves TVMBackend* symbols from it, and its static
    # initialisers register the VM executable loader with tvm_ffi.
    return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
