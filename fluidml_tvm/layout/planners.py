"""Whole-graph layout selection: FluidML's chain DP, an exact search, and one cost model for both.

A :class:`LayoutGraph` is a DAG of nodes, each reading some tensors and writing
one.  Every tensor has candidate layouts (opaque hashable labels: a permutation
``(0, 2, 1, 3)``, ``"NCHW"``, ``("packed", 16)``); the first candidate is its
default.  A plan gives every tensor one *stored* layout (the one its producer
writes; a graph input or constant is re-laid-out once at compile time, for
free) and every node the layouts it *wants* its inputs in.  A consumer that
wants another layout than the stored one pays ``transform_cost`` on that edge,
so a tensor with several consumers is written once and each consumer pays its
own transform.  :func:`assignment_cost` prices any such plan; every planner here
is judged by it.

Planners
--------
:func:`exact_layouts`
    Exact minimum.  Given the stored layouts, nodes decouple (each picks its
    cheapest wanted inputs), so the search runs over stored layouts only, as a
    DP over the nodes in topological order whose state is the stored layout of
    every *live* tensor (written or first read, and not yet read by all its
    consumers).  This is exhaustive search with the dead tensors eliminated; its
    work is bounded by :func:`search_space`, the largest number of live-layout
    combinations, which is at most the full assignment space.
:func:`chain_layouts`
    FluidML's method.  :func:`chains` splits the graph: the main chain is the
    longest path (weighted by each node's cost in default layouts; hop count
    with ``costs=None``), the remaining nodes split into connected components,
    and each is split again until every piece is a chain.  Each chain is solved
    by ``DP(e, L) = min over L_in of node_cost(L_in -> L) + transform +
    DP(e_in, L_in)``; a multi-input node minimises jointly over all its inputs.
    An input that is not the previous chain node's output is a pseudo graph
    input: fixed to its stored layout if an earlier chain decided it (the
    node pays the transform to what it wants), otherwise free.  Earlier chains
    win ("main path wins"): a later chain that writes a tensor an earlier chain
    already read pays the transforms to the layouts that chain wanted.
:func:`plan_layouts`
    The exact search when :func:`search_space` is at most ``limit``, else the
    chain DP.

Multi-consumer tensors in the chain DP
--------------------------------------
Two things beyond FluidML's DP, both on by default:

* *lookahead*: when the DP prices layout ``L`` for a chain tensor, each
  consumer that is not the next chain node and has not been planned yet adds
  its regret for ``L``: ``min_W [transform(L -> W) + best_c(W)] - min_W
  best_c(W)``, where ``best_c(W)`` is that consumer's cheapest cost with this
  input in ``W`` and its other tensors free.  It is 0 when ``L`` suits the
  consumer and ``inf`` when no layout reachable from ``L`` lets it run.
* *sweep*: after all chains, a coordinate descent changes one tensor's stored
  layout at a time while that lowers :func:`assignment_cost`.

Neither makes the DP exact off chains: a consumer's regret sees one node deep,
and the sweep cannot flip two tensors together (``tests/test_layout_planners.py``
has a six-node graph where the DP's plan costs 19 and the optimum 16).  With finite
transform costs the DP always finds a finite plan when one exists; with
``inf`` transforms it may not (choosing layouts under hard constraints is a
constraint-satisfaction problem), which is one reason to prefer the exact
search on graphs it can handle.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Protocol, Sequence

INF = math.inf


@dataclass(frozen=True)
class Tensor:
    """A tensor and the layouts it may be stored in (the first is the default)."""

    name: str
    layouts: tuple

    def __post_init__(self):
        if not self.layouts:
            raise ValueError(f"tensor {self.name} has no candidate layout")


@dataclass(frozen=True)
class Node:
    """One operator: reads ``inputs`` (tensor names, repeats allowed), writes ``output``."""

    name: str
    inputs: tuple
    output: str


@dataclass
class LayoutGraph:
    """Tensors with candidate layouts and the nodes between them, in topological order.

    Tensors no node writes are graph inputs or constants.
    """

    tensors: dict  # name -> Tensor
    nodes: list  # Node, topological order

    def __post_init__(self):
        written = set()
        for node in self.nodes:
            for t in (*node.inputs, node.output):
                if t not in self.tensors:
                    raise ValueError(f"{node.name}: unknown tensor {t}")
            if node.output in written or node.output in node.inputs:
                raise ValueError(f"{node.name}: {node.output} written twice or read by its writer")
            for t in node.inputs:
                if any(n.output == t for n in self.nodes[self.nodes.index(node):]):
                    raise ValueError(f"{node.name} reads {t} before it is written")
            written.add(node.output)
        self._producer = {n.output: n for n in self.nodes}
        self._consumers = {t: [] for t in self.tensors}
        for node in self.nodes:
            for slot, t in enumerate(node.inputs):
                self._consumers[t].append((node, slot))

    @classmethod
    def build(cls, layouts: Mapping[str, Sequence], nodes: Sequence[tuple]) -> "LayoutGraph":
        """``build({"x": ["A", "B"], ...}, [("mm", ("x", "w"), "y"), ...])``."""
        tensors = {t: Tensor(t, tuple(ls)) for t, ls in layouts.items()}
        return cls(tensors, [Node(n, tuple(ins), out) for n, ins, out in nodes])

    def producer(self, tensor: str):
        """The node writing ``tensor``, or ``None`` for a graph input or constant."""
        return self._producer.get(tensor)

    def consumers(self, tensor: str) -> list:
        """``(node, slot)`` for every read of ``tensor``."""
        return self._consumers[tensor]

    def candidates(self, tensor: str) -> tuple:
        return self.tensors[tensor].layouts

    def __str__(self):
        lines = [f"{n.output} = {n.name}({', '.join(n.inputs)})" for n in self.nodes]
        lines += [f"  {t.name}: {list(t.layouts)}" for t in self.tensors.values()]
        return "\n".join(lines)


class LayoutCosts(Protocol):
    """What a planner needs to know about a target."""

    def node_cost(self, node: Node, input_layouts: tuple, output_layout: Hashable) -> float:
        """Time of ``node`` reading its inputs in ``input_layouts``; ``inf`` if unsupported."""

    def transform_cost(self, tensor: Tensor, from_layout: Hashable, to_layout: Hashable) -> float:
        """Time to re-lay-out ``tensor``; 0 when the layouts are equal."""


@dataclass
class CostTable:
    """Costs from explicit tables; a missing node entry is unsupported (``inf``).

    ``nodes[node_name][(input_layouts, output_layout)]`` and
    ``transforms[tensor_name][(from, to)]``; a missing transform costs
    ``default_transform``.
    """

    nodes: dict = field(default_factory=dict)
    transforms: dict = field(default_factory=dict)
    default_transform: float = INF

    def node_cost(self, node, input_layouts, output_layout):
        return self.nodes.get(node.name, {}).get((tuple(input_layouts), output_layout), INF)

    def transform_cost(self, tensor, from_layout, to_layout):
        if from_layout == to_layout:
            return 0.0
        return self.transforms.get(tensor.name, {}).get((from_layout, to_layout), self.default_transform)


@dataclass
class LayoutPlan:
    """Stored layout per tensor, wanted input layouts per node, and what that costs."""

    layouts: dict  # tensor name -> stored layout
    wants: dict  # node name -> tuple of wanted input layouts
    cost: float
    method: str = ""

    def transforms(self, graph: LayoutGraph) -> list:
        """``(tensor, node, from, to)`` for every edge that re-lays-out."""
        return [
            (t, n.name, self.layouts[t], w)
            for n in graph.nodes
            for t, w in zip(n.inputs, self.wants[n.name])
            if w != self.layouts[t]
        ]

    def __str__(self):
        lines = [f"layout plan ({self.method}), cost {self.cost:g}"]
        lines += [f"  {t}: {layout}" for t, layout in self.layouts.items()]
        for n, ws in self.wants.items():
            lines.append(f"  {n} reads {list(ws)}")
        return "\n".join(lines)


def assignment_cost(graph: LayoutGraph, costs: LayoutCosts, plan) -> float:
    """Node costs plus a transform on every edge where the consumer wants another layout.

    ``plan`` is a :class:`LayoutPlan` or a mapping tensor -> stored layout (then
    every node reads its inputs as stored).
    """
    layouts = plan.layouts if isinstance(plan, LayoutPlan) else plan
    total = 0.0
    for node in graph.nodes:
        stored = tuple(layouts[t] for t in node.inputs)
        wants = plan.wants[node.name] if isinstance(plan, LayoutPlan) else stored
        total += costs.node_cost(node, tuple(wants), layouts[node.output])
        for t, s, w in zip(node.inputs, stored, wants):
            total += costs.transform_cost(graph.tensors[t], s, w)
    return total


class _Pricer:
    """Memoised cheapest way for one node to run, given its tensors' stored layouts."""

    def __init__(self, graph: LayoutGraph, costs: LayoutCosts):
        self.graph, self.costs = graph, costs
        self._best: dict = {}
        self._regret: dict = {}

    def transform(self, tensor: str, src, dst) -> float:
        return 0.0 if src == dst else self.costs.transform_cost(self.graph.tensors[tensor], src, dst)

    def best(self, node: Node, stored: tuple, out) -> tuple:
        """``(cost, wants)``: cheapest wanted input layouts with inputs stored as ``stored``."""
        key = (node.name, stored, out)
        if key not in self._best:
            best = (INF, stored)
            for wants in itertools.product(*(self.graph.candidates(t) for t in node.inputs)):
                c = self.costs.node_cost(node, wants, out)
                if c == INF:
                    continue
                c += sum(self.transform(t, s, w) for t, s, w in zip(node.inputs, stored, wants))
                if c < best[0]:
                    best = (c, wants)
            self._best[key] = best
        return self._best[key]

    def regret(self, node: Node, slot: int, layout) -> float:
        """Extra cost to ``node`` of input ``slot`` stored as ``layout``, other tensors free."""
        key = (node.name, slot, layout)
        if key not in self._regret:
            t = node.inputs[slot]
            by_want = {}
            for wants in itertools.product(*(self.graph.candidates(x) for x in node.inputs)):
                for out in self.graph.candidates(node.output):
                    c = self.costs.node_cost(node, wants, out)
                    by_want[wants[slot]] = min(by_want.get(wants[slot], INF), c)
            floor = min(by_want.values())
            reach = min(self.transform(t, layout, w) + c for w, c in by_want.items())
            self._regret[key] = 0.0 if floor == INF else reach - floor
        return self._regret[key]

    def complete(self, layouts: Mapping, method: str) -> LayoutPlan:
        """The plan that reads every input the cheapest way given the stored ``layouts``."""
        wants, total = {}, 0.0
        for node in self.graph.nodes:
            c, w = self.best(node, tuple(layouts[t] for t in node.inputs), layouts[node.output])
            wants[node.name] = w
            total += c
        return LayoutPlan(dict(layouts), wants, total, method)


