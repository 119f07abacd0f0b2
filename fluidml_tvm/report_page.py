"""The build report as one HTML page: figures (PNG) beside it, the numbers in ``report.json``."""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from .plot import plot_kernel_comparison, plot_live_bytes, plot_plans

FIGURES = {
    "plans.png": "Both memory plans on one scale. Left, TVM's default build: StaticPlanBlockMemory gives each "
                 "group of tensors that can share memory one storage; the storages are stacked, and each tensor "
                 "is a box (lifetime x bytes) in its storage's band. Right, fluidml-tvm: every tensor at its "
                 "offset in one arena. Boxes are labelled with the value written there, named after its ONNX "
                 "node (where there is room). The dotted lines are lower bounds of each build's own order: "
                 "TVM's is the largest total of tensors live at one step in TVM's order; fluidml's is proved "
                 "for its buffers in its order (in-place pairs included). fluidml runs another order, so its "
                 "arena may sit below TVM's bound: that line bounds TVM's order only. TVM's kernels also "
                 "allocate their own scratch (softmax, layer norm), which fluidml-tvm lifts into its arena: "
                 "the table gives both.",
    "live_bytes.png": "Bytes of the planned tensors live at each step, in each build's own order. The peak is "
                      "the live-set bound; a plan can only be as small as its curve's peak. fluidml-tvm plans the "
                      "scratch of its kernels (the short spikes: padded copies, softmax and layer-norm "
                      "temporaries) in its arena; TVM's kernels allocate theirs inside, outside this curve.",
    "kernels.png": "Time per inference of each kernel, heaviest first, each timed alone on copies of the "
                   "arguments it got in one inference (TVM's C++ time evaluator), named with the values "
                   "(ONNX nodes) it writes. The VM's own work (dispatch, allocation, checks) is its own row, "
                   "and what neither explains (kernels in sequence vs alone, noise) another: nothing is scaled. "
                   "TVM's default pipeline schedules no CPU kernel (that takes a tuning database): its kernels "
                   "run as their plain loop nests.",
}


