"""A MetaSchedule builder whose workers start in seconds: no ``tvm.s_tir.tensor_intrin`` import."""

from __future__ import annotations

import os

from tvm.s_tir import meta_schedule as ms


def fast_local_builder(max_workers: int | None = None, timeout_sec: float = 60.0) -> ms.builder.LocalBuilder:
    """``ms.builder.LocalBuilder`` with a build function that skips the tensor-intrinsic import.

    The default build function imports ``tvm.s_tir.tensor_intrin`` in every
    worker (~40 s here, more than the default 30 s timeout, so every build
    "times out"). Building needs no intrinsics: a tensorized candidate arrives
    with its intrinsic bodies already inlined. ``max_workers`` defaults to the
    number of cores.
    """
    return ms.builder.LocalBuilder(
        max_workers=max_workers or os.cpu_count() or 1,
        timeout_sec=timeout_sec,
        f_build=_make_build_function(),
    )


def _make_build_function():
    # Built inside a function so cloudpickle ships it by value: the popen workers
    # then need only ``tvm``, not this package, on their sys.path.
    def build(mod, target, _params):
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm_build(mod, target=target)

    return build
