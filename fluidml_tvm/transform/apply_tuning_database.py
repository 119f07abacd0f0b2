"""ApplyTuningDatabase: replace each fused PrimFunc that has a tuning record by its best schedule."""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from ..schedule.database import open_database, shipped_database
from ..targets import describe


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.ApplyTuningDatabase")
class ApplyTuningDatabase:
    """Schedule the PrimFuncs a tuning database knows; leave the others untouched.

    Runs after the pipeline's "fuse" stage (the database's workloads are the
    fused PrimFuncs :func:`fluidml_tvm.tuning.extract_tasks` tunes) and before
    "plan". ``database`` is an ``ms.Database``, a database directory, or None
    for the one shipped in ``schedules/`` for ``target`` (no-op when there is
    none). Scheduled functions get ``tirx.is_scheduled``.
    """

    def __init__(self, target, database: ms.Database | str | Path | None = None):
        self.target = describe(target)
        self.database = open_database(database, repair=False) if isinstance(database, (str, Path)) else database

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        database = self.database if self.database is not None else shipped_database(self.target)
        if database is None:
            return mod
        # MetaSchedule looks each workload's records up under the target in scope.
        with self.target.target, database:
            return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
