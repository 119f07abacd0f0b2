"""Run the tutorials and write their outputs (text and figures) into the notebooks, as committed.

    python scripts/run_tutorials.py            # every notebook in tutorials/
    python scripts/run_tutorials.py 01 02      # the notebooks whose names start so

Each runs top to bottom in a fresh kernel (this interpreter's environment) in a temporary
directory, so the files it writes stay out of the repository; its figures are embedded in
the notebook. Tutorial 03 needs the emulated aarch64 board (`make board`).
`make tutorials` runs this; `tests/test_tutorials.py` runs the same notebooks under nbmake.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def run(path: Path, timeout: int) -> float:
    """Execute ``path`` in place (outputs replaced); the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    for number, cell in enumerate(notebook.cells):  # nbformat 4.5 wants cell ids; stable ones keep diffs small
        cell.setdefault("id", f"cell-{number:02d}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fluidml-tutorial-") as work:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
    seconds = time.perf_counter() - start
    for cell in notebook.cells:  # the committed notebook does not change with the date it was run on
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(notebook, path)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="prefixes of the notebooks to run (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may take (1800)")
    args = parser.parse_args(argv)
    paths = [p for p in sorted(TUTORIALS.glob("*.ipynb")) if not args.names or p.name.startswith(tuple(args.names))]
    if not paths:
        parser.error(f"no notebook in {TUTORIALS} starts with {' or '.join(args.names)}")
    for path in paths:
        print(f"{path.name}: {run(path, args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
