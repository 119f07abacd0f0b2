import itertools

from hypothesis import given, settings, strategies as st

from fluidml_tvm.analysis.order import BlockGraph, _exact, _greedy, memory_order, peak_bytes


@st.composite
def dags(draw):
    n = draw(st.integers(2, 7))
    deps, out_bytes, roots = [], [], []
    for v in range(n):
        parents = draw(st.sets(st.integers(0, v - 1), max_size=min(v, 3))) if v else set()
        view = v > 0 and len(parents) == 1 and draw(st.booleans())
        deps.append(parents)
        out_bytes.append(0 if view else draw(st.integers(1, 8)) * 64)
        roots.append(set(roots[next(iter(parents))]) if view else {v})
    escaping = roots[n - 1] | (roots[0] if draw(st.booleans()) else set())
    return BlockGraph(deps, out_bytes, roots, escaping)


def topological_orders(graph):
    for perm in itertools.permutations(range(graph.size)):
        pos = {v: i for i, v in enumerate(perm)}
        if all(pos[d] < pos[v] for v in range(graph.size) for d in graph.deps[v]):
            yield list(perm)


def is_topological(graph, order):
    pos = {v: i for i, v in enumerate(order)}
    return sorted(order) == list(range(graph.size)) and all(
        pos[d] < pos[v] for v in range(graph.size) for d in graph.deps[v]
    )


@settings(max_examples=120, deadline=None)
@given(dags())
def test_exact_search_matches_exhaustive_enumeration(graph):
    best = min(peak_bytes(graph, o) for o in topological_orders(graph))
    exact = _exact(graph, limit=100000)
    assert is_topological(graph, exact)
    assert peak_bytes(graph, exact) == best


@settings(max_examples=120, deadline=None)
@given(dags())
def test_chosen_order_is_topological_and_never_worse(graph):
    for order in (_greedy(graph), memory_order(graph)):
        assert is_topological(graph, order)
    original = list(range(graph.size))
    assert peak_bytes(graph, memory_order(graph)) <= peak_bytes(graph, original)


def test_reordering_defers_a_big_tensor_past_a_memory_hungry_branch():
    # 0 -> big 1 ----------------> 5
    # 0 -> 2 -> 3 -> 4 (512-byte tensors) -> 5: running 2, 3, 4 first keeps 1 short-lived.
    graph = BlockGraph(
        deps=[set(), {0}, {0}, {2}, {3}, {1, 4}],
        out_bytes=[64, 1024, 512, 512, 64, 64],
        roots=[{0}, {1}, {2}, {3}, {4}, {5}],
        escaping={5},
    )
    assert peak_bytes(graph, list(range(6))) == 2048
    assert peak_bytes(graph, memory_order(graph)) == 1152
