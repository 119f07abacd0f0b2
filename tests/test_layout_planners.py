import itertools
import math
import random

from hypothesis import given, settings, strategies as st

from fluidml_tvm.layout.planners import (
    CostTable,
    LayoutGraph,
    LayoutPlan,
    assignment_cost,
    chain_layouts,
    chains,
    exact_layouts,
    plan_layouts,
    search_space,
)

INF = math.inf


def random_case(seed, max_nodes=7, chain=False, finite_transforms=False):
    """A random DAG (or chain) with 1-3 layouts per tensor and integer costs, some ``inf``."""
    rng = random.Random(seed)
    layouts, nodes = {}, []

    def tensor(name):
        layouts[name] = rng.sample("ABC", rng.randint(1, 3))
        return name

    available = [tensor(f"x{i}") for i in range(1 if chain else rng.randint(1, 2))]
    for i in range(rng.randint(1, max_nodes)):
        if chain:
            ins = [available[-1]] + ([tensor(f"w{i}")] if rng.random() < 0.3 else [])
        else:
            ins = rng.sample(available, rng.randint(1, min(3, len(available))))
        nodes.append((f"n{i}", tuple(ins), tensor(f"t{i}")))
        available.append(f"t{i}")
    graph = LayoutGraph.build(layouts, nodes)
    table = CostTable()
    for node in graph.nodes:
        combos = itertools.product(*(graph.candidates(t) for t in (*node.inputs, node.output)))
        table.nodes[node.name] = {
            (c[:-1], c[-1]): rng.randint(0, 9) for c in combos if rng.random() > 0.15
        }
    for t in graph.tensors:
        table.transforms[t] = {
            (a, b): INF if not finite_transforms and rng.random() < 0.1 else rng.randint(1, 5)
            for a in layouts[t] for b in layouts[t] if a != b
        }
    return graph, table


def brute_force(graph, costs):
    """Minimum over every stored layout of every tensor; each node reads the cheapest way."""
    names = list(graph.tensors)
    node_best = {}
    for node in graph.nodes:
        table = {}
        for key in itertools.product(*(graph.candidates(t) for t in (*node.inputs, node.output))):
            table[key] = min(
                costs.node_cost(node, wants, key[-1])
                + sum(costs.transform_cost(graph.tensors[t], s, w)
                      for t, s, w in zip(node.inputs, key[:-1], wants))
                for wants in itertools.product(*(graph.candidates(t) for t in node.inputs)))
        node_best[node.name] = table
    best = INF
    for combo in itertools.product(*(graph.candidates(t) for t in names)):
        layout = dict(zip(names, combo))
        best = min(best, sum(node_best[n.name][tuple(layout[t] for t in (*n.inputs, n.output))]
                             for n in graph.nodes))
    return best


def assert_valid(graph, plan):
    assert set(plan.layouts) == set(graph.tensors)
    for t, layout in plan.layouts.items():
        assert layout in graph.candidates(t)
    for node in graph.nodes:
        wants = plan.wants[node.name]
        assert len(wants) == len(node.inputs)
        assert all(w in graph.candidates(t) for t, w in zip(node.inputs, wants))


seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(seeds)
def test_exact_equals_brute_force(seed):
    graph, costs = random_case(seed)
    plan = exact_layouts(graph, costs)
    assert_valid(graph, plan)
    assert plan.cost == assignment_cost(graph, costs, plan)
    assert plan.cost == brute_force(graph, costs)


@settings(max_examples=40, deadline=None)
@given(seeds)
def test_exact_equals_enumeration_of_full_plans(seed):
    """Tiny graphs: every stored layout and every wanted input layout, priced by assignment_cost."""
    graph, costs = random_case(seed, max_nodes=3)
    tensors = list(graph.tensors)
    slots = [(n.name, t) for n in graph.nodes for t in n.inputs]
    best = INF
    for stored in itertools.product(*(graph.candidates(t) for t in tensors)):
        for wants in itertools.product(*(graph.candidates(t) for _, t in slots)):
            per_node = {n.name: [] for n in graph.nodes}
            for (name, _), w in zip(slots, wants):
                per_node[name].append(w)
            plan = LayoutPlan(dict(zip(tensors, stored)), {k: tuple(v) for k, v in per_node.items()}, 0.0)
            best = min(best, assignment_cost(graph, costs, plan))
    assert exact_layouts(graph, costs).cost == best


@settings(max_examples=60, deadline=None)
@given(seeds)
def test_chain_dp_is_exact_on_chains(seed):
    graph, costs = random_case(seed, chain=True)
    assert len(chains(graph, costs)) == 1
    exact = exact_layouts(graph, costs).cost
    for options in ({}, {"lookahead": False, "sweep": False}):
        plan = chain_layouts(graph, costs, **options)
        assert_valid(graph, plan)
        assert plan.cost == assignment_cost(graph, costs, plan) == exact


@settings(max_examples=80, deadline=None)
@given(seeds, st.booleans())
def test_chain_dp_on_dags_is_valid_and_not_below_exact(seed, finite_transforms):
    graph, costs = random_case(seed, finite_transforms=finite_transforms)
    exact = exact_layouts(graph, costs).cost
    for options in ({}, {"lookahead": False, "sweep": False}, {"weighted": False}):
        plan = chain_layouts(graph, costs, **options)
        assert_valid(graph, plan)
        assert plan.cost == assignment_cost(graph, costs, plan) >= exact
        if finite_transforms and exact < INF:
            assert plan.cost < INF
    assert plan_layouts(graph, costs).cost == exact


