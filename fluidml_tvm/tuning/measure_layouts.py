"""Time one matmul/conv2d per candidate weight layout, built exactly as a model build builds it."""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax

from ..analysis.packing import plan_packing
from ..analysis.weight_layouts import candidates, workload
from ..layout.costs import LayoutCostDatabase, LayoutRecord
from ..pipeline import get_pipeline
from ..rewrite.pack_matmul import rewrite_packed_matmuls
from ..schedule import schedule_function
from ..targets import describe
from .timers import LocalTimer


def kernel_module(work: tuple, layout: tuple, seed: int = 0) -> tvm.IRModule:
    """``main(x)``: the one kernel of ``work`` reading a random weight in ``layout``."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    if work[0] == "matmul":
        m, k, n, order = work[1:]
        x = relax.Var("x", relax.TensorType((m, k), "float32"))
        w = relax.const(rng.standard_normal((k, n) if order == "kn" else (n, k)).astype("float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                rhs = w if order == "kn" else bb.emit(relax.op.permute_dims(w, [1, 0]))
                out = bb.emit_output(bb.emit(relax.op.matmul(x, rhs)))
            bb.emit_func_output(out)
    else:
        b, c, h, wd, o, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw = work[1:]
        x = relax.Var("x", relax.TensorType((b, c, h, wd), "float32"))
        w = relax.const(rng.standard_normal((o, c, kh, kw)).astype("float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit(relax.op.nn.conv2d(x, w, strides=(sh, sw), padding=(pt, pl, pb, pr),
                                               dilation=(dh, dw)))
                out = bb.emit_output(y)
            bb.emit_func_output(out)
    mod = bb.get()
    gv = mod.get_global_var("main")
    (decision,) = plan_packing(mod[gv], 4)  # lanes only pick the block, which ``layout`` replaces
    decision = dataclasses.replace(decision, layout=layout[0], block=int(layout[1]))
    return rewrite_packed_matmuls(mod, gv, [decision])


def measure_layouts(database: LayoutCostDatabase, target, pending: dict, *, rounds: int = 3,
                    progress=None, timer=None) -> int:
    """Measure every ``pending[workload]`` layout not in ``database``; return how many were added.

    ``timer`` runs the kernels: a :class:`~fluidml_tvm.tuning.timers.LocalTimer`
    (the default: this machine, which must run ``target``) or a
    :class:`~fluidml_tvm.tuning.timers.RemoteTimer` (a device behind an RPC
    tracker). The layouts of one workload are timed by
    :func:`best_round_medians`, so a burst of load does not pick the layout;
    their records are appended as soon as they are measured.
    ``progress(done, total, workload)`` is called after each workload.
    """
    target = describe(target)
    timer = timer or LocalTimer(target)
    key = target.record_key
    todo = {w: [l for l in ls if database.measured(key, w, l, target.cores, nearest=False) is None] for w, ls in pending.items()}
    todo = {w: ls for w, ls in todo.items() if ls}
    added = 0
    for done, (work, layouts) in enumerate(todo.items(), 1):
        runs = {}
        for layout in layouts:
            mod = kernel_module(work, layout)
            executable = tvm.compile(mod, target.target, relax_pipeline=get_pipeline(target))
            shape = [int(s) for s in mod["main"].params[0].ty.shape.values]
            runs[layout] = timer.runs(executable, [np.random.default_rng(1).standard_normal(shape).astype("float32")])
        for layout, seconds in best_round_medians(runs, rounds).items():
            database.add(LayoutRecord(key, tuple(work), tuple(layout), seconds, target.cores))
            added += 1
        if progress:
            progress(done, len(todo), work)
    return added


def best_round_medians(timers: dict, rounds: int) -> dict:
    """Each ``timers[key]()`` (a list of seconds) run ``rounds`` times, the timers taking turns; its best median.

    A burst of load on a shared CPU then spoils one round of every timer, not
    the only round of one of them.
    """
    best = {key: float("inf") for key in timers}
    for _ in range(rounds):
        for key, timer in timers.items():
            best[key] = min(best[key], float(np.median(timer())))
    return best


def model_layouts(mod: tvm.IRModule, target) -> dict:
    """``{workload: candidate layouts}`` of every packable matmul/conv2d in ``mod``'s Relax functions."""
    lanes = describe(target).lanes
    pending: dict = {}
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for decision in plan_packing(func, lanes):
                pending.setdefault(workload(decision), candidates(decision, lanes))
    return pending


def kernel_seconds(func, target, *, rounds: int = 3, timer=None) -> float:
    """Time of one PrimFunc as a build runs it: the default schedule, random arguments, best round median.

    ``timer`` as in :func:`measure_layouts` (default: this machine).
    """
    target = describe(target)
    timer = timer or LocalTimer(target, number=5, repeat=5, min_repeat_ms=10)
    scheduled, _ = schedule_function(func, target, False)
    lib = tvm.compile(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target.target)
    rng = np.random.default_rng(0)
    args = []
    for param in func.params:
        shape, dtype = [int(d) for d in param.ty.shape], str(param.ty.dtype)
        data = rng.standard_normal(shape) if dtype.startswith("float") else np.zeros(shape)
        args.append(data.astype(dtype))
    return best_round_medians({"kernel": timer.runs(lib, args)}, rounds)["kernel"]
