"""Tests of the DID engine on a small synthetic disk phantom with a briefly trained denoiser."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from ctdid.core.body import body_mask
from ctdid.core.did import InteractiveDenoiser, progress

torch.set_num_threads(1)

N = 64
ROI = (slice(29, 35), slice(12, 22))  # flat soft tissue, away from the inserts and the skin


def phantom(n: int, rng: np.random.Generator, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Disk of 40 HU in air with three inserts; returns (clean, noisy) float32 HU."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.full((n, n), -1000.0, np.float32)
    img[yy**2 + xx**2 < (0.42 * n) ** 2] = 40.0
    for cy, cx, rr, v in [(-0.15, -0.15, 0.08, 200.0), (0.18, 0.05, 0.06, -80.0),
                          (0.0, 0.2, 0.05, 500.0)]:  # fmt: skip
        img[(yy - cy * n) ** 2 + (xx - cx * n) ** 2 < (rr * n) ** 2] = v
    noisy = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return img, noisy.astype(np.float32)


class TinyDenoiser(nn.Module):
    """Residual 3-layer CNN working in (HU + 1000) / 1000, exposing ``hu_scale``."""

    hu_scale = 1000.0
    hu_offset = -1000.0

    def __init__(self, ch: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(ch, 1, 3, padding=1),
        )

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        z = (hu - self.hu_offset) / self.hu_scale
        return (z - self.body(z)) * self.hu_scale + self.hu_offset


class Smoother(nn.Module):
    """A fixed 5x5 Gaussian smoothing convolution in HU, no unit attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5, padding=2, padding_mode="replicate")
        g = torch.exp(-((torch.arange(5.0) - 2) ** 2) / (2 * 1.0**2))
        k = torch.outer(g, g)
        with torch.no_grad():
            self.conv.weight.copy_((k / k.sum())[None, None])
            self.conv.bias.zero_()

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return self.conv(hu)


def checksum(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def model() -> TinyDenoiser:
    torch.manual_seed(0)
    net = TinyDenoiser()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    rng = np.random.default_rng(1)
    for _ in range(300):
        pairs = [phantom(24, rng, rng.uniform(20, 60)) for _ in range(8)]
        clean = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
        noisy = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        loss = ((net(noisy) - clean) / 1000).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    return phantom(N, np.random.default_rng(5), 40.0)[1]


@pytest.fixture(scope="module")
def robust(model: TinyDenoiser, noisy: np.ndarray):
    return InteractiveDenoiser(model).run(noisy)


@pytest.fixture(scope="module")
def faithful(model: TinyDenoiser, noisy: np.ndarray):
    return InteractiveDenoiser(model, mode="faithful").run(noisy)


def model_output(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)[None, None])[0, 0].numpy()


# ---------------------------------------------------------------------------------------------


def test_denoiser_fixture_denoises(model, noisy):
    y0 = model_output(model, noisy)
    assert y0[ROI].std() < 0.7 * noisy[ROI].std()


def test_default_is_model_output_exactly(model, noisy, robust, faithful):
    expected = model_output(model, noisy)
    for stack in (robust, faithful):
        assert stack.default.direction == "default"
        assert stack.default.step == 0
        assert stack.default.image.dtype == np.float32
        assert stack.default.image.shape == noisy.shape
        np.testing.assert_array_equal(stack.default.image, expected)
    np.testing.assert_array_equal(robust.t_high, noisy)
    t_low = torch.from_numpy(noisy)[None, None]
    with torch.no_grad():
        for _ in range(3):
            t_low = model(t_low)
    np.testing.assert_array_equal(robust.t_low, t_low[0, 0].numpy())


def test_candidates_ordered_high_to_low(robust):
    dirs = [c.direction for c in robust]
    d = robust.default_index
    assert dirs[:d] == ["high"] * d
    assert dirs[d + 1 :] == ["low"] * (len(robust) - d - 1)
    assert d >= 4 and len(robust) - d - 1 >= 4
    s = robust.strengths
    assert np.all(np.diff(s) > 0)
    assert s[d] == 0.0 and s[0] >= -1.0 and s[-1] <= 1.0
    # Iterations grow outward from the default on both sides (several candidates may come
    # from one Gauss-Newton iteration).
    assert np.all(np.diff([c.step for c in robust[: d + 1]]) <= 0)
    assert np.all(np.diff([c.step for c in robust[d:]]) >= 0)
    # Reported progress is the measured projection inside the body.
    body = body_mask(robust.t_high)
    first, last = robust[0], robust[-1]
    assert first.progress_raw == pytest.approx(
        progress(first.image, robust.default.image, robust.t_high, body), rel=1e-6
    )
    assert last.progress_raw == pytest.approx(
        progress(last.image, robust.default.image, robust.t_low, body), rel=1e-6
    )