def write_report(comparison, directory) -> dict:
    """Write ``index.html``, its figures and ``report.json`` into ``directory``; return what was written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    c = comparison
    figures = {"plans.png": plot_plans(c.tvm, c.fluidml, out / "plans.png"),
               "live_bytes.png": plot_live_bytes(c.tvm, c.fluidml, out / "live_bytes.png")}
    if c.fluidml_profile is not None:
        figures["kernels.png"] = plot_kernel_comparison(c.tvm_profile, c.tvm.kernels, c.fluidml_profile,
                                                        c.fluidml.kernels, out / "kernels.png")
    numbers = _numbers(c)
    (out / "report.json").write_text(json.dumps({
        "model": c.model, "target": c.target, "command": c.command, "numbers": numbers, "figures": figures,
        "fluidml": asdict(c.fluidml), "tvm": asdict(c.tvm), "not_profiled": c.not_profiled}, indent=1))
    (out / "index.html").write_text(_page(c, numbers, figures))
    return {"html": str(out / "index.html"), "json": str(out / "report.json"),
            "figures": [str(out / f) for f in figures]}


def _numbers(c) -> dict:
    f, t = c.fluidml, c.tvm
    n = {"tvm_storages_bytes": t.planner_bytes, "fluidml_arena_bytes": f.arena_bytes,
         "tvm_planner_on_fluidml_kernels_bytes": f.tvm_planner_bytes,
         "tvm_order_live_set_bound_bytes": t.live_set_lower_bound, "fluidml_proved_bound_bytes": f.proved_bound,
         "tvm_kernel_scratch_bytes": t.kernel_scratch_bytes, "fluidml_kernel_scratch_bytes": f.kernel_scratch_left_bytes,
         "tvm_total_bytes": t.planner_bytes + t.kernel_scratch_bytes, "fluidml_total_bytes": f.total_bytes,
         "plan_status": f.status, "tvm_weight_bytes": c.tvm_weight_bytes, "fluidml_weight_bytes": c.fluidml_weight_bytes,
         "layouts_chosen": len(f.layouts), "folds_taken": len(f.folds), "in_place_pairs": len(f.inplace)}
    if c.fluidml_profile is not None:
        n["tvm_latency_seconds"] = c.tvm_profile.latency
        n["fluidml_latency_seconds"] = c.fluidml_profile.latency
    return n


def _mib(n) -> str:
    return f"{n / 2**20:.2f} MiB"


def _ratio(a, b) -> str:
    return f"x{a / b:.2f}" if b else "-"


def _page(c, n, figures) -> str:
    e = html.escape
    rows = [
        ("activation memory: the plan plus kernel scratch", _mib(n["tvm_total_bytes"]), _mib(n["fluidml_total_bytes"]),
         _ratio(n["fluidml_total_bytes"], n["tvm_total_bytes"])),
        ("tensors the plan places (TVM: its storages summed; fluidml: the arena)", _mib(n["tvm_storages_bytes"]),
         _mib(n["fluidml_arena_bytes"]), _ratio(n["fluidml_arena_bytes"], n["tvm_storages_bytes"])),
        ("largest scratch a kernel allocates for itself, outside the plan (e.g. a padded copy)",
         _mib(n["tvm_kernel_scratch_bytes"]), _mib(n["fluidml_kernel_scratch_bytes"]), ""),
        ("TVM's planner on fluidml's kernels (same tensors, TVM's storages)", "",
         _mib(n["tvm_planner_on_fluidml_kernels_bytes"]), ""),
        ("lower bound of the build's own order", _mib(n["tvm_order_live_set_bound_bytes"]),
         f"{_mib(n['fluidml_proved_bound_bytes'])} ({e(n['plan_status'])})", ""),
        ("weights", _mib(n["tvm_weight_bytes"]), _mib(n["fluidml_weight_bytes"]),
         _ratio(n["fluidml_weight_bytes"], n["tvm_weight_bytes"])),
    ]
    if "fluidml_latency_seconds" in n:
        rows.append(("latency (median)", f"{n['tvm_latency_seconds'] * 1e3:.3f} ms",
                     f"{n['fluidml_latency_seconds'] * 1e3:.3f} ms",
                     _ratio(n["fluidml_latency_seconds"], n["tvm_latency_seconds"])))
    else:
        rows.append(("latency", "not measured", e(c.not_profiled), ""))
    table = "".join(f"<tr><td>{e(a)}</td><td>{b}</td><td>{d}</td><td>{r}</td></tr>" for a, b, d, r in rows)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>fluidml-tvm report: {e(Path(c.model).name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "img{max-width:100%;border:1px solid #ddd}figcaption{font-size:13px;color:#444;margin-bottom:2em}"
        "pre{background:#f4f4f4;padding:6px}</style></head><body>",
        f"<h1>fluidml-tvm report: {e(Path(c.model).name)}</h1>",
        f"<p>Target <code>{e(c.target)}</code>. Made by:</p><pre>{e(c.command)}</pre>",
        "<h2>Figures</h2><table><tr><th></th><th>TVM default build</th><th>fluidml-tvm</th><th>ratio</th></tr>",
        table, "</table>",
    ]
    for name, facts in figures.items():
        parts.append(f"<figure><img src='{name}' alt='{name}'><figcaption>{e(FIGURES[name])}</figcaption></figure>")
    if "kernels.png" not in figures:
        parts.append(f"<p>Per-kernel time: not measured: {e(c.not_profiled)}.</p>")
    parts.append(_layouts(c.fluidml.layouts))
    parts.append(_folds(c.fluidml.folds))
    reasons = "; ".join(sorted(set(c.fluidml.unplanned.values()))) or "none"
    parts.append(f"<p>{len(c.fluidml.inplace)} outputs written in place over their input; "
                 f"{len(c.fluidml.unplanned)} tensors left to TVM's planner ({e(reasons)}).</p></body></html>")
    return "\n".join(parts)


def _layouts(layouts) -> str:
    e = html.escape
    if not layouts:
        return "<h2>Weight layouts</h2><p>No weight was re-laid out (no float32 matmul or conv2d with a constant weight, or not a CPU target).</p>"
    rows = []
    for d in layouts:
        if d["seconds"]:
            best = sorted(d["seconds"].items(), key=lambda kv: kv[1])
            why = "; ".join(f"{k}: {v * 1e6:.1f} us" for k, v in best[:4])
        else:
            why = "no cost record for this CPU class: the default block (two vectors)"
        rows.append(f"<tr><td>{e(d['value'])}</td><td>{e(' '.join(map(str, d['workload'])))}</td>"
                    f"<td>{e(d['layout'])} / {d['block']}</td><td>{e(why)}</td></tr>")
    return ("<h2>Weight layouts</h2><p>Each matmul/conv2d weight is stored in the layout the whole-graph planner "
            "chose from measured (or predicted) kernel times; <i>layout / block</i> is the packed block of "
            "output columns (the kernel's register tile).</p><table><tr><th>value (ONNX node)</th><th>workload"
            "</th><th>layout / block</th><th>why (kernel time per candidate)</th></tr>" + "".join(rows) + "</table>")


def _folds(folds) -> str:
    e = html.escape
    if not folds:
        return "<h2>Layout folds</h2><p>No copy kernel (reshape/transpose) was folded into a neighbour.</p>"
    rows = "".join(f"<tr><td>{e(f['copy'])}</td><td>{e(f['kind'])}</td><td>{e(f['into'])}</td><td>{e(f['why'])}</td></tr>"
                   for f in folds)
    return ("<h2>Layout folds</h2><p>Copy kernels merged into the kernel that writes (producer) or reads (consumer) "
            "their tensor, so the copy is never stored.</p><table><tr><th>copy (ONNX node)</th><th>fold</th>"
            "<th>into</th><th>why</th></tr>" + rows + "</table>")
