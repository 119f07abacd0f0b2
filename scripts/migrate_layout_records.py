"""Rewrite layout cost records keyed by a CPU's name (``llvm -mtriple= -mcpu=haswell -mattr= -num-cores=2``)
in the key of the CPU's class (``llvm -arch=x86_64 -isa=avx2``), the core count a field of its own.

    python scripts/migrate_layout_records.py [FILE_OR_DIR ...]   (default: every schedules/*/layout_costs.jsonl)

Reading an old record already rekeys it (``LayoutRecord.from_json``); this writes the file in the new form.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fluidml_tvm.layout.costs import RECORD_FILE, LayoutRecord
from fluidml_tvm.targets import SCHEDULES_DIR


def migrate_file(path: Path) -> int:
    """Rewrite ``path`` in the class form; return how many lines changed."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    migrated = [LayoutRecord.from_json(line).to_json() for line in lines]
    path.write_text("".join(line + "\n" for line in migrated))
    return sum(a != b for a, b in zip(lines, migrated))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = [p / RECORD_FILE if p.is_dir() else p for p in args.paths] or sorted(SCHEDULES_DIR.glob(f"*/{RECORD_FILE}"))
    for path in paths:
        print(f"{path}: {migrate_file(path)} record(s) rekeyed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