def test_robust_coverage_and_ends_approach_bounds(robust):
    cov = robust.coverage
    assert cov["high"] >= 0.8
    assert cov["low"] >= 0.8
    body = robust.body

    def rmse(a, b):
        return float(np.sqrt(np.mean((a - b)[body] ** 2)))

    d0 = robust.default.image
    assert rmse(robust[0].image, robust.t_high) < 0.5 * rmse(d0, robust.t_high)
    assert rmse(robust[-1].image, robust.t_low) < 0.5 * rmse(d0, robust.t_low)


def test_robust_candidates_evenly_spaced(robust):
    nominal = 0.95 / 8
    gaps = np.diff(robust.strengths)
    # Candidates are recorded where progress crosses i * nominal; a direction that stalls
    # adds its last output if it is at least a quarter spacing further.
    assert gaps[1:-1].min() > 0.5 * nominal
    assert gaps.min() > 0.25 * nominal
    assert gaps.max() < 2.0 * nominal
    assert np.median(gaps) == pytest.approx(nominal, rel=0.25)


def test_noise_decreases_from_high_to_low_end(robust):
    noise = np.array([c.image[ROI].std() for c in robust])
    assert np.all(np.diff(noise) <= 0.1), noise  # non-increasing, 0.1 HU slack
    assert noise[0] > 1.5 * noise[robust.default_index] > 1.5 * noise[-1]
    # The continuous slider is monotone too.
    grid = np.linspace(-1, 1, 41)
    cont = np.array([robust.interpolate(s)[ROI].std() for s in grid])
    assert np.all(np.diff(cont) <= 0.1), cont


def test_callers_model_untouched(model, noisy):
    before = checksum(model)
    grads = [p.requires_grad for p in model.parameters()]
    training = model.training
    InteractiveDenoiser(model, max_steps=5).run(noisy)
    InteractiveDenoiser(model, mode="faithful", max_steps=3).run(noisy)
    assert checksum(model) == before
    assert [p.requires_grad for p in model.parameters()] == grads
    assert model.training == training


