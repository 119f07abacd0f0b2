"""The deploy side: load an artifact and run it with tvm_ffi and libtvm_runtime.so only.

Nothing here imports ``tvm`` (whose import loads the ~250 MB compiler library)::

    from fluidml_tvm import runtime
    model = runtime.load("out/minilm")  # an artifact directory (fluidml_tvm.artifact)
    y = model(input_ids, attention_mask)  # numpy in, numpy out (a tuple if several)

Loading refuses, with one :class:`ArtifactError` line, anything in the directory that does
not match its manifest, before any code of the library runs; a model may be called from
several threads at once (:class:`Model`).
"""

from .errors import ArtifactError
from .manifest import Manifest
from .model import Model, load
from .threads import use_all_cores

__all__ = ["ArtifactError", "Manifest", "Model", "load", "use_all_cores"]
