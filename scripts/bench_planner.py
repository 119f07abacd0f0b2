"""Memory planners on hard instances with a known optimum, on a 50,000-buffer graph, and on real models.

* Generated zero-waste instances (tests/zero_waste.py: a capacity x time
  rectangle cut into buffers with no waste, so the optimum is the capacity):
  the best arena heuristic's gap, then the exact solver's result and time
  within ``--budget`` seconds each.
* A 50,000-buffer instance with lifetimes like a real graph's (a few to a few
  hundred steps): the heuristics' planning time.
* Real models: FluidMLPlan's time (ordering, lowering, planning) and the arena's status.

    python scripts/bench_planner.py [--sizes 100 200 300 400 500] [--seeds 8] [--budget 30]
                                    [--models bert-base minilm] [--write]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

from benchmarks_md import cpu_name, write_section  # noqa: E402
from zero_waste import zero_waste  # noqa: E402

from fluidml_tvm.memory import exact  # noqa: E402
from fluidml_tvm.memory.plan import Interval, conflicts, live_set_peak  # noqa: E402
from fluidml_tvm.memory.planners import best_arena  # noqa: E402


def graph_like(n: int, seed: int = 0) -> list:
    """One buffer made per step; lifetimes mostly a few steps, a long tail to a few hundred."""
    rng = random.Random(seed)
    return [Interval(f"t{i}", rng.choice([1, 2, 4, 8, 16, 64, 256]) * 64 * rng.randint(1, 16), i,
                     i + min(400, int(rng.paretovariate(1.2) * 2))) for i in range(n)]


def generated(sizes, seeds: int, budget: float) -> str:
    rows, solved, near, seconds = [], 0, 0, []
    for n in sizes:
        for seed in range(seeds):
            ivs, optimum = zero_waste(n, 1000 * n + seed)
            heuristic = best_arena(ivs)
            start = time.perf_counter()
            plan = exact.solve(ivs, budget, heuristic)
            took = time.perf_counter() - start
            assert not conflicts(plan, ivs), (n, seed)
            gap = plan.total_bytes / optimum - 1
            solved += plan.total_bytes == optimum
            near += gap <= 0.02
            seconds.append(took)
            status = "optimal (proved)" if plan.optimal else f"within {100 * plan.gap:.1f}% of the bound"
            rows.append(f"| {n} | {1000 * n + seed} | {optimum} | {100 * (heuristic.total_bytes / optimum - 1):.1f}% "
                        f"| {100 * gap:.1f}% | {status} | {took:.1f} |")
            print(rows[-1], flush=True)
    total = len(rows)
    head = (f"{solved} of {total} instances solved to the optimum within {budget:g} s each "
            f"({100 * solved / total:.0f}%), {near} of {total} within 2% of it; median solver time "
            f"{statistics.median(seconds):.2f} s.\n\n"
            "| buffers | seed | optimum (bytes) | `best` heuristic above it | solver above it | status | solver s |\n"
            "| ---: | ---: | ---: | ---: | ---: | --- | ---: |\n")
    return head + "\n".join(rows)


def large(n: int = 50_000) -> str:
    ivs = graph_like(n)
    start = time.perf_counter()
    plan = best_arena(ivs)
    took = time.perf_counter() - start
    assert not conflicts(plan, ivs)
    return (f"{n} buffers (lifetimes 2 to 400 steps): heuristics plan in {took:.1f} s, arena "
            f"{plan.total_bytes / live_set_peak(ivs):.3f} x the live-set bound.")


def models(names) -> str:
    import model_zoo

    import fluidml_tvm

    rows = []
    for name in names:
        result = fluidml_tvm.compile(model_zoo.model_path(name), "x86-64")
        for fname, f in result.report.functions.items():
            rows.append(f"| {name} | {fname} | {len(f.tensors)} | {result.report.plan_seconds:.2f} "
                        f"| {f.arena_bytes / 2**20:.2f} | {f.status} |")
            print(rows[-1], flush=True)
    return ("| model | function | tensors | FluidMLPlan s | arena MiB | status |\n"
            "| --- | --- | ---: | ---: | ---: | --- |\n" + "\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 300, 400, 500])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--models", nargs="*", default=["bert-base", "minilm"])
    ap.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md")
    args = ap.parse_args()
    parts = [f"Measured on {cpu_name()}, one process (pure Python search, single-threaded), the machine shared with other work.",
             "### Zero-waste instances (optimum known)", generated(args.sizes, args.seeds, args.budget),
             "### A large graph", large()]
    if args.models:
        parts += ["### Real models", models(args.models)]
    text = "\n\n".join(parts)
    print(text)
    if args.write:
        write_section("planner", "## Memory planners: exact solver and scale\n\n" + text)


if __name__ == "__main__":
    main()
