"""fluidml-tvm: FluidML's whole-model execution planning for Apache TVM Relax.

The compiler side (``transform``, ``get_pipeline``, ``compile``) loads TVM on
first use, so that ``fluidml_tvm.runtime`` can be imported on a board without
the TVM compiler.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "compile": ("fluidml_tvm.compiler", "compile"),
    "export": ("fluidml_tvm.compiler", "export"),
    "CompileResult": ("fluidml_tvm.compiler", "CompileResult"),
    "get_pipeline": ("fluidml_tvm.pipeline", "get_pipeline"),
    "BuildOptions": ("fluidml_tvm.options", "BuildOptions"),
    "transform": ("fluidml_tvm.transform", None),
    "runtime": ("fluidml_tvm.runtime", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'fluidml_tvm' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = import_module(module)
    return getattr(value, attr) if attr else value


__all__ = ["compile", "export", "CompileResult", "get_pipeline", "BuildOptions", "runtime", "transform", "__version__"]
