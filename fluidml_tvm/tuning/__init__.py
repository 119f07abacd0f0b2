"""Kernel tuning with MetaSchedule: tasks from the fused model, a resumable database, shipped schedules, RPC."""

from ..schedule.database import CorruptDatabaseError, open_database, shipped_database, shipped_database_dir
from ..transform import ApplyTuningDatabase
from .builder import fast_local_builder
from .tasks import extract_tasks, fuse
from .tune import TuningInterrupted, TuningReport, tune

__all__ = ["ApplyTuningDatabase", "CorruptDatabaseError", "TuningInterrupted", "TuningReport", "extract_tasks",
           "fast_local_builder", "fuse", "open_database", "shipped_database", "shipped_database_dir", "tune"]
