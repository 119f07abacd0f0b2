"""Shared fixtures: small Relax modules at each stage of TVM's pipeline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from fluidml_tvm.pipeline import stages

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
BOARD = Path(os.environ.get("FLUIDML_AARCH64_BOARD", Path.home() / ".cache/fluidml-tvm/aarch64"))
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # model_zoo, benchmarks_md


def zoo_model(name: str) -> Path:
    """The ONNX file of zoo model ``name`` (scripts/model_zoo.py), exported on first use."""
    import model_zoo

    return model_zoo.model_path(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI every component a test needs is set up, so a skip is a defect: report it as a failure."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI sets up everything a test needs): {report.longrepr}"


@pytest.fixture
def aarch64_board() -> Path:
    """The emulated aarch64 board (scripts/setup_aarch64_board.sh): a skip without it, a failure in CI."""
    if not (BOARD / "READY").is_file():
        why = f"emulated aarch64 board not set up at {BOARD} (scripts/setup_aarch64_board.sh; `make test` does it)"
        pytest.skip(why)  # a failure in CI (pytest_runtest_makereport)
    return BOARD


def run_stages(mod, *names, target=TARGET, **options):
    parts = stages(target, **options)
    with target:
        return tvm.transform.Sequential([p for n in names for p in parts[n]])(mod)


def run_vm(executable, inputs):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return [o.numpy() for o in out] if isinstance(out, (list, tuple, tvm.ir.Array)) else [out.numpy()]


def tensor_constants(mod) -> list[np.ndarray]:
    """The distinct tensor constants the Relax functions of ``mod`` hold (what the VM stores)."""
    seen = {}

    @relax.expr_functor.visitor
    class _Constants(relax.PyExprVisitor):
        def visit_generic_const_(self, const):
            if isinstance(const.value, tvm.runtime.Tensor):
                seen[const] = const.value.numpy()

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            _Constants().visit_expr(func)
    return list(seen.values())


def assert_close(actual, expected, rel=1e-4):
    """Every output within ``rel`` of the reference's largest magnitude; the same number of outputs."""
    actual, expected = ([x] if isinstance(x, np.ndarray) else list(x) for x in (actual, expected))
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for a, e in zip(actual, expected):
        scale = max(float(np.abs(e).max()), 1e-6)
        assert float(np.abs(a - e).max()) / scale <= rel


@pytest.fixture
def target():
    return TARGET
