"""minillama.course.checks: the messages a learner sees when a result is wrong."""

import numpy as np
import pytest
import torch

from minillama.course.checks import CheckFailed, check_close, check_equal, check_shape, check_true


def test_check_close_passes_within_tolerance():
    check_close("x", np.array([1.0, 2.0]), torch.tensor([1.0, 2.0 + 5e-6]), atol=1e-5)


def test_check_close_reports_where_and_by_how_much():
    with pytest.raises(CheckFailed) as e:
        check_close("rmsnorm", np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 2.0], [3.0, 4.5]]))
    msg = str(e.value)
    assert msg.startswith("rmsnorm: max |diff| 0.5 > tolerance")
    assert "1 of 4 values differ" in msg and "(1, 1)" in msg and "expected 4.5" in msg


def test_check_close_shape_none_and_nan():
    with pytest.raises(CheckFailed, match=r"shape \(2,\), expected \(3,\)"):
        check_close("v", np.zeros(2), np.zeros(3))
    with pytest.raises(CheckFailed, match="got None"):
        check_close("v", None, np.zeros(3))
    with pytest.raises(CheckFailed, match=r"non-finite value nan at index \(1,\)"):
        check_close("v", np.array([0.0, np.nan]), np.zeros(2))


def test_check_equal_messages():
    check_equal("ids", [1, 2, 3], [1, 2, 3])
    with pytest.raises(CheckFailed, match=r"first difference at position 2: got 4, expected 3"):
        check_equal("ids", [1, 2, 4], [1, 2, 3])
    with pytest.raises(CheckFailed, match="length 2, expected 3"):
        check_equal("ids", [1, 2], [1, 2, 3])
    with pytest.raises(CheckFailed, match=r"value for \(1, 2\) is 1, expected 2"):
        check_equal("pairs", {(1, 2): 1}, {(1, 2): 2})
    with pytest.raises(CheckFailed, match="got a list, expected a dict"):
        check_equal("pairs", [], {(1, 2): 2})
    with pytest.raises(CheckFailed, match=r"differs at index \(1,\)"):
        check_equal("arr", np.array([1, 5]), np.array([1, 2]))


def test_check_shape_and_true():
    check_shape("x", torch.zeros(2, 3), (2, 3))
    with pytest.raises(CheckFailed, match=r"shape \(3, 2\), expected \(2, 3\)"):
        check_shape("x", np.zeros((3, 2)), (2, 3))
    with pytest.raises(CheckFailed, match="mask: must be causal"):
        check_true("mask", False, "must be causal")
