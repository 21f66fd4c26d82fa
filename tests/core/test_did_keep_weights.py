"""InteractiveDenoiser(keep_weights=True) and InteractiveDenoiser.apply: candidates' weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ctdid.core import Candidate, InteractiveDenoiser

torch.set_num_threads(1)

N = 48


class BNNet(nn.Module):
    """Residual two-layer CNN in (HU + 1000) / 1000 with a batch norm (buffers in the state)."""

    hu_scale = 1000.0
    hu_offset = -1000.0

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)
        with torch.no_grad():
            self.c2.weight.mul_(0.1)
            self.bn.running_mean.fill_(0.05)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        z = (hu - self.hu_offset) / self.hu_scale
        return (z - self.c2(torch.relu(self.bn(self.c1(z))))) * self.hu_scale + self.hu_offset


def noisy_slices(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    out = []
    for i in range(n):
        img = np.full((N, N), -1000.0, np.float32)
        img[yy**2 + xx**2 < (0.4 * N) ** 2] = 40.0
        img[(yy - 5 - i) ** 2 + (xx + 6) ** 2 < 16] = 300.0
        out.append(img + rng.normal(0.0, 30.0, img.shape).astype(np.float32))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> BNNet:
    return BNNet().eval()


@pytest.fixture(scope="module")
def stack(model: BNNet):
    return InteractiveDenoiser(model, n_candidates=2, keep_weights=True).run(noisy_slices(1)[0])


def test_weights_off_by_default_and_candidate_backward_compatible(model: BNNet) -> None:
    plain = InteractiveDenoiser(model, n_candidates=1, directions=("low",)).run(noisy_slices(1)[0])
    assert all(c.weights is None for c in plain)
    c = Candidate(np.zeros((2, 2), np.float32), "default", 0, 0.0, 0.0, 0.0, 0.1)
    assert c.weights is None


def test_every_candidate_carries_cpu_weights(model: BNNet, stack) -> None:
    assert len(stack) >= 3
    keys = set(model.state_dict())
    for c in stack:
        assert c.weights is not None and set(c.weights) == keys
        assert all(t.device.type == "cpu" for t in c.weights.values())
    for key, value in model.state_dict().items():  # the default: the pretrained weights
        assert torch.equal(stack.default.weights[key], value)
    high, low = stack[0], stack[-1]
    assert not torch.equal(high.weights["c1.weight"], low.weights["c1.weight"])
    # buffers are not fine-tuned (eval mode) and come along unchanged
    assert torch.equal(high.weights["bn.running_mean"], model.bn.running_mean)


def test_weights_reapplied_reproduce_candidates(model: BNNet, stack) -> None:
    engine = InteractiveDenoiser(model)
    x = noisy_slices(1)[0]
    for c in stack:
        np.testing.assert_allclose(engine.apply(x, weights=c.weights), c.image, atol=1e-3)
        fresh = BNNet().eval()
        fresh.load_state_dict(dict(c.weights))
        with torch.no_grad():
            out = fresh(torch.from_numpy(x)[None, None])[0, 0].numpy()
        np.testing.assert_allclose(out, c.image, atol=1e-3)
    np.testing.assert_array_equal(engine.apply(x), stack.default.image)


def test_apply_volume_in_batches_and_model_untouched(model: BNNet, stack) -> None:
    engine = InteractiveDenoiser(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vol = noisy_slices(5, seed=3)
    w = stack[-1].weights
    out = engine.apply(vol, weights=w, batch_size=2)
    assert out.shape == vol.shape and out.dtype == np.float32
    for z in range(5):
        np.testing.assert_allclose(out[z], engine.apply(vol[z], weights=w), atol=1e-3)
    np.testing.assert_allclose(engine.apply(vol), engine.apply(vol, weights=model.state_dict()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_apply_refuses_bad_input(model: BNNet, stack) -> None:
    engine = InteractiveDenoiser(model)
    x = noisy_slices(1)[0]
    default = engine.apply(x)
    with pytest.raises(ValueError, match="do not fit"):
        engine.apply(x, weights={"c1.weight": torch.zeros(4, 1, 3, 3)})
    np.testing.assert_array_equal(engine.apply(x), default)  # a failed load is not reused
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        engine.apply(np.zeros((1, 1, N, N), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        engine.apply(noisy_slices(1)[0], batch_size=0)
