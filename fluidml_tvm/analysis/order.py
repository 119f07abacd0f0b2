"""An execution order of a dataflow block that lowers its peak live bytes.

A dataflow block is pure, so any topological order of its bindings computes
the same values; only which tensors are live together changes.  Small blocks
get an exact search over the downsets of the dependence graph, larger ones a
greedy list schedule; the original order is kept unless one of them is better.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax

from ..memory.sizes import static_nbytes

_ALLOCATING = frozenset({"relax.call_tir", "relax.call_tir_inplace", "relax.call_dps_packed"})


@dataclass
class BlockGraph:
    """Bindings of one dataflow block as a dependence graph with tensor sizes."""

    deps: list  # node -> set of nodes it reads
    out_bytes: list  # node -> bytes it allocates (0 for views and tuples)
    roots: list  # node -> set of allocating nodes its value may alias
    escaping: set  # allocating nodes whose tensors outlive the block

    @property
    def size(self) -> int:
        return len(self.deps)

    def reads(self, v) -> set:
        """Allocating nodes whose tensors step ``v`` reads, directly or through a view."""
        out = set(self.roots[v]) - {v}
        for d in self.deps[v]:
            out |= self.roots[d]
        return out


def block_graph(block: relax.DataflowBlock, used_after: set) -> BlockGraph:
    """Build the graph; ``used_after`` holds vars read after the block."""
    index = {b.var: i for i, b in enumerate(block.bindings)}
    deps, out_bytes, roots = [], [], []
    for i, binding in enumerate(block.bindings):
        free = [v for v in relax.analysis.free_vars(binding.value) if v in index]
        deps.append({index[v] for v in free})
        value = binding.value
        allocating = isinstance(value, relax.Call) and getattr(value.op, "name", "") in _ALLOCATING
        if allocating:
            out_bytes.append(_bytes_of(binding.var.ty))
            roots.append({i})
        else:
            out_bytes.append(0)
            roots.append(set().union(*(roots[index[v]] for v in free)) if free else set())
    escaping = set()
    for v in used_after:
        if v in index:
            escaping |= roots[index[v]]
    return BlockGraph(deps, out_bytes, roots, escaping)


def peak_bytes(graph: BlockGraph, order) -> int:
    """Largest live total while running ``order`` (inputs and output of a step overlap)."""
    remaining = _consumer_counts(graph)
    live = peak = 0
    for v in order:
        live += graph.out_bytes[v]
        peak = max(peak, live)
        live -= _release(graph, v, remaining)
    return peak


def memory_order(graph: BlockGraph, exact_limit: int = 20000) -> list:
    """The best order found: exact when the downset lattice is small enough, else greedy."""
    original = list(range(graph.size))
    candidates = [original, _greedy(graph)]
    exact = _exact(graph, exact_limit) if graph.size <= 64 else None
    if exact is not None:
        candidates.append(exact)
    best = min(candidates, key=lambda o: peak_bytes(graph, o))
    return original if peak_bytes(graph, best) >= peak_bytes(graph, original) else best


def _consumer_counts(graph):
    """For every allocating node: how many steps still read its tensor (or a view of it)."""
    counts = {r: 0 for r in range(graph.size) if graph.out_bytes[r]}
    for v in range(graph.size):
        for r in graph.reads(v):
            if r in counts:
                counts[r] += 1
    for r in graph.escaping:
        counts[r] = counts.get(r, 0) + 1  # never released inside the block
    return counts


def _release(graph, v, remaining) -> int:
    freed = 0
    for r in graph.reads(v):
        if r in remaining:
            remaining[r] -= 1
            if remaining[r] == 0:
                freed += graph.out_bytes[r]
    if v in remaining and remaining[v] == 0:  # a dead value
        freed += graph.out_bytes[v]
    return freed


def _greedy(graph) -> list:
    """List scheduling: run the ready node that adds the least net memory."""
    users = [[] for _ in range(graph.size)]
    indeg = [len(d) for d in graph.deps]
    for v, ds in enumerate(graph.deps):
        for d in ds:
            users[d].append(v)
    remaining = _consumer_counts(graph)
    reads = [graph.reads(v) for v in range(graph.size)]
    ready = sorted(v for v in range(graph.size) if indeg[v] == 0)
    order = []

    def net(v):
        freed = sum(graph.out_bytes[r] for r in reads[v] if remaining.get(r) == 1)
        return graph.out_bytes[v] - freed

    while ready:
        v = min(ready, key=lambda v: (net(v), v))
        ready.remove(v)
        _release(graph, v, remaining)
        order.append(v)
        for u in users[v]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    return order


def _exact(graph, limit):
    """Dynamic programming over executed sets: min over orders of the running peak.

    The live bytes after a set has run depend only on the set, so the best
    peak to reach a set is the min over its last node of max(best peak of the
    rest, memory while that node runs).  Gives up beyond ``limit`` states.
    """
    n = graph.size
    full = (1 << n) - 1
    dep_mask = [sum(1 << d for d in ds) for ds in graph.deps]
    readers = {r: 0 for r in range(n) if graph.out_bytes[r]}
    for v in range(n):
        for r in graph.reads(v):
            if r in readers:
                readers[r] |= 1 << v

    def live_after(done):
        total = 0
        for r, rd in readers.items():
            if done >> r & 1 and (r in graph.escaping or rd & ~done):
                total += graph.out_bytes[r]
        return total

    best = {0: (0, None)}
    frontier = [0]
    while frontier:
        nxt = {}
        for done in frontier:
            peak, _ = best[done]
            base = live_after(done)
            for v in range(n):
                if done >> v & 1 or dep_mask[v] & ~done:
                    continue
                new = done | 1 << v
                cand = max(peak, base + graph.out_bytes[v])
                if new not in nxt or cand < nxt[new][0]:
                    nxt[new] = (cand, v)
        best.update(nxt)
        if len(best) > limit:
            return None
        frontier = list(nxt)
    order, done = [], full
    while done:
        v = best[done][1]
        order.append(v)
        done &= ~(1 << v)
    return order[::-1]


def _bytes_of(ty) -> int:
    if isinstance(ty, relax.TupleType):
        return sum(_bytes_of(f) for f in ty.fields)
    if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr):
        return static_nbytes(ty.shape.values, str(ty.dtype)) or 0
    return 0
