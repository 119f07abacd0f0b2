"""fluidml_tvm.runtime.Model shared between threads, and closed while in use (issue 8, items 1 and 7)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from fluidml_tvm import runtime

import stress_threads  # noqa: E402


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return stress_threads.build_artifact(tmp_path_factory.mktemp("threads") / "model")


def test_four_threads_200_calls_match_single_threaded(artifact):
    """Item 1: 4 threads x 200 calls on one model, in a fresh process; every output bit-identical."""
    (result,) = stress_threads.run_rounds(artifact, rounds=1, threads=4, calls=200)
    assert stress_threads.clean(result), result
    assert result["calls"] == 800


def test_serialized_calls_on_one_vm(artifact):
    """max_concurrency=1: calls wait for the one VM instead of making more; outputs unchanged."""
    model = runtime.load(artifact, max_concurrency=1)
    x = np.random.default_rng(0).standard_normal((16, stress_threads.WIDTH)).astype("float32")
    ref = model(x)
    seen = []

    def work():
        seen.extend(np.array_equal(model(x)[0], ref[0]) for _ in range(25))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * 75 and model._vms == 1


def test_calling_a_closed_model_says_so(artifact):
    """Item 7: was `'NoneType' object is not callable`."""
    model = runtime.load(artifact)
    model.close()
    model.close()  # twice is fine
    with pytest.raises(RuntimeError, match=r"model .* is closed"):
        model(np.zeros((16, stress_threads.WIDTH), "float32"))


def test_close_while_other_threads_call(artifact):
    """Calls running when close() comes finish with correct outputs; later ones raise; nothing crashes."""
    model = runtime.load(artifact)
    x = np.random.default_rng(1).standard_normal((16, stress_threads.WIDTH)).astype("float32")
    ref = model(x)[0]
    outcomes, started = [], threading.Barrier(5)

    def work():
        started.wait()
        for _ in range(200):
            try:
                outcomes.append(np.array_equal(model(x)[0], ref))
            except RuntimeError as err:
                outcomes.append("closed" if "is closed" in str(err) else repr(err))
                return

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    model.close()
    for t in threads:
        t.join()
    assert set(outcomes) <= {True, "closed"}, set(outcomes)
    assert outcomes.count("closed") == 4  # every thread saw the close
