"""``tune``: MetaSchedule search over a model's kernels into a resumable JSON database."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..frontend import onnx_to_relax
from ..schedule.database import count_records, open_database
from ..targets import cross_compiler, describe
from .builder import fast_local_builder
from .failures import StopWhenAllFail, TuningInterrupted
from .intrinsics import register_cpu_intrinsics
from .rpc import RemoteDevice, RemoteDeviceLost
from .tasks import extract_tasks, fuse
from .timers import RemoteTimer


@dataclass
class TaskResult:
    """One kernel after tuning: how often the model calls it, how many candidates were measured, the best time."""

    name: str
    weight: int
    records: int
    best_us: float | None

    def __str__(self) -> str:
        best = f"{self.best_us:10.1f} us" if self.best_us is not None else "         - "
        return f"{self.name:<48} x{self.weight:<3} {self.records:5d} records {best}"


@dataclass
class TuningReport:
    """What a ``tune`` call left in ``work_dir``: per-task records and best times."""

    work_dir: Path
    trials: int
    trials_per_task: int
    measured_before: int
    measured_now: int
    tasks: list[TaskResult] = field(default_factory=list)
    database: ms.Database | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return self.measured_now >= self.trials or all(t.records >= self.trials_per_task for t in self.tasks)

    def summary(self) -> str:
        lines = [f"{self.work_dir}: {self.measured_now} of {self.trials} trials measured "
                 f"({self.measured_now - self.measured_before} in this run)"]
        lines += [f"  {t}" for t in self.tasks]
        return "\n".join(lines)


def tune(model, target, work_dir, trials: int, *, trials_per_task: int | None = None,
         trials_per_iter: int = 16, input_shapes: dict | None = None, op_names: list[str] | None = None,
         builder: ms.builder.Builder | None = None, runner: ms.runner.Runner | None = None,
         extra_callbacks: list | None = None, search: str | ms.search_strategy.SearchStrategy = "evolutionary",
         packed: bool = False, seed: int | None = None, progress: bool = True,
         device: RemoteDevice | None = None) -> TuningReport:
    """Tune ``model``'s kernels for ``target`` with MetaSchedule (XGBoost cost model) into ``work_dir``.

    ``trials`` is the total number of measured candidates wanted in
    ``work_dir`` over all tasks, counting records already there: run it again
    after an interruption and it continues from what was measured (the search
    starts from the best records in the database) instead of starting over; a
    task with ``trials_per_task`` records or more is not tuned again.
    MetaSchedule's JSON database appends each record as it is measured, so an
    interrupted run (Ctrl-C, a killed process, a dead RPC device) keeps every
    record committed before it stopped.

    ``model`` is an ONNX path, an ``onnx.ModelProto`` or a Relax ``IRModule``
    (tuned after the pipeline's "fuse" stage; with ``packed`` after "pack" and
    "fuse", to match builds with ``kernels=True``). ``builder`` defaults to
    :func:`fast_local_builder`, ``runner`` to a local runner; to measure on a
    board give the runner and callbacks of
    :func:`fluidml_tvm.tuning.rpc.remote_measurement`. ``extra_callbacks``
    (measure callbacks) run before MetaSchedule's own, so one can stop
    tuning before a bad batch is recorded. ``search`` is MetaSchedule's search
    strategy (default: evolutionary search guided by the XGBoost cost model).

    With ``packed``, the candidate weight layouts are timed first, into
    ``work_dir``'s layout cost records: on ``device`` (default: the device of
    an ``RPCRunner`` given as ``runner``), each kernel linked here with the
    target's cross compiler; on this machine when the target runs here; for
    a target neither reaches, not at all (its defaults stay, with a warning).
    """
    given, target = target, describe(target)
    if target.cpu and not target.target.attrs.get("num-cores"):  # MetaSchedule fails deep inside
        raise ValueError(f"--target {given if isinstance(given, str) else target}: tuning needs the device's "
                         'core count: add "num-cores": N, or use a preset (host, x86-64, aarch64)')
    register_cpu_intrinsics(target.target)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    per_task = trials_per_task or trials
    # Repaired before anything reads it: the build stages below apply this database too.
    database = open_database(work_dir)
    if packed:
        mod = model if isinstance(model, tvm.IRModule) else onnx_to_relax(model, input_shape_overrides=input_shapes)[0]
        device = device or _rpc_device(runner)
        if device is not None:
            _measure_layouts(mod, target, work_dir, progress, RemoteTimer(target, device))
        elif runner is None and cross_compiler(target) is None:
            _measure_layouts(mod, target, work_dir, progress, None)
        else:
            # this CPU's times are not the device's: its defaults (sized for its vector unit) stay
            warnings.warn(f"layout costs are not measured for {target} without its RPC device; "
                          "the build keeps the default blocks unless records for it exist", stacklevel=2)
        model = mod
    extracted = extract_tasks(model, target, input_shapes=input_shapes, op_names=op_names, packed=packed,
                              database=work_dir)
    if not extracted:
        raise ValueError("the model has no kernels to tune (every PrimFunc is already scheduled)")
    done = [count_records(database, t.dispatched[0]) for t in extracted]
    measured_before = sum(min(d, per_task) for d in done)
    todo = [i for i, d in enumerate(done) if d < per_task]
    remaining = trials - measured_before
    if todo and remaining > 0:
        _run(extracted, todo, database, work_dir, target, remaining, per_task, trials_per_iter,
             builder, runner, extra_callbacks or [], search, seed, progress, measured_before, trials)
    return _report(extracted, database, work_dir, trials, per_task, measured_before)


def _rpc_device(runner) -> RemoteDevice | None:
    """The device an ``RPCRunner`` measures on (None for any other runner)."""
    if not isinstance(runner, ms.runner.RPCRunner):
        return None
    config = runner.rpc_config
    return RemoteDevice(config.tracker_host, config.tracker_port, config.tracker_key,
                        session_timeout_sec=int(config.session_timeout_sec))


def _measure_layouts(mod, target, work_dir, progress: bool, timer) -> None:
    """Time every candidate weight layout first: the packed kernels MetaSchedule tunes are those it picks.

    ``timer`` None times them here. A device lost meanwhile stops tuning with
    every record measured so far kept (each is appended as it is measured).
    """
    from tqdm import tqdm

    from ..layout.costs import LayoutCostDatabase
    from .measure_layouts import kernel_seconds, measure_layouts, model_layouts

    def advance(done, total, _work):
        bar.total, bar.n = total, done
        bar.refresh()

    database = LayoutCostDatabase(work_dir)
    try:
        with tqdm(unit="kernel", desc="layouts", disable=not progress, dynamic_ncols=True) as bar:
            measure_layouts(database, target, model_layouts(mod, target), progress=advance, timer=timer)
        # the kernels the fold decisions compare
        fuse(mod, target, packed=True, database=work_dir, measure=partial(kernel_seconds, target=target, timer=timer))
    except RemoteDeviceLost as err:
        kept = len(LayoutCostDatabase(work_dir).records(target.record_key))
        raise RemoteDeviceLost(f"{err} during layout measurement; {kept} layout cost records for this target "
                               f"are kept in {work_dir}; run the same tuning again to continue from them") from err
    finally:
        if timer is not None:
            timer.close()  # the server is free for the trials


def _report(extracted, database, work_dir, trials, per_task, measured_before) -> TuningReport:
    """Per-task record counts and best times of ``extracted`` tasks in ``database``."""
    rows = []
    for task in extracted:
        mod = task.dispatched[0]
        best = None
        if database.has_workload(mod):
            top = database.get_top_k(database.commit_workload(mod), 1)
            if top:
                secs = [float(s) for s in top[0].run_secs]
                best = 1e6 * sum(secs) / len(secs)
        rows.append(TaskResult(task.task_name, int(task.weight), count_records(database, mod), best))
    measured = sum(min(r.records, per_task) for r in rows)
    return TuningReport(Path(work_dir), trials, per_task, measured_before, measured, rows, database)


def _run(extracted, todo, database, work_dir, target, remaining, per_task, trials_per_iter,
         builder, runner, extra_callbacks, search, seed, progress, measured_before, trials):
    from tqdm import tqdm

    from ..runtime.threads import use_all_cores

    use_all_cores()  # the runner's worker processes inherit it: candidates run as deployed
    chosen = [extracted[i] for i in todo]
    contexts, weights = _contexts(chosen, work_dir, search, seed)
    bar = tqdm(total=trials, initial=measured_before, unit="trial", desc="tuning",
               disable=not progress, dynamic_ncols=True)
    extra_callbacks = [*extra_callbacks, StopWhenAllFail()]  # a session that measures nothing is an error
    callbacks = list(extra_callbacks) + list(ms.MeasureCallback.create("default")) + [_Progress(bar, chosen)]
    try:
        ms.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(work_dir),
            max_trials_global=remaining,
            max_trials_per_task=per_task,
            num_trials_per_iter=trials_per_iter,
            builder=builder or fast_local_builder(target=target),
            runner=runner or ms.runner.LocalRunner(),
            database=database,
            cost_model=ms.cost_model.XGBModel(num_tuning_cores=contexts[0].num_threads),
            measure_callbacks=callbacks,
            task_scheduler="gradient",
        )
    except (Exception, KeyboardInterrupt) as err:
        bar.close()
        kept = sum(count_records(database, t.dispatched[0]) for t in extracted)
        where = (f"{kept} measured records are kept in {work_dir}; run the same tuning again "
                 "to continue from them")
        if isinstance(err, KeyboardInterrupt):
            print(f"tuning interrupted: {where}", file=sys.stderr, flush=True)
            raise
        if isinstance(err, ImportError) and err.name:  # a broken install: running again fails the same way
            raise ModuleNotFoundError(f"tuning needs the Python package '{err.name}', which is not installed "
                                      f"(pip install {err.name})", name=err.name) from err
        # A callback that stops tuning keeps its exception in ``stopped``: the FFI hands
        # Python exceptions raised inside MetaSchedule back as plain RuntimeErrors.
        cause = next((c.stopped for c in extra_callbacks if getattr(c, "stopped", None) is not None), err)
        kind = type(cause) if isinstance(cause, TuningInterrupted) else TuningInterrupted
        raise kind(f"{cause}\n{where}") from err
    finally:
        bar.close()


def _contexts(tasks, work_dir, search, seed):
    """MetaSchedule tune contexts, its loggers writing to ``work_dir/logs``; on the console only warnings
    (the progress bar, or nothing with ``--quiet``, says how tuning goes)."""
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.setLevel(logging.INFO)
    # MetaSchedule re-lists the logger's handlers by name when it configures logging and
    # fails on an unnamed one (pytest's capture adds some): step them aside meanwhile.
    unnamed = [h for h in ms_logger.handlers if not h.get_name()]
    for handler in unnamed:
        ms_logger.removeHandler(handler)
    try:
        return ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, str(work_dir), strategy=search, seed=seed)
    finally:
        for handler in unnamed:
            ms_logger.addHandler(handler)
        for handler in _console_handlers(ms_logger):
            handler.setLevel(logging.WARNING)


def _console_handlers(logger) -> list:
    """The handlers MetaSchedule gave ``logger`` and its task loggers that write to a terminal, not to a
    log file (its handlers are named; others, e.g. pytest's, are not its to change)."""
    loggers = [logger] + [logging.getLogger(n) for n in logging.root.manager.loggerDict if n.startswith(logger.name + ".")]
    return [h for lg in loggers for h in lg.handlers
            if h.get_name() and isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """A tqdm bar advanced by each measured batch, showing the task and its best time so far."""

    def __init__(self, bar, tasks):
        super().__init__()
        self.bar, self.names, self.best = bar, [t.task_name for t in tasks], {}

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        name = self.names[task_id]
        for result in runner_results:
            if result.run_secs is not None and len(result.run_secs):
                secs = [float(s) for s in result.run_secs]
                us = 1e6 * sum(secs) / len(secs)
                if us < 1e9:
                    self.best[name] = min(self.best.get(name, math.inf), us)
        best = self.best.get(name)
        self.bar.set_postfix_str(f"{name} best {best:.1f} us" if best else name, refresh=False)
        if self.bar.total is not None and self.bar.n + len(measure_candidates) >= self.bar.total:
            # the last batch: closing the bar draws it once; update() would draw the full bar a second time
            self.bar.n += len(measure_candidates)
        else:
            self.bar.update(len(measure_candidates))
