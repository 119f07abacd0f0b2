"""The figures: memory plans (a box per tensor, lifetime x bytes), live bytes, and kernel times (matplotlib)."""

from __future__ import annotations

from .analysis.nests import SLOTS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_memory_timeline(plan, path) -> None:
    """Draw a FunctionReport's arena (one box per tensor) and save it as an image."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    mib = 2**20
    for t in plan.tensors:
        color = "tab:orange" if t.buffer != t.name else "tab:blue"
        ax.add_patch(Rectangle((t.start / SLOTS, t.offset / mib), (t.end - t.start + 1) / SLOTS, t.nbytes / mib,
                               facecolor=color, edgecolor="black", linewidth=0.3, alpha=0.8))
    last = max((t.end for t in plan.tensors), default=1) / SLOTS + 1
    ax.axhline(plan.arena_bytes / mib, color="tab:green", label=f"arena {plan.arena_bytes / mib:.2f} MiB")
    ax.axhline(plan.tvm_planner_bytes / mib, color="tab:red", linestyle="--",
               label=f"TVM planner {plan.tvm_planner_bytes / mib:.2f} MiB")
    ax.axhline(plan.tvm_order_lower_bound / mib, color="gray", linestyle=":",
               label=f"live-set bound, TVM order {plan.tvm_order_lower_bound / mib:.2f} MiB")
    ax.set_xlim(0, last)
    ax.set_ylim(0, max(plan.arena_bytes, plan.tvm_planner_bytes) / mib * 1.08 or 1)
    ax.set_xlabel("step (binding index)")
    ax.set_ylabel("offset in arena (MiB)")
    ax.set_title(f"{plan.function}: {len(plan.tensors)} tensors (orange: written in place)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_kernel_times(rows, path, top: int = 25) -> None:
    """Bar chart of the ``top`` heaviest rows of a profile (:func:`fluidml_tvm.runtime.profile.profile`):
    kernels, then the VM's own time and what neither explains; they add up to the latency."""
    plt = _pyplot()
    total = sum(r.seconds for r in rows) or 1.0
    kernels = [r for r in rows if r.calls and not r.name.startswith("(")]
    shown = (kernels[:top] + [r for r in rows if r not in kernels])[::-1]
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(shown) + 1.5))
    ax.barh([f"{r.name} x{r.calls}" if r.calls else r.name for r in shown], [r.seconds * 1e3 for r in shown], color="tab:blue")
    for i, r in enumerate(shown):
        ax.text(r.seconds * 1e3, i, f" {100 * r.seconds / total:.1f}%", va="center", fontsize=8)
    ax.set_xlabel("ms per inference (all calls; each kernel timed alone)")
    ax.set_title(f"where {total * 1e3:.2f} ms per inference go")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)



def plot_plans(tvm_plan, plan, path) -> dict:
    """TVM's default plan (a band per storage) beside fluidml's arena (tensors at their offsets), one scale.

    ``tvm_plan`` is a :class:`~fluidml_tvm.report.DefaultBuildPlan`, ``plan`` a
    :class:`~fluidml_tvm.report.FunctionReport`. Tensors are boxes of lifetime
    x bytes, labelled with the value (ONNX node) written there where the box
    has room. Returns what each panel drew.
    """
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    mib = 2**20
    base, top = {}, 0
    for storage, nbytes in tvm_plan.storages.items():
        base[storage], top = top, top + nbytes
    tvm_boxes = [(t.name, t.nbytes, t.start, t.end, base[t.storage]) for t in tvm_plan.tensors]
    our_boxes = [(t.name, t.nbytes, t.start, t.end, t.offset) for t in plan.tensors]
    height = max(tvm_plan.planner_bytes, plan.arena_bytes, 1) * 1.12 / mib
    width = max([b[3] for b in tvm_boxes + our_boxes] + [SLOTS]) / SLOTS + 1
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), sharey=True)
    facts = {"panels": {}}
    panels = (
        ("tvm", axes[0], tvm_boxes, tvm_plan.values, "tab:red",
         f"TVM default build: {len(tvm_boxes)} tensors in {len(tvm_plan.storages)} storages "
         f"(+{tvm_plan.kernel_scratch_bytes / mib:.2f} MiB of scratch inside a kernel, not drawn)",
         [(tvm_plan.planner_bytes, "tab:red", "-", "TVM's storages, summed"),
          (tvm_plan.live_set_lower_bound, "gray", ":", "live-set bound of TVM's order")]),
        ("fluidml", axes[1], our_boxes, plan.values, "tab:blue",
         f"fluidml-tvm: {len(our_boxes)} tensors in one arena ({plan.status})",
         [(plan.arena_bytes, "tab:green", "-", "fluidml arena"),
          (plan.proved_bound, "gray", ":", "lower bound of fluidml's order (these buffers)")]),
    )
    # Each TVM storage is one allocation held for the whole run: a band, shaded in turn, its tensors inside it.
    for i, (storage, nbytes) in enumerate(tvm_plan.storages.items()):
        axes[0].add_patch(Rectangle((0, base[storage] / mib), width, nbytes / mib, facecolor="0.93" if i % 2 else "0.85",
                                    edgecolor="0.6", linewidth=0.4, gid="storage",
                                    label="one TVM storage (allocation), whole run" if i == 0 else None))
    for key, ax, boxes, values, color, title, lines in panels:
        labels = []
        for name, nbytes, start, end, offset in boxes:
            x, w, y, h = start / SLOTS, (end - start + 1) / SLOTS, offset / mib, nbytes / mib
            ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="black", linewidth=0.3, alpha=0.55,
                                   gid="tensor"))
            label = values.get(name)
            # characters of 6-point text across the box (a panel is ~130 wide), or up it (~75 high)
            across, up = int(w / width * 130), int(h / height * 75)
            if label and ((across >= 6 and h >= 0.03 * height) or up >= 10):
                room, rotation = (across, 0) if across >= 6 and h >= 0.03 * height else (up, 90)
                shown = label if len(label) <= room else "…" + label[-(room - 1):]  # the tail names the op
                ax.text(x + w / 2, y + h / 2, shown, ha="center", va="center", fontsize=6, rotation=rotation,
                        clip_on=True)
                labels.append(label)
        for value, line_color, style, what in lines:
            ax.axhline(value / mib, color=line_color, linestyle=style, label=f"{what}: {value / mib:.2f} MiB")
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.set_xlabel("step (binding index, each build in its own order)")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        facts["panels"][key] = {"rectangles": sum(p.get_gid() == "tensor" for p in ax.patches), "labels": labels,
                                "bands": sum(p.get_gid() == "storage" for p in ax.patches),
                                "ylim_mib": list(ax.get_ylim())}
    axes[0].set_ylabel("memory (MiB): TVM's storages stacked / fluidml's arena offset")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return facts


