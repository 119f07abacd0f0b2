"""Write a benchmark script's table into its own section of BENCHMARKS.md."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(key: str, table: str) -> None:
    """Replace (or append) the section between ``key``'s markers, with the command that made it."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), PATH.parent)
    command = " ".join(["python", script, *sys.argv[1:]])
    body = f"Command: `{command}`\n\n{table.strip()}\n"
    text = PATH.read_text() if PATH.exists() else "# Benchmarks\n"
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{body}{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    PATH.write_text(text)


def cpu_name() -> str:
    """The CPU a table was measured on: its model name and widest vector ISA (Linux), else the machine."""
    import platform

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{model} ({isa}, {os.cpu_count()} CPUs)" if isa else f"{model} ({os.cpu_count()} CPUs)"
