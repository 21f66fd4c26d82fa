"""Tests of the candidate stack and the continuous strength interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from ctdid.core.candidates import Candidate, CandidateStack, interpolate


def make_stack(strengths: list[float], default_index: int) -> CandidateStack:
    """Constant 4x4 images whose value is 100 * strength (so the expected blend is known)."""
    cands = []
    for i, s in enumerate(strengths):
        direction = "default" if i == default_index else ("high" if i < default_index else "low")
        img = np.full((4, 4), 100.0 * s, np.float32)
        cands.append(Candidate(img, direction, abs(i - default_index), abs(s), abs(s), s, 0.0))  # type: ignore[arg-type]
    zeros = np.zeros((4, 4), np.float32)
    return CandidateStack(
        candidates=tuple(cands),
        default_index=default_index,
        t_high=zeros,
        t_low=zeros,
        body=np.ones((4, 4), bool),
        mode="robust",
        steps={},
        stop_reasons={},
        timings={},
        peak_memory_bytes=0,
        memory_method="estimate",
    )


def value(img: np.ndarray) -> float:
    assert img.dtype == np.float32 and img.shape == (4, 4)
    assert np.ptp(img) == 0
    return float(img[0, 0])


def test_ends_and_default_exact():
    stack = make_stack([-0.9, -0.5, -0.2, 0.0, 0.3, 0.8], 3)
    assert value(interpolate(stack, 0.0)) == 0.0
    assert interpolate(stack, -1.0) is not stack[0].image  # a copy
    np.testing.assert_array_equal(interpolate(stack, -1.0), stack[0].image)
    np.testing.assert_array_equal(stack.interpolate(1.0), stack[-1].image)
    # Beyond the last candidate's strength: that candidate.
    np.testing.assert_array_equal(stack.interpolate(0.95), stack[-1].image)
    np.testing.assert_array_equal(stack.interpolate(-0.95), stack[0].image)


def test_linear_between_neighbours_and_monotone():
    stack = make_stack([-0.9, -0.5, -0.2, 0.0, 0.3, 0.8], 3)
    assert value(stack.interpolate(0.55)) == pytest.approx(55.0, abs=1e-4)
    assert value(stack.interpolate(-0.35)) == pytest.approx(-35.0, abs=1e-4)
    assert value(stack.interpolate(0.1)) == pytest.approx(10.0, abs=1e-4)
    grid = np.linspace(-1, 1, 201)
    vals = [value(stack.interpolate(s)) for s in grid]
    assert np.all(np.diff(vals) >= 0)


def test_ties_do_not_divide_by_zero():
    stack = make_stack([-0.5, -0.5, 0.0, 0.4, 0.4, 0.9], 2)
    assert value(stack.interpolate(-0.5)) == pytest.approx(-50.0)
    assert value(stack.interpolate(0.4)) == pytest.approx(40.0)
    assert value(stack.interpolate(0.65)) == pytest.approx(65.0, abs=1e-4)


def test_stack_properties():
    stack = make_stack([-0.9, -0.5, 0.0, 0.3], 2)
    assert len(stack) == 4
    assert stack.default is stack[2]
    assert stack.images.shape == (4, 4, 4)
    np.testing.assert_array_equal(stack.strengths, [-0.9, -0.5, 0.0, 0.3])
    assert stack.coverage == {"high": 0.9, "low": 0.3}
    assert [c.direction for c in stack] == ["high", "high", "default", "low"]
    only_default = make_stack([0.0], 0)
    assert only_default.coverage == {"high": 0.0, "low": 0.0}
    assert value(only_default.interpolate(-0.7)) == 0.0


@pytest.mark.parametrize("s", [1.5, -1.01, float("nan"), float("inf")])
def test_interpolate_rejects_bad_strength(s):
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        make_stack([-0.5, 0.0, 0.5], 1).interpolate(s)


def test_stack_validates_order_and_default():
    with pytest.raises(ValueError, match="non-decreasing"):
        make_stack([-0.5, 0.0, 0.5, 0.2], 1)
    with pytest.raises(ValueError, match="direction 'default'"):
        stack = make_stack([-0.5, 0.0, 0.5], 1)
        CandidateStack(**{**stack.__dict__, "default_index": 0})
    with pytest.raises(ValueError, match="out of range"):
        stack = make_stack([-0.5, 0.0, 0.5], 1)
        CandidateStack(**{**stack.__dict__, "default_index": 5})
