"""Measured kernel time per (target, workload, weight layout), and an XGBoost model for the rest.

The layout planner (:func:`fluidml_tvm.layout.planners.plan_layouts`) needs
the time of every matmul/conv2d under every candidate weight layout.  Those
come from measurements of the kernel exactly as a build makes it (PackWeights'
rewrite, the default schedule, the target's codegen), kept one JSON line per
record in ``layout_costs.jsonl``: a tuning directory (``fluidml-tvm tune
--packed --db DIR``) and the shipped ``schedules/*/`` each hold one.  A record the
planner needs but nobody measured is predicted by an XGBoost regressor
trained on the target's records (time per FLOP from shape and layout features);
with fewer than :data:`MIN_TRAINING` records there is no model, and the
planner keeps the default block.  The same files hold whole fused kernels'
times keyed by structural hash (:class:`KernelCosts`), with which
FoldLayoutKernels decides whether merging a copy kernel pays.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..targets import SCHEDULES_DIR, describe
from .planners import INF

RECORD_FILE = "layout_costs.jsonl"
# How records were keyed before CPU classes: by the CPU's name, features and core count.
_NAMED_CPU_KEY = re.compile(r"^(?P<kind>\S+) -mtriple=(?P<triple>\S*) -mcpu=(?P<mcpu>\S*) -mattr=(?P<mattr>\S*)"
                            r" -num-cores=(?P<cores>\d+)$")
MIN_TRAINING = 8
DEFAULT_KERNEL = ("default",)  # the layout of a whole fused kernel's record: as the build makes it


def flops(work: tuple) -> float:
    if work[0] == "matmul":
        return 2.0 * work[1] * work[2] * work[3]
    b, c, h, w, o, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw = work[1:]
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return 2.0 * b * o * oh * ow * c * kh * kw


@dataclass(frozen=True)
class LayoutRecord:
    """One measured time: ``target`` is the CPU class's record key, ``cores`` the threads it ran on (0: unknown)."""

    target: str
    workload: tuple
    layout: tuple
    seconds: float
    cores: int = 0

    def to_json(self) -> str:
        return json.dumps({"target": self.target, "cores": self.cores, "workload": list(self.workload),
                           "layout": list(self.layout), "seconds": self.seconds})

    @staticmethod
    def from_json(line: str) -> "LayoutRecord":
        """Parse one record; one keyed by a CPU's name (the format before classes) gets its class's key."""
        d = json.loads(line)
        target, cores = str(d["target"]), int(d.get("cores", 0))
        old = _NAMED_CPU_KEY.match(target)
        if old is not None:
            spec = {"kind": old["kind"], "mtriple": old["triple"], "mcpu": old["mcpu"],
                    "mattr": old["mattr"].split(",") if old["mattr"] else []}
            target, cores = describe({k: v for k, v in spec.items() if v}).record_key, int(old["cores"])
        return LayoutRecord(target, tuple(d["workload"]), tuple(d["layout"]), float(d["seconds"]), cores)