@settings(max_examples=60, deadline=None)
@given(seeds)
def test_chains_partition_the_graph(seed):
    graph, costs = random_case(seed)
    pieces = chains(graph)
    assert sorted(v for c in pieces for v in c) == sorted(n.name for n in graph.nodes)
    by_name = {n.name: n for n in graph.nodes}
    for chain in pieces:
        for a, b in zip(chain, chain[1:]):
            assert by_name[a].output in by_name[b].inputs
    # the main chain is a longest path by hop count
    depth = {}
    for n in graph.nodes:
        depth[n.name] = 1 + max((depth[graph.producer(t).name] for t in n.inputs if graph.producer(t)),
                                default=0)
    assert len(pieces[0]) == max(depth.values())


def side_branch_case(deep):
    """n1 -> n2 -> n3 -> n4 is the main chain; t1 is also read by a side branch.

    n1 writes t1 in A for 0 or in B for 1; the main chain does not care.  The side
    branch wants t1 in B: directly (``deep=False``: s1 costs 10 on A) or through
    s1, which keeps its input's layout, and s2, which costs 10 on A (``deep=True``).
    """
    layouts = {"x": "A", "t1": "AB", "t2": "A", "t3": "A", "t4": "A", "v": "AB" if deep else "A", "w": "A"}
    nodes = [("n1", ("x",), "t1"), ("n2", ("t1",), "t2"), ("n3", ("t2",), "t3"), ("n4", ("t3",), "t4"),
             ("s1", ("t1",), "v")] + ([("s2", ("v",), "w")] if deep else [])
    graph = LayoutGraph.build(layouts, nodes)
    table = CostTable(transforms={"t1": {("A", "B"): 5, ("B", "A"): 5}, "v": {("A", "B"): 4, ("B", "A"): 4}})
    table.nodes["n1"] = {(("A",), "A"): 0, (("A",), "B"): 1}
    table.nodes["n2"] = {(("A",), "A"): 5, (("B",), "A"): 5}
    table.nodes["n3"] = table.nodes["n4"] = {(("A",), "A"): 5}
    if deep:
        table.nodes["s1"] = {(("A",), "A"): 0, (("B",), "B"): 0}
        table.nodes["s2"] = {(("A",), "A"): 10, (("B",), "A"): 0}
    else:
        table.nodes["s1"] = {(("A",), "A"): 10, (("B",), "A"): 0}
    return graph, table


def test_lookahead_prices_a_second_consumer():
    graph, costs = side_branch_case(deep=False)
    assert chains(graph, costs)[0] == ["n1", "n2", "n3", "n4"]
    assert exact_layouts(graph, costs).cost == 16  # t1 in B
    original = chain_layouts(graph, costs, lookahead=False, sweep=False)
    assert original.cost == 20 and original.layouts["t1"] == "A"  # main path wins, s1 pays 5
    assert chain_layouts(graph, costs, sweep=False).cost == 16
    assert chain_layouts(graph, costs, lookahead=False).cost == 16


def test_main_path_wins_loses_to_exact_search():
    """The gap: the side branch's preference is two nodes deep, past the one-node lookahead,
    and moving to the optimum needs t1 and v to change together, which the sweep never tries."""
    graph, costs = side_branch_case(deep=True)
    assert chains(graph, costs) == [["n1", "n2", "n3", "n4"], ["s1", "s2"]]
    exact = exact_layouts(graph, costs)
    assert exact.cost == 16 and (exact.layouts["t1"], exact.layouts["v"]) == ("B", "B")
    for options in ({}, {"lookahead": False, "sweep": False}):
        plan = chain_layouts(graph, costs, **options)
        assert plan.cost == 19 and plan.layouts["t1"] == "A"
        assert plan.transforms(graph) == [("v", "s2", "A", "B")]
    assert plan_layouts(graph, costs).cost == 16


def test_plan_layouts_falls_back_to_chain_dp():
    graph, costs = side_branch_case(deep=True)
    assert search_space(graph) > 1
    plan = plan_layouts(graph, costs, limit=1)
    assert plan.method == "chain-dp" and plan.cost == 19


def test_shared_tensor_is_written_once_and_each_reader_pays():
    graph = LayoutGraph.build({"x": "AB", "y": "A", "z": "A"}, [("f", ("x",), "y"), ("g", ("x",), "z")])
    costs = CostTable(nodes={"f": {(("A",), "A"): 0}, "g": {(("B",), "A"): 0}}, default_transform=3)
    plan = exact_layouts(graph, costs)
    assert plan.cost == 3 and len(plan.transforms(graph)) == 1
    assert assignment_cost(graph, costs, {"x": "A", "y": "A", "z": "A"}) == INF  # g cannot read A


def test_plans_and_graphs_print():
    graph, costs = side_branch_case(deep=True)
    text = str(plan_layouts(graph, costs))
    assert "cost 16" in text and "t1: B" in text
    assert "t1 = n1(x)" in str(graph)