def _live_curve(tensors):
    """Steps and live bytes of tensors (``nbytes``, ``start``, ``end``), as a step function in binding steps."""
    events: dict = {}
    for t in tensors:
        events[t.start] = events.get(t.start, 0) + t.nbytes
        events[t.end + 1] = events.get(t.end + 1, 0) - t.nbytes
    xs, ys, live = [0.0], [0], 0
    for t in sorted(events):
        live += events[t]
        xs.append(t / SLOTS)
        ys.append(live)
    return xs, ys


def plot_live_bytes(tvm_plan, plan, path) -> dict:
    """Bytes of live tensors over each build's own order: TVM's default build and fluidml-tvm's."""
    plt = _pyplot()
    mib = 2**20
    fig, ax = plt.subplots(figsize=(10, 4))
    facts = {}
    for key, tensors, color, what in (
        ("tvm", tvm_plan.tensors, "tab:red", "TVM default build"),
        ("fluidml", plan.tensors, "tab:blue", "fluidml-tvm"),
    ):
        xs, ys = _live_curve(tensors)
        ax.step(xs, [y / mib for y in ys], where="post", color=color, label=f"{what} (peak {max(ys) / mib:.2f} MiB)")
        facts[key] = {"peak_bytes": max(ys), "points": len(xs)}
    ax.set_xlabel("step (binding index, each build in its own order)")
    ax.set_ylabel("live tensors (MiB)")
    ax.set_title("bytes of planned tensors live at each step (fluidml's spikes: kernel scratch it lifted into the "
                 "arena; TVM keeps that inside its kernels)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return facts


def plot_kernel_comparison(tvm_profile, tvm_kernels, profile, kernels, path, top: int = 15) -> dict:
    """Per-kernel time, heaviest first, TVM's default build above fluidml-tvm's, on one time scale.

    Each kernel is named with the values (ONNX nodes) its calls write;
    ``*_kernels`` map kernel -> values (``FunctionReport.kernels``).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(12, 0.55 * top + 3), sharex=True)
    facts = {}
    for key, ax, prof, names, color, what in (
        ("tvm", axes[0], tvm_profile, tvm_kernels, "tab:red", "TVM default build"),
        ("fluidml", axes[1], profile, kernels, "tab:blue", "fluidml-tvm"),
    ):
        rows = prof.kernels[:top] + prof.rows[len(prof.kernels):]
        values = [list(dict.fromkeys(names.get(r.name, []))) if r.calls else [] for r in rows]
        labels = [_kernel_label(r, v) for r, v in zip(rows, values)]
        ax.barh(labels[::-1], [r.seconds * 1e3 for r in rows][::-1], color=color)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{what}: {prof.latency * 1e3:.3f} ms per inference\n"
                     f"its {min(top, len(prof.kernels))} heaviest of {len(prof.kernels)} kernels, each timed alone",
                     fontsize=10)
        facts[key] = {"bars": len(ax.patches), "latency_seconds": prof.latency,
                      "rows": [{"kernel": r.name, "values": v, "seconds": r.seconds} for r, v in zip(rows, values)]}
    axes[1].set_xlabel("ms per inference (all calls of the kernel)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long names: tight_layout alone cut them at the left edge
    plt.close(fig)
    return facts


def _kernel_label(row, values: list) -> str:
    if not row.calls or row.name.startswith("("):
        return row.name
    shown = ", ".join(v if len(v) <= 24 else "…" + v[-23:] for v in values[:2])  # the tail names the op
    shown += f" +{len(values) - 2}" if len(values) > 2 else ""
    name = row.name if len(row.name) <= 30 else row.name[:29] + "…"
    return f"{shown}  [{name} x{row.calls}]" if shown else f"{name} x{row.calls}"  # the ONNX nodes first
