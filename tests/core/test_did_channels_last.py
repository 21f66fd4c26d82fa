"""DIDOptions.channels_last: the fast memory format changes speed, not the curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_did import model as model
from test_did import phantom

from ctdid.core import DIDOptions, InteractiveDenoiser

N = 64


def test_on_by_default_except_in_the_faithful_mode() -> None:
    assert DIDOptions(mode="robust").resolved().channels_last is True
    assert DIDOptions(mode="fast").resolved().channels_last is True
    assert DIDOptions(mode="faithful").resolved().channels_last is False
    assert DIDOptions(mode="fast", channels_last=False).resolved().channels_last is False


@pytest.mark.parametrize("mode", ["fast", "robust"])
def test_same_curve_in_both_formats(model, mode: str) -> None:
    torch.set_num_threads(1)
    x = phantom(N, np.random.default_rng(11), 40.0)[1]
    # exact Jacobian products: the finite differences of the fast mode's default amplify the
    # rounding differences of the two formats (there 0.21 HU RMSE on this phantom)
    runs = {
        cl: InteractiveDenoiser(
            model, mode=mode, channels_last=cl, keep_weights=True, jvp="autodiff"
        ).run(x)
        for cl in (False, True)
    }
    a, b = runs[False], runs[True]
    # the default and t_low are the model's own outputs, computed before the switch
    np.testing.assert_array_equal(a.default.image, b.default.image)
    np.testing.assert_array_equal(a.t_low, b.t_low)
    assert len(a.candidates) == len(b.candidates)
    assert a.steps == b.steps
    for ca, cb in zip(a.candidates, b.candidates, strict=True):
        # HU: the order of sums changes, and the fine-tuning carries rounding along (on this
        # 64 px phantom 0.1-0.2 HU at most)
        d = ca.image - cb.image
        assert float(np.sqrt(np.mean(d**2))) < 0.2 and float(np.abs(d).max()) < 1.0
        assert ca.direction == cb.direction
    # the candidates' weights come back in the standard format and can be saved
    for cand in b.candidates:
        assert cand.weights is not None
        assert all(v.is_contiguous() for v in cand.weights.values())
    save_file(dict(b.candidates[0].weights), "/dev/null")
    # and the caller's model is left in its own format
    assert all(p.is_contiguous() for p in model.parameters())


class _Flattens(torch.nn.Module):
    """A denoiser that calls ``.view`` on a 16-channel activation (fails in channels-last)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.m = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 1, 3, padding=1)
        with torch.no_grad():
            self.b.weight.mul_(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.m(torch.relu(self.a(x / 1000.0))))
        h = h.view(h.shape[0], -1).view(h.shape)  # needs a standard-contiguous tensor
        return x + 1000.0 * self.b(h)


def test_a_model_that_fails_in_channels_last_keeps_its_format() -> None:
    torch.set_num_threads(1)
    x = phantom(48, np.random.default_rng(3), 40.0)[1]
    net = _Flattens().eval()
    stack = InteractiveDenoiser(net, mode="fast", n_candidates=2).run(x)
    fmt = stack.info["memory_format"]
    assert fmt["channels_last"] is False and "forward fails" in fmt["why"]
    reference = InteractiveDenoiser(net, mode="fast", n_candidates=2, channels_last=False).run(x)
    assert reference.info["memory_format"] == {"channels_last": False}
    for ca, cb in zip(stack.candidates, reference.candidates, strict=True):
        np.testing.assert_array_equal(ca.image, cb.image)  # the standard format, as asked


def test_the_stack_says_when_it_computed_channels_last(model) -> None:
    x = phantom(N, np.random.default_rng(4), 40.0)[1]
    stack = InteractiveDenoiser(model, mode="fast", n_candidates=2).run(x)
    assert stack.info["memory_format"] == {"channels_last": True}
