"""Tuning databases: open a work dir safely (a corrupt line is named, moved aside, the rest kept) and find the shipped ones."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.s_tir import meta_schedule as ms

from ..targets import describe

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


class CorruptDatabaseError(ValueError):
    """A tuning database file with lines that are not tuning records."""


@dataclass(frozen=True)
class BadLine:
    """One unreadable line of a database file: where it is and why."""

    path: Path
    line: int  # 1-based
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def open_database(work_dir, *, repair: bool = True) -> ms.database.JSONDatabase:
    """The JSON database in ``work_dir`` (created when missing), checked line by line.

    A line that does not parse (a record cut short when a tuning process was
    killed, garbage) raises :class:`CorruptDatabaseError` naming the file and
    the line, or, with ``repair`` (the default), is dropped: the readable
    records are kept, the original file is moved aside to
    ``<file>.corrupt-<time>`` and a warning says which lines went where.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = work_dir / WORKLOAD_FILE, work_dir / RECORD_FILE
    try:
        return ms.database.JSONDatabase(str(paths[0]), str(paths[1]))
    except Exception as err:  # TVM says only e.g. "parallel_for_dynamic error with Unexpected EOF"
        failure = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    workloads, records, bad = _read_valid(*paths)
    if not bad:
        raise CorruptDatabaseError(f"{work_dir}: TVM cannot load this tuning database ({failure})")
    listed = "\n  ".join(str(b) for b in bad[:10]) + (f"\n  ... {len(bad) - 10} more" if len(bad) > 10 else "")
    if not repair:
        raise CorruptDatabaseError(f"corrupt tuning database in {work_dir}:\n  {listed}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path, lines in zip(paths, (workloads, records)):
        if any(b.path == path for b in bad):
            aside = path.with_name(f"{path.name}.corrupt-{stamp}")
            os.replace(path, aside)
            _write_lines(path, lines)
            moved.append(f"{path.name} -> {aside.name}")
    warnings.warn(
        f"corrupt tuning database in {work_dir}: dropped {len(bad)} unreadable line(s), kept "
        f"{len(records)} record(s) of {len(workloads)} workload(s); originals moved aside "
        f"({'; '.join(moved)}):\n  {listed}",
        stacklevel=2,
    )
    return ms.database.JSONDatabase(str(paths[0]), str(paths[1]))


def count_records(database: ms.Database, mod: tvm.IRModule) -> int:
    """How many candidates of ``mod``'s workload ``database`` holds, failed measurements included."""
    if not database.has_workload(mod):
        return 0
    workload = database.commit_workload(mod)
    return sum(1 for r in database.get_all_tuning_records() if r.workload.same_as(workload))


def best_records(database: ms.Database, destination) -> ms.database.JSONDatabase:
    """Copy the best record of each workload in ``database`` into a new JSON database dir (for shipping)."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in (WORKLOAD_FILE, RECORD_FILE):
        (destination / name).unlink(missing_ok=True)
    pruned = ms.database.JSONDatabase(work_dir=str(destination))
    database.dump_pruned(pruned)
    return pruned


def shipped_database_dir(target) -> Path | None:
    """The ``schedules/<arch>/`` directory for ``target``, or None when none is shipped for it."""
    path = describe(target).schedules_dir
    return path if path is not None and (path / RECORD_FILE).is_file() else None


def shipped_database(target) -> ms.database.JSONDatabase | None:
    """The tuning database shipped in ``schedules/`` for ``target``'s architecture, or None."""
    path = shipped_database_dir(target)
    return open_database(path, repair=False) if path else None


# ---------------------------------------------------------------------------
# line-level checking


def _read_valid(workload_path: Path, record_path: Path):
    """(workload lines, record lines with renumbered workload indices, bad lines) of the two files."""
    bad: list[BadLine] = []
    workloads: list[str] = []
    parsed: list[ms.database.Workload] = []
    index_map: dict[int, int] = {}  # position among the file's workloads -> position among the kept ones
    for position, (number, line) in enumerate(_lines(workload_path)):
        try:
            workload = ms.database.Workload.from_json(_parse(line, "a [hash, module] pair", 2))
        except Exception as err:  # noqa: BLE001 - any failure means the line is unusable
            bad.append(BadLine(workload_path, number, _reason(err)))
            continue
        index_map[position] = len(workloads)
        workloads.append(line)
        parsed.append(workload)
    workload_lines = len(index_map) + len(bad)
    records: list[str] = []
    for number, line in _lines(record_path):
        try:
            index, body = _parse(line, "a [workload index, record] pair", 2)
            if not isinstance(index, int) or index not in index_map:
                unreadable = isinstance(index, int) and 0 <= index < workload_lines
                dropped = " (its workload line is unreadable)" if unreadable else ""
                raise ValueError(f"workload index {index!r} does not name a workload{dropped}")
            ms.database.TuningRecord.from_json(body, parsed[index_map[index]])
        except Exception as err:  # noqa: BLE001
            bad.append(BadLine(record_path, number, _reason(err)))
            continue
        records.append(json.dumps([index_map[index], body], separators=(",", ":")))
    return workloads, records, bad


def _lines(path: Path):
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse(line: str, what: str, length: int):
    value = json.loads(line)
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"expected {what}, found {type(value).__name__}")
    return value


def _reason(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON ({err.msg} at column {err.colno}; a record cut short?)"
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
