"""The faithful mode is the paper's loop, bit for bit: a hand-written SGD reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_did import TinyDenoiser, phantom

from ctdid.core.did import InteractiveDenoiser

torch.set_num_threads(1)
STEPS = 4


def paper_loop(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> list[np.ndarray]:
    """Bai et al.: a copy of the weights, SGD (lr 1e-2, momentum 0.9) on the one-sample MSE in
    network units ((HU difference / hu_scale)^2, whole image); every iterate's output, HU."""
    net = copy.deepcopy(model)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    y, outs = net(x), []
    for _ in range(STEPS):
        loss = (((y - target) / TinyDenoiser.hu_scale) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        y = net(x)
        outs.append(y.detach()[0, 0].numpy().copy())
    return outs


@pytest.mark.parametrize("explicit", [{}, {"tune": "all", "order_guard": False}])
def test_faithful_mode_equals_the_paper_loop_bit_for_bit(explicit: dict[str, object]) -> None:
    torch.manual_seed(0)
    model = TinyDenoiser()
    _, noisy = phantom(48, np.random.default_rng(1), 30.0)
    stack = InteractiveDenoiser(
        model, mode="faithful", tol=1e-9, max_steps=STEPS, k=3, **explicit
    ).run(noisy)
    x = torch.from_numpy(noisy)[None, None]
    with torch.no_grad():
        y0 = model(x)
        t_low = model(model(y0))  # phi applied k = 3 times
    assert np.array_equal(stack.default.image, y0[0, 0].numpy())
    assert np.array_equal(stack.t_low, t_low[0, 0].numpy())
    for direction, target in (("high", x), ("low", t_low)):
        got = [c.image for c in stack if c.direction == direction]
        if direction == "high":
            got = got[::-1]  # the stack runs high resolution -> low noise
        want = paper_loop(model, x, target)
        assert len(got) == STEPS
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert np.array_equal(a, b), (direction, i, float(np.abs(a - b).max()))
