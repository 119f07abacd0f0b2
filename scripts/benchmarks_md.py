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
