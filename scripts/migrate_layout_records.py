"""Rewrite layout cost records keyed by a CPU's name (``llvm -mtriple= -mcpu=haswell -mattr= -num-cores=2``)
to the key of the CPU's class (``llvm -arch=x86_64 -isa=avx2``) with the core count as a field.

    python scripts/migrate_layout_records.py [FILE_OR_DIR ...]   (default: every schedules/*/layout_costs.jsonl)

Records already in the class form are kept as they are; the file is rewritten in place.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from fluidml_tvm.layout.costs import RECORD_FILE
from fluidml_tvm.targets import SCHEDULES_DIR, describe

_OLD_KEY = re.compile(r"^(?P<kind>\S+) -mtriple=(?P<triple>\S*) -mcpu=(?P<mcpu>\S*) -mattr=(?P<mattr>\S*)"
                      r" -num-cores=(?P<cores>\d+)$")


def migrate_line(line: str) -> str:
    """One record line in the class form (unchanged when it already is)."""
    record = json.loads(line)
    old = _OLD_KEY.match(record["target"])
    if old is None:
        return line
    spec = {"kind": old["kind"]}
    if old["triple"]:
        spec["mtriple"] = old["triple"]
    if old["mcpu"]:
        spec["mcpu"] = old["mcpu"]
    if old["mattr"]:
        spec["mattr"] = old["mattr"].split(",")
    new = {"target": describe(spec).record_key, "cores": int(old["cores"])}
    new.update({k: v for k, v in record.items() if k not in ("target", "cores")})
    return json.dumps(new)


def migrate_file(path: Path) -> int:
    """Rewrite ``path``; return how many records changed."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    migrated = [migrate_line(line) for line in lines]
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
