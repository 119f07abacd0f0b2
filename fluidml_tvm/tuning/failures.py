"""How a tuning session stops early: the error kinds, and stopping one whose measurements all fail."""

from __future__ import annotations

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms


class TuningInterrupted(RuntimeError):
    """Tuning stopped early; every record measured until then is in the database."""


# MetaSchedule records a failed run as 1e10 s; no real kernel takes a second here.
FAILED_RUN_SECS = 1e9


class AllMeasurementsFailed(TuningInterrupted):
    """Every measurement of the session failed: nothing valid was measured, the failed batch is not recorded."""


def first_failure(builder_result, runner_result) -> str | None:
    """Why one candidate has no valid time (the builder's or the runner's error, or a failed-run time), else None."""
    for error in (builder_result.error_msg, runner_result.error_msg):
        if error:
            return str(error)
    secs = [float(s) for s in runner_result.run_secs or []]
    if not secs:
        return "the runner returned no time"
    if max(secs) >= FAILED_RUN_SECS:
        return f"run time {max(secs):g} s (MetaSchedule's mark of a failed run)"
    return None


@derived_object
class StopWhenAllFail(ms.measure_callback.PyMeasureCallback):
    """Raise :class:`AllMeasurementsFailed` when a batch fails entirely before any measurement succeeded.

    A setup that cannot measure at all (a board that cannot load the
    candidates, a wrong target, a dead runner) fails every candidate, so the
    first batch tells; once one candidate has a valid time, failures are the
    candidates' own and tuning goes on. Put it before MetaSchedule's
    AddToDatabase so a failed batch is not recorded as slow candidates.
    """

    def __init__(self):
        super().__init__()
        self.valid = 0
        self.stopped: AllMeasurementsFailed | None = None  # what tune() re-raises: the FFI turns it into RuntimeError

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        reasons = [first_failure(b, r) for b, r in zip(builder_results, runner_results, strict=True)]
        self.valid += sum(reason is None for reason in reasons)
        if self.valid or not reasons:
            return
        self.stopped = AllMeasurementsFailed(
            f"all {len(reasons)} measurements of the first batch failed, none succeeded in this session; "
            f"first failure: {_last_line(reasons[0])}")
        raise self.stopped


def _last_line(message: str) -> str:
    # A worker's error is a whole traceback; its last non-empty line says what went wrong.
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (lines[-1] if lines else message)[:300]
