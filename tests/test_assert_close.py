"""The comparison every numerical test relies on must not pass a missing or extra output."""

import numpy as np
import pytest

from conftest import assert_close


def test_a_missing_output_fails():
    a = np.ones(4, "float32")
    with pytest.raises(AssertionError, match="1 outputs, expected 2"):
        assert_close([a], [a, a])
    with pytest.raises(AssertionError):
        assert_close([a, a], [a])


def test_single_arrays_are_one_output_each():
    x = np.arange(6, dtype="float32").reshape(2, 3)
    assert_close(x, x.copy())
    with pytest.raises(AssertionError):
        assert_close(x, x + 1)
