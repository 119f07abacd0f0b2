"""The memory timeline: every planned tensor as a box of offset x lifetime."""

from __future__ import annotations

from .analysis.nests import SLOTS


def plot_memory_timeline(plan, path) -> None:
    """Draw a FunctionReport's arena (one box per tensor) and save it as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(10, 5))
    mib = 2**20
    for name, nbytes, start, end, buffer, storage, offset in plan.tensors:
        color = "tab:orange" if buffer != name else "tab:blue"
        ax.add_patch(Rectangle((start / SLOTS, offset / mib), (end - start + 1) / SLOTS, nbytes / mib,
                               facecolor=color, edgecolor="black", linewidth=0.3, alpha=0.8))
    last = max((t[3] for t in plan.tensors), default=1) / SLOTS + 1
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
