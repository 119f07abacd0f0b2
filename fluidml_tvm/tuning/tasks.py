"""Tuning tasks of a model: the fused PrimFuncs the pipeline's "fuse" stage leaves, with their call counts."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import tvm
from tvm.s_tir import meta_schedule as ms

from ..pipeline import stages
from ..targets import describe
from .measure_layouts import kernel_seconds


def fuse(model, target, *, input_shapes: dict | None = None, packed: bool = False, database=None,
         measure=False) -> tvm.IRModule:
    """``model`` (ONNX path, ``onnx.ModelProto`` or Relax ``IRModule``) after the pipeline's "fuse" stage.

    These are the PrimFuncs a database applied after "fuse" is looked up
    with, so tuning them is what makes the records match at build time.
    ``packed`` runs the pipeline's "pack" stage (packed weight layouts) first,
    so the records match builds with ``kernels=True`` (weight layouts chosen
    with the layout costs of the ``database`` directory, as such a build
    does; ``measure``: timing the kernels those choices need first, here if
    True, else with this ``measure(kernel) -> seconds``); without
    it they match the row-major kernels of ``kernels=False`` builds.
    """
    target = describe(target)
    if isinstance(model, tvm.IRModule):
        mod = model
    else:
        from ..frontend import onnx_to_relax

        mod, _ = onnx_to_relax(model, input_shape_overrides=input_shapes)
    # A tuning directory holds both MetaSchedule's records and the layout costs.
    parts = stages(target, kernels=packed, tuning_database=database,
                   layout_records=database if isinstance(database, (str, Path)) else None,
                   measure=partial(kernel_seconds, target=target) if measure is True else measure or None)
    with target.target:
        return tvm.transform.Sequential(parts.get("pack", []) + parts["fuse"])(mod)


def extract_tasks(model, target, *, input_shapes: dict | None = None, op_names: list[str] | None = None,
                  packed: bool = False, database=None) -> list[ms.ExtractedTask]:
    """The distinct kernels of ``model`` to tune for ``target``, heaviest use first.

    Each task's ``weight`` is how many times the model calls that kernel, so
    the task scheduler spends trials where they save the most end-to-end time.
    ``op_names`` keeps only tasks whose name contains one of the given strings
    (e.g. ``["matmul"]``); ``packed`` and ``database`` as in :func:`fuse`. Kernels already
    marked scheduled are left out.
    """
    target = describe(target)
    fused = fuse(model, target, input_shapes=input_shapes, packed=packed, database=database)
    tasks = ms.relax_integration.extract_tasks(fused, target.target)
    tasks = [t for t in tasks if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]
    if op_names:
        tasks = [t for t in tasks if any(name in t.task_name for name in op_names)]
    return sorted(tasks, key=lambda t: -int(t.weight))