# -- exact search ---------------------------------------------------------------------------


def _live_sets(graph: LayoutGraph) -> list:
    """For each node in order: (tensors first touched there, tensors live after it)."""
    last_read = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last_read[t] = i
    seen, live, steps = set(), [], []
    for i, node in enumerate(graph.nodes):
        new = [t for t in dict.fromkeys((*node.inputs, node.output)) if t not in seen]
        seen.update(new)
        live = [t for t in (*live, *new) if last_read.get(t, -1) > i]
        steps.append((new, list(live)))
    return steps


def search_space(graph: LayoutGraph) -> int:
    """Most live-layout combinations the exact search holds at once (its cost per node)."""
    widest, live = 1, []
    for new, after in _live_sets(graph):
        widest = max(widest, math.prod(len(graph.candidates(t)) for t in (*live, *new)))
        live = after
    return widest


def exact_layouts(graph: LayoutGraph, costs: LayoutCosts, limit: int = 100_000) -> LayoutPlan:
    """The cheapest plan, by a DP over the stored layouts of live tensors.

    Raises ``ValueError`` if :func:`search_space` exceeds ``limit``.
    """
    if search_space(graph) > limit:
        raise ValueError(f"layout search space {search_space(graph)} exceeds {limit}")
    pricer = _Pricer(graph, costs)
    # state: live tensors' layouts -> (cost so far, decisions so far)
    states = {(): (0.0, ())}
    live: list = []
    for node, (new, after) in zip(graph.nodes, _live_sets(graph)):
        nxt: dict = {}
        for key, (cost, decided) in states.items():
            known = dict(zip(live, key))
            for choice in itertools.product(*(graph.candidates(t) for t in new)):
                layouts = {**known, **dict(zip(new, choice))}
                c, _ = pricer.best(node, tuple(layouts[t] for t in node.inputs), layouts[node.output])
                c += cost
                nkey = tuple(layouts[t] for t in after)
                if nkey not in nxt or c < nxt[nkey][0]:
                    nxt[nkey] = (c, decided + tuple(zip(new, choice)))
        states, live = nxt, after
    _, decided = min(states.values(), key=lambda v: v[0])
    layouts = {t: graph.candidates(t)[0] for t in graph.tensors}  # unread, unwritten tensors
    layouts.update(decided)
    return pricer.complete(layouts, "exact")


