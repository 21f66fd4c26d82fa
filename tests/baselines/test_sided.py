"""SidedDenoiser: one method per side, joined at the shared default."""

from __future__ import annotations

import numpy as np
import pytest

from ctdid.baselines import BaselineDenoiser, SidedDenoiser
from ctdid.core.did.order_guard import OrderGuard, noise_proxy


def test_blend_high_iterate_low_joins_the_two_stacks(model, phantom) -> None:
    noisy, _, _ = phantom
    sided = SidedDenoiser(model, high="blend", low="iterate", n_candidates=3).run(noisy)
    blend = BaselineDenoiser(model, method="blend", n_candidates=3).run(noisy)
    it = BaselineDenoiser(model, method="iterate", n_candidates=3).run(noisy)
    d = sided.default_index
    assert d == blend.default_index == 3
    for a, b in zip(sided.candidates[: d + 1], blend.candidates[: d + 1], strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    for a, b in zip(sided.candidates[d:], it.candidates[it.default_index :], strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    s = [c.strength for c in sided.candidates]
    assert s == sorted(s) and s[0] < 0 < s[-1]
    assert sided.info["curve"] == {"high": "blend", "low": "iterate"}


def test_unknown_side_method_is_refused(model) -> None:
    with pytest.raises(ValueError, match="low: unknown side method"):
        SidedDenoiser(model, high="blend", low="tv")


def test_order_guard_refuses_a_noisier_low_candidate() -> None:
    import torch

    rng = np.random.default_rng(1)
    mask = torch.ones(1, 1, 64, 64, dtype=torch.float64)
    smooth = torch.as_tensor(rng.normal(0, 5, (1, 1, 64, 64)))
    noisier = torch.as_tensor(rng.normal(0, 9, (1, 1, 64, 64)))
    assert noise_proxy(noisier, mask) > noise_proxy(smooth, mask)
    guard = OrderGuard(smooth, mask)
    assert not guard.admit("low", noisier)  # the low side must not get noisier
    assert guard.admit("high", noisier)  # the high side must
    assert guard.dropped == {"high": 0, "low": 1}
