"""Tests of the engine's options object: checks, mode defaults, serialisation, overrides."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ctdid.core import DIDOptions, InteractiveDenoiser

torch.set_num_threads(1)


class Blur(nn.Module):
    """A trainable 3x3 smoothing convolution in HU (starts as the mean filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 9.0)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return self.conv(hu)


def noisy_disk(seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:32, :32] - 15.5
    img = np.where(yy**2 + xx**2 < 13**2, 40.0, -1000.0).astype(np.float32)
    return img + np.random.default_rng(seed).normal(0, 20, img.shape).astype(np.float32)


@pytest.mark.parametrize(
    ("mode", "steps", "step", "krylov"),
    [("robust", 200, 0.2, 40), ("fast", 200, 0.25, 12), ("faithful", 50, 0.2, 40)],
)
def test_resolved_fills_the_mode_defaults(mode: str, steps: int, step: float, krylov: int) -> None:
    opts = DIDOptions(mode=mode)  # type: ignore[arg-type]
    assert opts.max_steps is None and opts.step_progress is None and opts.krylov_dim is None
    res = opts.resolved()
    assert (res.max_steps, res.step_progress, res.krylov_dim) == (steps, step, krylov)
    assert res.step_control == "gauss-newton"
    assert res.resolved() == res  # resolving twice changes nothing


def test_resolved_keeps_explicit_values_and_adam_steps() -> None:
    res = DIDOptions(mode="fast", max_steps=7, krylov_dim=5, step_progress=0.1).resolved()
    assert (res.max_steps, res.krylov_dim, res.step_progress) == (7, 5, 0.1)
    assert DIDOptions(step_control="search").resolved().step_progress == 0.04
    assert DIDOptions(step_control="adaptive").resolved().step_progress == 0.08
    # One direction cannot interleave; numpy integers become Python ints.
    one = DIDOptions(directions="low", k=np.int64(2)).resolved()
    assert one.directions == ("low",) and not one.interleave
    assert type(one.k) is int


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mode": "fastest"}, "mode"),
        ({"directions": ("high", "sideways")}, "direction"),
        ({"directions": ("low", "low")}, "directions"),
        ({"directions": ()}, "directions"),
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": True}, "k"),
        ({"n_candidates": 0}, "n_candidates"),
        ({"patience": 0}, "patience"),
        ({"crop_size": 4}, "crop_size"),
        ({"n_crops": -1}, "n_crops"),
        ({"max_steps": 0}, "max_steps"),
        ({"tol": 0.0}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"lr": -1.0}, "lr"),
        ({"coverage": 0.0}, "coverage"),
        ({"coverage": 1.5}, "coverage"),
        ({"step_progress": 1.2}, "step_progress"),
        ({"time_budget": 0.0}, "time_budget"),
        ({"outside_weight": 2.0}, "outside_weight"),
        ({"body_threshold": float("inf")}, "body_threshold"),
        ({"step_control": "newton"}, "step_control"),
        ({"krylov_dim": 1}, "krylov_dim"),
        ({"optimizer": torch.optim.Adam}, "optimizer"),
        ({"damping_floor": 1.0}, "damping_floor"),
        ({"damping_floor": -0.1}, "damping_floor"),
        ({"edge_weight": -1.0}, "edge_weight"),
        ({"edge_weight": float("nan")}, "edge_weight"),
        ({"loss_domain": "fourier"}, "loss_domain"),
        ({"mode": "faithful", "loss_domain": "whitened"}, "faithful"),
        ({"mode": "faithful", "damping_floor": 0.01}, "faithful"),
        ({"mode": "faithful", "edge_weight": 2.0}, "faithful"),
    ],
)
def test_bad_options_raise_and_name_the_option(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        DIDOptions(**kwargs)


def test_options_are_frozen_and_serialise_to_json() -> None:
    opts = DIDOptions(mode="faithful", optimizer=torch.optim.Adam, device="cpu").resolved()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.k = 5  # type: ignore[misc]
    d = json.loads(json.dumps(opts.to_dict()))
    assert d["optimizer"] == "Adam" and d["device"] == "cpu" and d["directions"] == ["high", "low"]
    assert set(d) == {f.name for f in dataclasses.fields(DIDOptions)}
    # Without the callable, the dictionary rebuilds the same options.
    plain = DIDOptions(mode="fast", k=2, n_candidates=4).resolved()
    assert DIDOptions(**plain.to_dict()) == plain


def test_engine_takes_options_and_keyword_overrides() -> None:
    base = DIDOptions(mode="fast", n_candidates=3)
    engine = InteractiveDenoiser(Blur(), base, k=2, max_steps=3)
    assert engine.options == dataclasses.replace(base, k=2, max_steps=3).resolved()
    assert (engine.mode, engine.k, engine.n_candidates) == ("fast", 2, 3)
    with pytest.raises(TypeError):
        InteractiveDenoiser(Blur(), base, no_such_option=1)
    with pytest.raises(TypeError, match="DIDOptions"):
        InteractiveDenoiser(Blur(), {"mode": "fast"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_candidates"):
        InteractiveDenoiser(Blur(), base, n_candidates=0)


def test_options_object_and_keywords_give_the_same_stack() -> None:
    x = noisy_disk()
    kw = {"mode": "fast", "n_candidates": 3, "max_steps": 4, "n_crops": 0}
    a = InteractiveDenoiser(Blur(), **kw).run(x)
    b = InteractiveDenoiser(Blur(), DIDOptions(**kw)).run(x)  # type: ignore[arg-type]
    assert len(a) == len(b) >= 3
    for ca, cb in zip(a, b, strict=True):
        assert (ca.direction, ca.step) == (cb.direction, cb.step)
        np.testing.assert_array_equal(ca.image, cb.image)


def test_jvp_default_per_mode() -> None:
    assert DIDOptions(mode="fast").resolved().jvp == "difference"
    assert DIDOptions(mode="robust").resolved().jvp == "autodiff"
    assert DIDOptions(mode="fast", jvp="autodiff").resolved().jvp == "autodiff"
    with pytest.raises(ValueError, match="jvp"):
        DIDOptions(jvp="central")
