"""FoldLayoutKernels: copy kernels (reshape, permute_dims) merged into the kernel that writes or reads their tensor."""

from __future__ import annotations

import json

import tvm
import tvm_ffi
from tvm import relax

from ..analysis.layout_kernels import FOLDS_ATTR, Fold, find_folds, is_primitive, kernel_primfuncs
from ..analysis.phase import PipelinePlacementError, unlegalized_ops
from ..rewrite.fold_layout import fold_groups, fold_layout_kernels, merged_kernel
from ..schedule import schedule_function
from ..targets import describe


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.FoldLayoutKernels")
class FoldLayoutKernels:
    """Merge each chosen layout kernel into its producer or its consumer, so no copy of the tensor is stored.

    Place it between ``FuseOps`` and ``FuseTIR``: the copy kernels are grouped
    functions there, and FuseTIR then makes one PrimFunc of each merged group
    (the producer writes the permuted layout, or the consumer reads through it).
    Before ``LegalizeOps`` it raises ``PipelinePlacementError``. Each function
    lists its folds (kind, copy, partner, why) as JSON in its :data:`FOLDS_ATTR`.

    Parameters
    ----------
    target : TargetDescription
        For the default ``decide`` (or anything :func:`~fluidml_tvm.targets.describe` takes).
    decide : callable, optional
        ``decide(fold) -> bool`` for each :class:`~fluidml_tvm.analysis.layout_kernels.Fold`,
        producer fold of a layout kernel first; the first one accepted is applied
        (at most one per layout kernel).  Default: :class:`KeepsSchedule`, which
        needs a CPU target; on another the module is left unchanged.
    costs : KernelCosts, optional
        Measured kernel times for the default ``decide``; default: none.
    """

    def __init__(self, target, decide=None, costs=None):
        self.target = describe(target)
        self.decide = decide
        self.costs = costs

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        funcs = [(gv, f) for gv, f in mod.functions.items() if isinstance(f, relax.Function)]
        if not any(is_primitive(f) for _, f in funcs):
            for gv, func in funcs:
                if unlegalized_ops(func):
                    raise PipelinePlacementError(
                        f"FoldLayoutKernels runs after FuseOps and before FuseTIR, but function "
                        f"'{gv.name_hint}' still calls {', '.join(unlegalized_ops(func)[:5])}: "
                        "insert it after LegalizeOps and FuseOps."
                    )
        if self.decide is None and not self.target.cpu:
            return mod  # the default choice asks the CPU schedule rules
        out = mod
        for gv, func in funcs:
            if is_primitive(func):
                continue
            folds = find_folds(out, func)
            if not folds:
                continue
            decide = self.decide or KeepsSchedule(out, func, self.target, self.costs)
            chosen = choose(folds, decide)
            why = getattr(decide, "why", {})
            out = fold_layout_kernels(out, gv, chosen)
            if chosen:
                out[gv] = out[gv].with_attr(FOLDS_ATTR, json.dumps([
                    {"kind": f.kind, "copy": f.layout_var.name, "into": f.partner_var.name,
                     "why": why.get(f, "accepted by the caller's decide")} for f in chosen]))
        return out


def choose(folds: list[Fold], decide) -> list[Fold]:
    """The folds ``decide`` accepts, at most one per layout kernel (the first accepted, in order)."""
    chosen, taken = [], set()
    for fold in folds:
        if fold.layout_var in taken or not decide(fold):
            continue
        chosen.append(fold)
        taken.add(fold.layout_var)
    return chosen


class KeepsSchedule:
    """Accept a fold when it saves a copy and the merged kernel keeps the partner's CPU schedule.

    Rejected: layout kernels that are only reshapes (TVM's lowering makes
    them views, so merging saves nothing) and folds whose merged kernel (what
    FuseTIR makes of the partner's group plus this layout kernel) gets another
    rule from :func:`fluidml_tvm.schedule.schedule_function` than the partner's
    group alone, or none: the joint layout/schedule check.  E.g. the matmul
    rule refuses a head split whose heads its register tile (the packed
    weight's block) straddles.

    With ``costs`` (:class:`~fluidml_tvm.layout.costs.KernelCosts`) a
    fold whose merged kernel is measured slower than the partner and the copy
    kernel apart is rejected too (a packed matmul reading its rows through a
    permutation can lose more than the copy costs); without records for all
    three kernels the schedule check decides alone.

    Accepted folds are remembered, so a second fold into the same partner is
    judged on the whole merged group: call it only in :func:`choose`, which
    applies every fold accepted.
    """

    def __init__(self, mod: tvm.IRModule, func: relax.Function, target, costs=None):
        self.mod = mod
        self.func = func
        self.target = target
        self.costs = costs
        self.accepted: list[Fold] = []
        self.why: dict = {}  # accepted Fold -> the reason, in words
        self._bound = {b.var: b.value for block in func.body.blocks for b in block.bindings}
        self._rules: dict = {}  # structural hash -> [(merged PrimFunc, rule)]

    def __call__(self, fold: Fold) -> bool:
        if self._is_view(fold.layout_var):
            return False
        apart, before = self._rule(self._group(self.accepted, fold.partner_var))
        merged, after = self._rule(self._group(self.accepted + [fold], fold.partner_var))
        if before is None or after != before:
            return False
        why = f"saves a copy; the merged kernel keeps the {before} schedule"
        if self.costs is not None:
            copy = merged_kernel(self.mod, self._group([], fold.layout_var))
            times = [self.costs(k) for k in (merged, apart, copy)]
            if None not in times and times[0] > times[1] + times[2]:
                return False
            if None not in times:
                why += (f"; measured {times[0] * 1e6:.1f} us merged vs {times[1] * 1e6:.1f} + "
                        f"{times[2] * 1e6:.1f} us apart")
        self.accepted.append(fold)
        self.why[fold] = why
        return True

    def _is_view(self, var) -> bool:
        return all(relax.analysis.has_reshape_pattern(self.mod[gv])
                   for gv in kernel_primfuncs(self.mod, self._bound[var]))

    def _group(self, folds, var) -> list:
        """The bindings merged with ``var`` by ``folds`` (``var``'s own binding alone if none)."""
        for bindings in fold_groups(self.func, folds).values():
            if any(b.var.same_as(var) for b in bindings):
                return bindings
        return [next(b for block in self.func.body.blocks for b in block.bindings if b.var.same_as(var))]

    def _rule(self, bindings) -> tuple:
        """The group's kernel and the rule that schedules it (None if none does)."""
        kernel = merged_kernel(self.mod, bindings)
        # every layer of a transformer merges the same kernels: ask once
        seen = self._rules.setdefault(tvm_ffi.structural_hash(kernel), [])
        for known, rule in seen:
            if tvm_ffi.structural_equal(known, kernel):
                return known, rule
        _, rule = schedule_function(kernel, self.target, False)
        seen.append((kernel, rule))
        return kernel, rule