# -- FluidML's chain DP -----------------------------------------------------------------------


def _default_cost(graph: LayoutGraph, costs: LayoutCosts, node: Node) -> float:
    """Node cost in default layouts; else its cheapest supported layouts; else 1."""
    c = costs.node_cost(node, tuple(graph.candidates(t)[0] for t in node.inputs),
                        graph.candidates(node.output)[0])
    if c == INF:
        c = min((costs.node_cost(node, w, o)
                 for w in itertools.product(*(graph.candidates(t) for t in node.inputs))
                 for o in graph.candidates(node.output)), default=INF)
    return 1.0 if c == INF else c


def chains(graph: LayoutGraph, costs: LayoutCosts | None = None) -> list:
    """Split the nodes into chains, main chain first (lists of node names).

    The main chain is the longest path by default-layout node cost (hop count
    when ``costs`` is ``None``; equal weights go to the path with more
    nodes); the rest splits into connected components,
    each split the same way.
    """
    weight = {n.name: 1.0 if costs is None else _default_cost(graph, costs, n) for n in graph.nodes}
    preds = {n.name: [graph.producer(t).name for t in n.inputs if graph.producer(t)] for n in graph.nodes}
    succs = {n.name: [] for n in graph.nodes}
    for v, ps in preds.items():
        for p in ps:
            succs[p].append(v)
    order = [n.name for n in graph.nodes]

    def split(part: list) -> list:
        inside = set(part)
        dist, back = {}, {}
        for v in part:
            best = max((p for p in preds[v] if p in inside), key=lambda p: dist[p], default=None)
            base = dist[best] if best else (0.0, 0)
            dist[v] = (base[0] + weight[v], base[1] + 1)  # ties go to the path with more hops
            back[v] = best
        v = max(part, key=lambda u: dist[u])
        chain = []
        while v is not None:
            chain.append(v)
            v = back[v]
        chain.reverse()
        rest = [v for v in part if v not in set(chain)]
        out = [chain]
        while rest:
            component, todo = set(), [rest[0]]
            while todo:
                u = todo.pop()
                if u not in component:
                    component.add(u)
                    todo += [w for w in (*preds[u], *succs[u]) if w in rest and w not in component]
            out += split([v for v in rest if v in component])
            rest = [v for v in rest if v not in component]
        return out

    return split(order) if order else []


