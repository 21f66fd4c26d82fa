"""benchmarks/bench_engine.py: the noise coverage and curve distance it reports."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest

from benchmark_loading import benchmark_module
from ctdid.core.candidates import Candidate, CandidateStack

N = 96
REGIONS = [(slice(8, 88), slice(8, 88))]


@pytest.fixture(scope="module")
def be() -> Iterator[ModuleType]:
    with benchmark_module("bench_engine") as module:
        yield module


def _flat(sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (40.0 + rng.normal(0.0, sigma, (N, N))).astype(np.float32)


def _stack(sigmas: list[float], default_index: int, t_high: float, t_low: float) -> CandidateStack:
    cands = []
    for i, sigma in enumerate(sigmas):
        direction = "high" if i < default_index else "low" if i > default_index else "default"
        s = (i - default_index) / max(default_index, len(sigmas) - 1 - default_index, 1)
        cands.append(Candidate(_flat(sigma, i), direction, i, abs(s), abs(s), s, 0.0))
    return CandidateStack(
        candidates=tuple(cands), default_index=default_index, t_high=_flat(t_high, 90),
        t_low=_flat(t_low, 91), body=np.ones((N, N), bool), mode="robust", steps={},
        stop_reasons={}, timings={}, peak_memory_bytes=0, memory_method="estimate", info={},
    )  # fmt: skip


def test_noise_coverage_is_the_share_of_the_noise_gap(be: ModuleType) -> None:
    stack = _stack([30.0, 20.0, 10.0, 8.0, 6.0], 2, t_high=40.0, t_low=4.0)
    noise = [be.noise_label(c.image, spacing=0.7, regions=REGIONS) for c in stack]
    out = be.noise_coverage(stack, noise, 0.7, REGIONS)
    assert out["noise_coverage_high"] == pytest.approx((30 - 10) / (40 - 10), abs=0.05)
    assert out["noise_coverage_low"] == pytest.approx((10 - 6) / (10 - 4), abs=0.05)
    assert out["noise_t_high_hu"] == pytest.approx(40.0, rel=0.05)


def test_noise_coverage_without_candidates_on_a_side_is_zero(be: ModuleType) -> None:
    stack = _stack([10.0, 8.0], 0, t_high=40.0, t_low=4.0)
    noise = [be.noise_label(c.image, spacing=0.7, regions=REGIONS) for c in stack]
    out = be.noise_coverage(stack, noise, 0.7, REGIONS)
    assert out["noise_coverage_high"] == 0.0 and out["noise_coverage_low"] > 0.0


def test_curve_distance_is_the_rmse_to_the_nearest_candidate(be: ModuleType) -> None:
    ref = _stack([20.0, 10.0, 5.0], 1, t_high=40.0, t_low=4.0)
    shifted = CandidateStack(
        candidates=tuple(
            Candidate(c.image + 3.0, c.direction, c.step, c.progress, c.progress_raw,
                      c.strength, c.elapsed) for c in ref
        ),
        default_index=1, t_high=ref.t_high, t_low=ref.t_low, body=ref.body, mode="fast",
        steps={}, stop_reasons={}, timings={}, peak_memory_bytes=0, memory_method="estimate",
        info={},
    )  # fmt: skip
    med, mx = be.curve_distance(ref, shifted)
    assert med == pytest.approx(3.0, abs=1e-4) and mx == pytest.approx(3.0, abs=1e-4)
    assert be.curve_distance(ref, ref) == (0.0, 0.0)
