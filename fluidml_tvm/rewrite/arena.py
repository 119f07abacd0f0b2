"""Apply a MemoryPlan to a lowered Relax function.

Each planned ``R.builtin.alloc_tensor`` becomes an ``R.memory.alloc_tensor`` at
its offset in a storage allocated once; compiled kernels reject a tensor with
a non-zero ``byte_offset``, so offset tensors pass through
``R.memory.ensure_zero_offset``, which folds the offset into the data pointer.
"""

from __future__ import annotations

from tvm import relax


def rewrite_function(func: relax.Function, placements: dict, storages: list) -> relax.Function:
    """Return ``func`` with ``placements[var] = (storage index, offset)`` applied.

    ``placements`` is keyed by the binding var of each ``R.builtin.alloc_tensor``;
    ``storages`` are :class:`~fluidml_tvm.memory.plan.StorageSpec`.
    """
    return _ArenaRewriter(placements, storages).visit_expr(func)


@relax.expr_functor.mutator
class _ArenaRewriter(relax.PyExprMutator):
    def __init__(self, placements, storages):
        super().__init__()
        self.placements = placements
        self.storages = storages
        self.storage_vars: dict = {}

    def visit_var_binding_(self, binding):
        placed = self.placements.get(binding.var)
        if placed is None:
            return super().visit_var_binding_(binding)
        idx, offset = placed
        storage = self._storage(idx)
        shape, dtype, device_index, _ = binding.value.args
        tensor = relax.op.memory.alloc_tensor(storage, offset, shape, dtype, int(device_index))
        if offset:
            tensor = relax.op.memory.ensure_zero_offset(self.builder_.emit(tensor, binding.var.name + "_raw"))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(tensor)))

    def _storage(self, idx):
        # Allocated right before its first tensor, so it is defined in the same scope.
        if idx not in self.storage_vars:
            spec = self.storages[idx]
            call = relax.op.memory.alloc_storage(
                relax.ShapeExpr([spec.nbytes]), spec.device_index, spec.scope, "uint8"
            )
            self.storage_vars[idx] = self.builder_.emit(call, f"arena{idx}" if idx else "arena")
        return self.storage_vars[idx]