def chain_layouts(graph: LayoutGraph, costs: LayoutCosts, *, weighted: bool = True,
                  lookahead: bool = True, sweep: bool = True) -> LayoutPlan:
    """FluidML's chain DP; ``lookahead=False, sweep=False`` is the original method."""
    pricer = _Pricer(graph, costs)
    by_name = {n.name: n for n in graph.nodes}
    stored: dict = {}  # decided stored layouts
    wanted: dict = {}  # (node name, slot) -> layout, for nodes already planned
    for chain in chains(graph, costs if weighted else None):
        nodes = [by_name[v] for v in chain]
        _solve_chain(graph, pricer, nodes, stored, wanted, lookahead)
    for t in graph.tensors:
        if t not in stored:  # read by no node, written by none
            stored[t] = graph.candidates(t)[0]
    layouts = {t: stored[t] for t in graph.tensors}
    if sweep:
        _sweep(graph, pricer, layouts)
    return pricer.complete(layouts, "chain-dp")


def _solve_chain(graph, pricer, nodes, stored, wanted, lookahead):
    """One chain's DP and backtrack; records stored layouts and wanted inputs."""
    planned = {name for name, _ in wanted}
    table = []  # per node: {out layout: (cost, prev layout, wants)}
    prev_tensor, prev = None, {None: 0.0}
    for i, node in enumerate(nodes):
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        out_penalty = {}
        for layout in graph.candidates(node.output):
            p = 0.0
            for consumer, slot in graph.consumers(node.output):
                if (consumer.name, slot) in wanted:
                    p += pricer.transform(node.output, layout, wanted[consumer.name, slot])
                elif lookahead and consumer is not nxt and consumer.name not in planned:
                    p += pricer.regret(consumer, slot, layout)
            out_penalty[layout] = p
        row = {}
        for l_prev, c_prev in prev.items():
            for wants in itertools.product(*(graph.candidates(t) for t in node.inputs)):
                c_in = c_prev
                for t, w in zip(node.inputs, wants):
                    if t == prev_tensor:
                        c_in += pricer.transform(t, l_prev, w)
                    elif t in stored:
                        c_in += pricer.transform(t, stored[t], w)
                for out in graph.candidates(node.output):
                    c = c_in + pricer.costs.node_cost(node, wants, out) + out_penalty[out]
                    if out not in row or c < row[out][0]:
                        row[out] = (c, l_prev, wants)
        table.append(row)
        prev_tensor, prev = node.output, {o: v[0] for o, v in row.items()}
    out = min(table[-1], key=lambda o: table[-1][o][0])
    for node, row in zip(reversed(nodes), reversed(table)):
        stored[node.output] = out
        _, out, wants = row[out]
        for slot, w in enumerate(wants):
            wanted[node.name, slot] = w
    # graph inputs and constants first read here: store them as most readers want
    for node in nodes:
        for t in node.inputs:
            if t not in stored and graph.producer(t) is None:
                reads = [wanted[c.name, s] for c, s in graph.consumers(t) if (c.name, s) in wanted]
                stored[t] = min(graph.candidates(t),
                                key=lambda l: sum(pricer.transform(t, l, w) for w in reads))


def _sweep(graph, pricer, layouts, rounds: int = 20):
    """Change one tensor's stored layout at a time while that lowers the plan's cost."""

    def local(nodes):
        return sum(pricer.best(n, tuple(layouts[t] for t in n.inputs), layouts[n.output])[0]
                   for n in nodes)

    for _ in range(rounds):
        improved = False
        for t in graph.tensors:
            touched = list({n.name: n for n in
                            ([graph.producer(t)] if graph.producer(t) else [])
                            + [c for c, _ in graph.consumers(t)]}.values())
            current, best_layout = local(touched), layouts[t]
            for layout in graph.candidates(t):
                layouts[t] = layout
                c = local(touched)
                if c < current:
                    current, best_layout, improved = c, layout, True
            layouts[t] = best_layout
        if not improved:
            return


def plan_layouts(graph: LayoutGraph, costs: LayoutCosts, limit: int = 100_000) -> LayoutPlan:
    """Exact search when :func:`search_space` is at most ``limit``, else the chain DP."""
    if search_space(graph) <= limit:
        return exact_layouts(graph, costs, limit)
    return chain_layouts(graph, costs)
