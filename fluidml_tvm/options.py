"""BuildOptions: every choice a build takes, checked once where it is made."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from .memory.planners import PLANNERS

# What ``planner`` (and ``--planner``) accepts: "best" runs every arena heuristic and keeps the smallest.
PLANNER_CHOICES = tuple(PLANNERS)


@dataclass(frozen=True)
class BuildOptions:
    """The options of :func:`fluidml_tvm.compile`, ``export``, ``get_pipeline`` and ``stages``.

    ``planner``: a name of :data:`PLANNER_CHOICES`; ``reorder``: choose the
    execution order for memory; ``inplace``: let pointwise kernels write over
    an input at its last use; ``scratch``: kernels' scratch buffers from the
    arena; ``validate``: prove each plan inside the pass; ``kernels``: FluidML's
    weight layouts and kernel schedules (False: TVM's); ``fast_math``: TVM's
    fast exp/erf/tanh (relative error ~1e-6); ``index_checks``: gathers check
    their indices. ``tuning_database``: a MetaSchedule database (an
    ``ms.Database`` or its directory; None: the one shipped for the target);
    ``layout_records``: a directory of measured layout costs (beside those
    shipped in ``schedules/``), where new measurements are appended too.
    ``fluidml-tvm tune`` writes both into one directory.  ``solve_seconds``:
    when the arena heuristics miss the live-set bound, search this long per
    arena for a smaller plan and a proof of optimality (0: off).
    """

    planner: str = "best"
    reorder: bool = True
    inplace: bool = True
    scratch: bool = True
    validate: bool = False
    kernels: bool = True
    fast_math: bool = True
    index_checks: bool = True
    tuning_database: object = None
    layout_records: str | Path | None = None
    solve_seconds: float = 2.0

    def __post_init__(self):
        if self.planner not in PLANNER_CHOICES:
            raise ValueError(f"unknown memory planner {self.planner!r}; choose one of: {', '.join(PLANNER_CHOICES)}")
        for f in fields(self):
            if f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise ValueError(f"build option {f.name}={getattr(self, f.name)!r}: expected True or False")
        if not isinstance(self.solve_seconds, (int, float)) or self.solve_seconds < 0:
            raise ValueError(f"build option solve_seconds={self.solve_seconds!r}: expected seconds >= 0")
        if self.layout_records is not None and not isinstance(self.layout_records, (str, Path)):
            raise ValueError(f"build option layout_records={self.layout_records!r}: expected a directory")

    @classmethod
    def of(cls, options: "BuildOptions | None" = None, **keywords) -> "BuildOptions":
        """``options`` (default: the defaults) with ``keywords`` replacing its fields.

        ``database=DIR`` (as ``fluidml-tvm tune`` writes it) sets both
        ``tuning_database`` and ``layout_records``; an ``ms.Database`` only the first.
        """
        options = options if options is not None else cls()
        if not isinstance(options, cls):
            raise TypeError(f"options must be a BuildOptions, got {type(options).__name__}")
        if "database" in keywords:
            database = keywords.pop("database")
            keywords.setdefault("tuning_database", database)
            if isinstance(database, (str, Path)):
                keywords.setdefault("layout_records", database)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise TypeError(f"unknown build option {unknown[0]!r}; the options are: {', '.join(sorted(known))}")
        return replace(options, **keywords) if keywords else options


__all__ = ["BuildOptions", "PLANNER_CHOICES"]
