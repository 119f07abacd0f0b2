"""A MetaSchedule builder whose workers start in seconds and whose candidates are linked on the host."""

from __future__ import annotations

import os

from tvm.s_tir import meta_schedule as ms

from ..targets import cross_compiler


def fast_local_builder(max_workers: int | None = None, timeout_sec: float = 60.0,
                       target=None) -> ms.builder.LocalBuilder:
    """``ms.builder.LocalBuilder`` that skips the tensor-intrinsic import and exports shared libraries.

    The default build function imports ``tvm.s_tir.tensor_intrin`` in every
    worker (~40 s here, more than the default 30 s timeout, so every build
    "times out"). Building needs no intrinsics: a tensorized candidate arrives
    with its intrinsic bodies already inlined.

    The default export is an object archive that the device links when it
    loads it, with its own ``g++``: a board has none. Each candidate is
    linked here instead, into a shared library, with ``target``'s cross
    compiler (:func:`fluidml_tvm.targets.cross_compiler`; the host's own
    compiler when ``target`` is None or this machine). ``max_workers``
    defaults to the number of cores.
    """
    return ms.builder.LocalBuilder(
        max_workers=max_workers or os.cpu_count() or 1,
        timeout_sec=timeout_sec,
        f_build=_make_build_function(),
        f_export=_make_export_function(None if target is None else cross_compiler(target)),
    )


# Both functions are made inside a function so cloudpickle ships them by value: the
# popen workers then need only ``tvm``, not this package, on their sys.path.
def _make_build_function():
    def build(mod, target, _params):
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm_build(mod, target=target)

    return build


def _make_export_function(fcompile):
    def export(rt_mod):
        import os
        import tempfile

        path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
        rt_mod.export_library(path, fcompile=fcompile)
        return path

    return export