def test_deterministic_for_a_seed(model, noisy, robust):
    again = InteractiveDenoiser(model, seed=0).run(noisy)
    assert len(again) == len(robust)
    for a, b in zip(again, robust, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.strength == b.strength


def test_callback_and_generator_give_the_run_candidates(model, noisy, robust):
    seen = []
    stack = InteractiveDenoiser(model).run(noisy, callback=seen.append)
    gen = InteractiveDenoiser(model).iter_candidates(noisy)
    yielded = []
    while True:
        try:
            yielded.append(next(gen))
        except StopIteration as stop:
            from_gen = stop.value
            break
    # Made in order: the default, then both directions interleaved, each from the default
    # outward, so that both ends of the curve start to show at once.
    d = stack.default_index
    outward = {"high": list(reversed(stack.candidates[:d])), "low": list(stack.candidates[d + 1 :])}
    for seq in (seen, yielded):
        assert len(seq) == len(stack)
        assert seq[0].direction == "default"
        np.testing.assert_array_equal(seq[0].image, stack.default.image)
        for direction, expected in outward.items():
            made = [c for c in seq if c.direction == direction]
            assert len(made) == len(expected)
            for a, b in zip(made, expected, strict=True):
                np.testing.assert_array_equal(a.image, b.image)
                assert a.step == b.step
        assert {c.direction for c in seq[1:4]} == {"high", "low"}
        assert np.all(np.diff([c.elapsed for c in seq]) >= 0)
    np.testing.assert_array_equal(from_gen.images, robust.images)


def test_sequential_directions_give_the_same_candidates(model, noisy, robust):
    seen = []
    stack = InteractiveDenoiser(model, interleave=False).run(noisy, callback=seen.append)
    assert stack.info["interleave"] is False and robust.info["interleave"] is True
    np.testing.assert_array_equal(stack.images, robust.images)
    d = stack.default_index
    creation = [stack[d], *reversed(stack.candidates[:d]), *stack.candidates[d + 1 :]]
    assert [c.direction for c in seen] == [c.direction for c in creation]
    assert [c.step for c in seen] == [c.step for c in creation]
    # One network copy instead of two: smaller memory estimate.
    assert stack.peak_memory_bytes < robust.peak_memory_bytes


def test_generator_can_stop_early(model, noisy):
    gen = InteractiveDenoiser(model).iter_candidates(noisy)
    first = next(gen)
    second = next(gen)
    gen.close()
    assert first.direction == "default" and second.direction in ("high", "low")
    assert second.step >= 1


def test_interpolate_on_real_stack(robust):
    np.testing.assert_array_equal(robust.interpolate(0.0), robust.default.image)
    np.testing.assert_array_equal(robust.interpolate(-1.0), robust[0].image)
    np.testing.assert_array_equal(robust.interpolate(1.0), robust[-1].image)
    s = robust[1].strength
    np.testing.assert_array_equal(robust.interpolate(s), robust[1].image)


def test_faithful_is_the_paper(model, noisy, faithful):
    for direction in ("high", "low"):
        info = faithful.info[direction]
        assert info["optimizer"] == "SGD"
        assert info["lr"] == 1e-2
        assert info["momentum"] == 0.9
        rel = info["relative_change"]
        # Every iteration is a candidate, and it stopped at the first change below 1 %.
        assert len(rel) == faithful.steps[direction] >= 1
        assert faithful.stop_reasons[direction] == "converged"
        assert rel[-1] < 0.01 and all(r >= 0.01 for r in rel[:-1])
    assert faithful.default_index == faithful.steps["high"]
    assert len(faithful) == 1 + faithful.steps["high"] + faithful.steps["low"]


def test_faithful_every_iteration_until_max_steps(model, noisy):
    stack = InteractiveDenoiser(model, mode="faithful", tol=1e-9, max_steps=4).run(noisy)
    assert stack.steps == {"high": 4, "low": 4}
    assert stack.stop_reasons == {"high": "max_steps", "low": "max_steps"}
    assert [c.step for c in stack] == [4, 3, 2, 1, 0, 1, 2, 3, 4]
    # SGD with momentum 0.9 moves further each iteration toward the bound.
    assert np.all(np.diff(stack.strengths) >= 0)
    assert stack.coverage["low"] > stack[5].progress_raw > 0


def test_faithful_custom_optimizer_and_units(model, noisy):
    stack = InteractiveDenoiser(
        model,
        mode="faithful",
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        max_steps=2,
        directions=("low",),
    ).run(noisy)
    assert stack.info["low"]["optimizer"] == "Adam"
    assert stack.info["low"]["lr"] == 1e-3
    assert InteractiveDenoiser(model).hu_scale == 1000.0
    model_attr = Smoother()
    model_attr.hu_scale = 500.0  # type: ignore[assignment]
    assert InteractiveDenoiser(model_attr).hu_scale == 500.0
    assert InteractiveDenoiser(Smoother()).hu_scale == 1000.0


def test_robust_covers_other_model(noisy):
    """A different model (one linear smoothing layer, no unit attributes) reaches the bounds."""
    stack = InteractiveDenoiser(Smoother()).run(noisy)
    assert stack.coverage["high"] >= 0.8
    assert stack.coverage["low"] >= 0.8
    assert np.all(np.diff(stack.strengths) > 0)


def test_directions_subset(model, noisy):
    stack = InteractiveDenoiser(model, directions=("low",), n_candidates=3).run(noisy)
    assert stack.default_index == 0
    assert [c.direction for c in stack] == ["default", "low", "low", "low"]
    assert stack.steps.keys() == {"low"}


def test_batch_shares_one_trajectory(model):
    rng = np.random.default_rng(7)
    x = np.stack([phantom(N, rng, 40.0)[1] for _ in range(2)])[:, None]
    stack = InteractiveDenoiser(model, n_candidates=4).run(torch.from_numpy(x))
    assert stack.default.image.shape == (2, 1, N, N)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(stack.default.image, expected)
    assert stack.coverage["high"] >= 0.8 and stack.coverage["low"] >= 0.8


def test_run_volume_shared_and_per_slice(model):
    rng = np.random.default_rng(9)
    vol = np.stack([phantom(N, rng, 40.0)[1] for _ in range(3)])
    engine = InteractiveDenoiser(model, n_candidates=3)
    stack = engine.run_volume(vol, train_slices=2, batch_size=2)
    assert stack.images.shape[1:] == (3, N, N)
    assert stack.info["train_shape"] == [2, 1, N, N]
    with torch.no_grad():
        expected = model(torch.from_numpy(vol)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(stack.default.image, expected, atol=1e-3)
    assert np.all(np.diff(stack.strengths) > 0)
    assert stack.coverage["high"] >= 0.7 and stack.coverage["low"] >= 0.7
    per_slice = engine.run_volume(vol[:2], shared=False)
    assert isinstance(per_slice, list) and len(per_slice) == 2
    assert per_slice[1].default.image.shape == (N, N)


def curve_distance(ref, other) -> list[float]:
    """For each candidate of ``ref``, RMSE in HU inside the body to the nearest of ``other``."""
    body = ref.body
    return [
        min(float(np.sqrt(np.mean((r.image - o.image)[body] ** 2))) for o in other) for r in ref
    ]


def forwards_per_step(stack) -> float:
    fwd = sum(stack.info[d]["forward_passes"] for d in ("high", "low"))
    return fwd / sum(stack.steps.values())


def test_adaptive_step_control_is_cheaper_and_close(model, noisy):
    # The two Adam step controls: a line search per iteration, or the last step length reused.
    search = InteractiveDenoiser(model, step_control="search").run(noisy)
    adaptive = InteractiveDenoiser(model, step_control="adaptive").run(noisy)
    assert forwards_per_step(adaptive) < forwards_per_step(search)
    assert forwards_per_step(adaptive) < 1.6
    assert adaptive.coverage["high"] >= 0.8 and adaptive.coverage["low"] >= 0.8
    assert np.median(curve_distance(search, adaptive)) < 3.0  # HU


@pytest.fixture(scope="module")
def fast(model, noisy):
    return InteractiveDenoiser(model, mode="fast").run(noisy)


def jvps(stack) -> int:
    return sum(stack.info[d]["jvp"] for d in ("high", "low"))


def test_fast_mode_default_close_to_robust_with_less_work(fast, robust, noisy):
    # Whole image (crops would cover most of it), Gauss-Newton with a smaller Krylov basis
    # and longer steps: fewer Jacobian products than the robust mode for nearly the same curve.
    assert fast.info["train_shape"] == [1, 1, N, N]
    assert fast.info["high"]["step_progress"] == pytest.approx(0.25)
    assert fast.info["high"]["krylov_dim"] == 12 and robust.info["high"]["krylov_dim"] == 40
    assert jvps(fast) < 0.75 * jvps(robust)
    assert fast.coverage["high"] >= 0.8 and fast.coverage["low"] >= 0.8
    dist = curve_distance(robust, fast)
    assert np.median(dist) < 3.0  # HU; neighbouring candidates are ~3-10 HU apart
    noise = np.array([c.image[ROI].std() for c in fast])
    assert np.all(np.diff(noise) <= 0.1), noise
    assert np.all(np.diff(fast.strengths) > 0)


def test_fast_mode_deterministic(model, noisy, fast):
    again = InteractiveDenoiser(model, mode="fast").run(noisy)
    np.testing.assert_array_equal(again.images, fast.images)


def test_fast_mode_on_crops(model, noisy, robust):
    fast = InteractiveDenoiser(model, mode="fast", crop_size=32, n_crops=2).run(noisy)
    assert fast.info["train_shape"] == [2, 1, 32, 32]
    assert fast.coverage["high"] >= 0.7 and fast.coverage["low"] >= 0.7
    assert np.median(curve_distance(robust, fast)) < 5.0  # HU; candidates' own spacing is ~3 HU
    # Crop positions follow the seed.
    same = InteractiveDenoiser(model, mode="fast", crop_size=32, n_crops=2).run(noisy)
    np.testing.assert_array_equal(same.images, fast.images)


class NormedDenoiser(TinyDenoiser):
    """TinyDenoiser with an instance norm: its output on a crop is not the crop of its output."""

    def __init__(self) -> None:
        super().__init__()
        self.body.insert(1, nn.InstanceNorm2d(16, affine=True))


def test_fast_mode_chooses_crops_only_for_networks_without_image_wide_norm(model, noisy):
    opts = {"mode": "fast", "crop_size": 16, "directions": ("high",), "max_steps": 2}
    auto = InteractiveDenoiser(model, **opts).run(noisy)
    assert auto.info["crops"]["n"] == 4 and auto.info["train_shape"] == [4, 1, 16, 16]
    torch.manual_seed(0)
    normed = InteractiveDenoiser(NormedDenoiser(), **opts).run(noisy)
    assert normed.info["crops"]["n"] == 0 and normed.info["train_shape"] == [1, 1, N, N]
    assert "normalises over the image" in normed.info["crops"]["why"]
    whole = InteractiveDenoiser(model, **opts, n_crops=0).run(noisy)
    assert whole.info["train_shape"] == [1, 1, N, N]
    # Crops of 128 would cover the whole 64 x 64 image: no crops.
    big = InteractiveDenoiser(model, **{**opts, "crop_size": 128}).run(noisy)
    assert big.info["crops"]["n"] == 0 and "half" in big.info["crops"]["why"]
    robust = InteractiveDenoiser(model, mode="robust", crop_size=16, max_steps=1).run(noisy)
    assert robust.info["crops"]["n"] == 4
    faithful = InteractiveDenoiser(model, mode="faithful", crop_size=16, max_steps=1).run(noisy)
    assert faithful.info["crops"]["n"] == 0


def test_time_budget_and_max_steps(model, noisy):
    stack = InteractiveDenoiser(model, time_budget=1e-6).run(noisy)
    assert set(stack.stop_reasons.values()) == {"time_budget"}
    assert stack.steps == {"high": 1, "low": 1}
    stack = InteractiveDenoiser(model, max_steps=2).run(noisy)
    assert set(stack.stop_reasons.values()) == {"max_steps"}


def test_timings_and_memory(robust):
    assert robust.memory_method == "estimate"
    n_bytes = robust.info["n_parameters"] * 4
    assert robust.peak_memory_bytes > 6 * n_bytes + robust.info["activation_bytes"]
    assert robust.info["activation_bytes"] > 4 * N * N * 16  # at least one feature map
    t = robust.timings
    assert t["total"] >= t["bounds"] + t["high"] + t["low"] - 1e-6
    elapsed = [c.elapsed for c in robust[robust.default_index :]]
    assert np.all(np.diff(elapsed) >= 0)


def test_progress_function():
    y0 = np.zeros((4, 4), np.float32)
    t = np.full((4, 4), 10.0, np.float32)
    assert progress(y0, y0, t) == 0.0
    assert progress(t, y0, t) == 1.0
    assert progress(t / 2, y0, t) == pytest.approx(0.5)
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    y = t.copy()
    y[2:] = -100  # outside the mask: ignored
    assert progress(y, y0, t, mask) == 1.0
    assert progress(y0, y0, y0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "paper"}, "unknown mode"),
        ({"k": 0}, "k must be"),
        ({"directions": ("up",)}, "unknown direction"),
        ({"directions": ()}, "directions must be"),
        ({"directions": ("low", "low")}, "directions must be"),
        ({"tol": 0.0}, "tol must be"),
        ({"lr": -1.0}, "lr must be"),
        ({"n_candidates": 0}, "n_candidates must be"),
        ({"coverage": 1.5}, "coverage must be"),
        ({"max_steps": 0}, "max_steps must be"),
        ({"outside_weight": 2.0}, "outside_weight must be"),
        ({"step_control": "newton"}, "step_control must be"),
        ({"crop_size": 4}, "crop_size must be"),
        ({"step_progress": 0.0}, "step_progress must be"),
        ({"optimizer": lambda p: torch.optim.SGD(p, lr=1.0)}, "faithful mode"),
    ],
)
def test_invalid_options(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        InteractiveDenoiser(model, **kwargs)


def test_invalid_inputs(model, noisy):
    engine = InteractiveDenoiser(model, max_steps=1)
    bad = noisy.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        engine.run(bad)
    with pytest.raises(ValueError, match=r"\(H, W\) image or a \(B, 1, H, W\)"):
        engine.run(noisy[None])
    with pytest.raises(ValueError, match=r"\(H, W\) image or a \(B, 1, H, W\)"):
        engine.run(np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="body mask shape"):
        engine.run(noisy, body=np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="numeric"):
        engine.run(np.array([["a"]]))
    with pytest.raises(ValueError, match=r"\(Z, H, W\)"):
        engine.run_volume(noisy)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        InteractiveDenoiser(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no floating-point parameters"):
        InteractiveDenoiser(nn.Identity()).run(noisy)

    class Wrong(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[..., :-1] * self.w

    with pytest.raises(ValueError, match="same shape"):
        InteractiveDenoiser(Wrong()).run(noisy)


def test_degenerate_bound_gives_no_candidates(noisy):
    class Scale(nn.Module):
        """Identity with a parameter: every bound equals the default."""

        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

    stack = InteractiveDenoiser(Scale()).run(noisy)
    assert len(stack) == 1
    assert stack.stop_reasons == {"high": "degenerate", "low": "degenerate"}
    np.testing.assert_array_equal(stack.interpolate(0.7), noisy)
