"""Imports only go down the layers, and no two modules import each other, directly or in a circle.

Every module of the package is parsed (imports inside functions count: a late
import that dodges a cycle is still a cycle). ``LAYERS`` is the one statement
of the layer order: a top-level module or package may import only from layers
below its own, never from another member of its own layer.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fluidml_tvm"

# Lowest first.
LAYERS = (
    ("runtime", "targets", "frontend", "example_model"),  # the deploy side, the target, the importers
    ("memory", "layout"),  # plans as data and their planners: arenas, whole-graph layouts and their costs
    ("options",),  # the build options: names the memory planners; read by every layer above that builds
    ("analysis",),  # reading Relax/TIR: what to do
    ("rewrite", "schedule"),  # doing it to the IR; default schedules and the tuned-schedule database
    ("transform", "report", "plot", "artifact"),  # the passes; what reads or writes a planned build
    ("pipeline",),  # the stages and the passes in them
    ("compiler", "tuning"),  # entry points
    ("bench", "explain", "report_page"),  # builds and times a model here or on a board; the two builds compared
    ("cli",),
)


def modules() -> dict:
    """``{dotted name: path}`` of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set:
    """The package's modules ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[: len(base) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:  # ``from . import runtime`` names a module, ``from .x import f`` does not
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    # The root package loads nothing on import (its names resolve lazily), so importing it is no edge.
    return {m for m in found if m in known and m != name and m != PACKAGE.name}


def layer_of(name: str) -> tuple:
    unit = name.split(".")[1] if "." in name else name
    for index, members in enumerate(LAYERS):
        if unit in members:
            return index, unit
    raise AssertionError(f"{name}: its top-level name {unit!r} is in no layer of LAYERS: add it there")


def graph() -> dict:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_import_goes_down_the_layers():
    wrong = []
    for name, targets in graph().items():
        if name == PACKAGE.name:
            continue
        (level, unit) = layer_of(name)
        for target in sorted(targets):
            target_level, target_unit = layer_of(target)
            if target_unit != unit and target_level >= level:
                wrong.append(f"{name} imports {target} ({target_unit}: layer {target_level} >= {level})")
    assert not wrong, "imports that do not go down the layers:\n  " + "\n  ".join(wrong)


def test_no_module_imports_itself_in_a_circle():
    edges = graph()
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles, "import cycles:\n  " + "\n  ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_root_package_imports_nothing_of_its_own_eagerly():
    assert graph()[PACKAGE.name] == set()


def _strongly_connected(edges: dict) -> list:
    """Tarjan's strongly connected components of ``edges``."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            out.append(component)

    for v in edges:
        if v not in index:
            visit(v)
    return out