class LayoutCostDatabase:
    """Records of ``path`` (a ``layout_costs.jsonl`` or a directory for one) and the read-only ``extra`` files.

    New records are appended to ``path``.  A line that is not a record (cut
    short by a killed process) is skipped with a warning naming the file and
    line; every other record is kept.  On a key in several files, ``path`` wins.
    """

    def __init__(self, path=None, extra=()):
        self.path = None if path is None else (Path(path) if str(path).endswith(".jsonl") else Path(path) / RECORD_FILE)
        self._records: dict = {}
        self._models: dict = {}
        for file in [self.path, *map(Path, extra)]:
            if file is None or not file.is_file():
                continue
            for number, line in enumerate(file.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = LayoutRecord.from_json(line)
                except (ValueError, KeyError, TypeError) as err:
                    warnings.warn(f"{file}:{number}: not a layout cost record ({err}); skipped", stacklevel=2)
                    continue
                self._records.setdefault(_key(record), record)

    @staticmethod
    def for_build(database=None) -> "LayoutCostDatabase":
        """The records of a tuning directory ``database`` (if one is given) and those shipped in ``schedules/``."""
        own = database if isinstance(database, (str, Path)) else None
        return LayoutCostDatabase(own, sorted(SCHEDULES_DIR.glob(f"*/{RECORD_FILE}")))

    def __len__(self) -> int:
        return len(self._records)

    def measured(self, target: str, work: tuple, layout: tuple, cores: int = 0, *,
                 nearest: bool = True) -> float | None:
        """The time of ``work`` in ``layout`` on class ``target``: measured on ``cores`` threads, else
        (``nearest``) on the nearest core count measured; None when unmeasured."""
        exact = self._records.get((target, tuple(work), tuple(layout), cores))
        if exact is not None or not nearest:
            return exact.seconds if exact is not None else None
        near = [r for k, r in self._records.items() if k[:3] == (target, tuple(work), tuple(layout))]
        return min(near, key=lambda r: (abs(r.cores - cores), r.cores)).seconds if near else None

    def add(self, record: LayoutRecord) -> None:
        """Keep ``record`` and append it to ``path`` at once (an interrupted run loses nothing)."""
        self._records[_key(record)] = record
        self._models.pop(record.target, None)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(record.to_json() + "\n")

    def records(self, target: str) -> list[LayoutRecord]:
        return [r for r in self._records.values() if r.target == target]

    def predicted(self, target: str, work: tuple, layout: tuple, lanes: int, cores: int = 0) -> float | None:
        """XGBoost's estimate from the class's records (any core count: cores is a feature);
        None with fewer than MIN_TRAINING of them."""
        if target not in self._models:
            shaped = [r for r in self.records(target) if r.workload[0] in ("matmul", "conv2d")]
            self._models[target] = _train(shaped, lanes)
        model = self._models[target]
        if model is None:
            return None
        per_flop = math.exp(float(model.predict(np.array([features(work, layout, lanes, cores)]))[0]))
        return per_flop * flops(work)

    def seconds(self, target: str, work: tuple, layout: tuple, lanes: int, cores: int = 0) -> float | None:
        measured = self.measured(target, work, layout, cores)
        return measured if measured is not None else self.predicted(target, work, layout, lanes, cores)

    def record_class(self, target) -> tuple[str, int]:
        """(record key, lanes) of the first of ``target``'s record classes with records here (the own
        class when none has): an unseen CPU uses the records of its class, an AVX-512 one the AVX2 class's
        when its own class has none."""
        classes = describe(target).record_classes
        present = {r.target for r in self._records.values()}
        return next((c for c in classes if c[0] in present), classes[0])


def _key(record: LayoutRecord) -> tuple:
    return (record.target, record.workload, record.layout, record.cores)


def features(work: tuple, layout: tuple, lanes: int, cores: int = 0) -> list[float]:
    """Shape, layout and core-count features; the model predicts log(seconds per FLOP) from them."""
    kind, block = layout
    if work[0] == "matmul":
        m, k, n = work[1:4]
        extra = [1.0, 1.0, 1.0]
    else:
        b, c, h, w, o, kh, kw, sh = work[1:9]
        m, k, n = b * h * w // (sh * sh), c * kh * kw, o
        extra = [float(kh * kw), float(sh), float(h * w)]
    vectors = block / lanes
    return [math.log2(m), math.log2(k), math.log2(n), vectors, float(n % block == 0),
            -(-n // block) * block / n, float(kind == "packed"), float(kind == "dense"),
            float(kind == "conv2d"), float(lanes), float(cores), *extra]


def _train(records: list[LayoutRecord], lanes: int):
    if len(records) < MIN_TRAINING:
        return None
    import xgboost as xgb

    x = np.array([features(r.workload, r.layout, lanes, r.cores) for r in records])
    y = np.array([math.log(r.seconds / flops(r.workload)) for r in records])
    model = xgb.XGBRegressor(n_estimators=200, max_depth=4, learning_rate=0.1, n_jobs=1, random_state=0)
    model.fit(x, y)
    return model


class MeasuredLayoutCosts:
    """:class:`~fluidml_tvm.layout.planners.LayoutCosts` for a weight layout graph.

    ``node_cost`` is the kernel's time with the weight in the layout the node
    reads it in: measured, else predicted.  A node with a candidate neither
    measured nor predicted keeps its default (the others cost ``inf``).  Weights
    are constants, re-laid-out at build time: no transform ever costs.
    """

    def __init__(self, database: LayoutCostDatabase, target, workloads: dict, layouts: dict):
        target = describe(target)
        key, lanes = database.record_class(target)
        self.costs = {}  # node name -> {layout: seconds}
        for node, work in workloads.items():
            times = {layout: database.seconds(key, work, layout, lanes, target.cores) for layout in layouts[node]}
            if any(t is None for t in times.values()):
                times = {layout: (0.0 if i == 0 else INF) for i, layout in enumerate(layouts[node])}
            self.costs[node] = times

    def node_cost(self, node, input_layouts, output_layout) -> float:
        return self.costs[node.name].get(tuple(input_layouts[1]), INF)

    def transform_cost(self, tensor, from_layout, to_layout) -> float:
        return 0.0 if from_layout == to_layout else INF


class KernelCosts:
    """Seconds of a fused kernel (default schedule) from the records of ``target``, keyed by its structural hash.

    ``measure(kernel) -> seconds`` (the tuner passes
    :func:`fluidml_tvm.tuning.measure_layouts.kernel_seconds`, timing here or
    on its RPC device) times a kernel without a record on the spot, and the
    record is kept; without it such a
    kernel's time is unknown (None), and the records of the target's class
    are read on any core count, an AVX-512 CPU's falling back to the AVX2
    class's (:meth:`LayoutCostDatabase.record_class`).
    """

    def __init__(self, database: LayoutCostDatabase, target, measure=None):
        target = describe(target)
        self.database = database
        self.key = target.record_key if measure is not None else database.record_class(target)[0]
        self.cores = target.cores
        self.measure = measure

    def __call__(self, kernel) -> float | None:
        import tvm_ffi

        work = ("kernel", f"{tvm_ffi.structural_hash(kernel) & (2**64 - 1):016x}")
        seconds = self.database.measured(self.key, work, DEFAULT_KERNEL, self.cores)
        if seconds is None and self.measure is not None:
            seconds = self.measure(kernel)
            self.database.add(LayoutRecord(self.key, work, DEFAULT_KERNEL, seconds, self.cores))
        return seconds
