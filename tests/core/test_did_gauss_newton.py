"""The Gauss-Newton (Levenberg-Marquardt in a Lanczos basis) step control of the DID engine."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from torch import nn

from ctdid.core.candidates import Candidate
from ctdid.core.did import InteractiveDenoiser
from ctdid.core.did.gauss_newton import Krylov
from no_forward_ad import WithoutForwardAD

torch.set_num_threads(1)

N = 48


def disk(seed: int = 0, sigma: float = 40.0) -> np.ndarray:
    """Noisy disk of 40 HU in air with a bright insert, float32 HU."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    img = np.full((N, N), -1000.0, np.float32)
    img[yy**2 + xx**2 < (0.42 * N) ** 2] = 40.0
    img[(yy - 5) ** 2 + (xx + 4) ** 2 < 16] = 300.0
    return (img + rng.normal(0.0, sigma, img.shape)).astype(np.float32)


class LinearSmoother(nn.Module):
    """One 3x3 convolution in HU: the output is linear in the weights (10 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 9.0)
            self.conv.bias.zero_()

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return self.conv(hu)


class Tiny(nn.Module):
    """Residual two-layer CNN in (HU + 1000) / 1000, trained briefly on the disk."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)
        )

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        z = (hu + 1000.0) / 1000.0
        return (z - self.body(z)) * 1000.0 - 1000.0


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    torch.manual_seed(0)
    net = Tiny()
    clean = torch.from_numpy(disk(sigma=0.0))[None, None]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for i in range(300):
        noisy = torch.from_numpy(disk(seed=100 + i))[None, None]
        loss = ((net(noisy) - clean) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def lanczos(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, list[float], list[float]]:
    """Plain Lanczos with full reorthogonalisation: basis (k, n), alphas, betas."""
    q = b / np.linalg.norm(b)
    basis, alphas, betas = [q], [], []
    for j in range(k):
        v = a @ basis[j]
        alphas.append(float(v @ basis[j]))
        qm = np.array(basis)
        v = v - qm.T @ (qm @ v)
        v = v - qm.T @ (qm @ v)
        if j < k - 1:
            betas.append(float(np.linalg.norm(v)))
            basis.append(v / betas[-1])
    return np.array(basis), alphas, betas


def test_krylov_step_is_the_damped_gauss_newton_step() -> None:
    rng = np.random.default_rng(3)
    j = rng.normal(size=(30, 6)) * np.array([100.0, 30.0, 10.0, 3.0, 1.0, 0.3])
    a = j.T @ j
    b = rng.normal(size=6)
    c = rng.normal(size=6)  # predicted progress of a step s is c . s
    basis, alphas, betas = lanczos(a, b, 6)
    kr = Krylov(alphas, betas, list(basis @ c), float(np.linalg.norm(b)))
    for lam in (1e-3, 1.0, 50.0, 1e4):
        step = basis.T @ kr.coeffs(lam).numpy()
        exact = np.linalg.solve(a + lam * np.eye(6), b)
        np.testing.assert_allclose(step, exact, rtol=1e-7, atol=1e-12)
        assert kr.predicted(lam) == pytest.approx(float(c @ exact), rel=1e-7)
    # damping_for inverts predicted (c = b makes the prediction fall monotonically with lam).
    kr_b = Krylov(alphas, betas, list(basis @ b), float(np.linalg.norm(b)))
    target = 0.3 * kr_b.predicted(kr_b.lam_min)
    assert kr_b.predicted(kr_b.damping_for(target)) == pytest.approx(target, rel=1e-6)
    # Beyond reach: the least-damped step.
    assert kr_b.damping_for(10 * kr_b.predicted(kr_b.lam_min)) == pytest.approx(kr_b.lam_min)


def test_linear_model_predictions_are_exact() -> None:
    # For a network linear in its weights, with a basis as large as the parameter count, the
    # progress the Krylov model predicts is the progress the step makes.
    x = disk()
    stack = InteractiveDenoiser(LinearSmoother(), krylov_dim=12, n_crops=0).run(x)
    for d in ("high", "low"):
        info = stack.info[d]
        assert info["optimizer"].startswith("Gauss-Newton")
        pred, gained = np.array(info["predicted"]), np.array(info["gained"])
        done = np.isfinite(info["damping"])
        assert done.sum() >= 1
        np.testing.assert_allclose(gained[done], pred[done], rtol=1e-3, atol=1e-5)
    assert stack.coverage["high"] >= 0.9


def test_robust_mode_reaches_both_bounds_with_monotone_noise(tiny: Tiny) -> None:
    x = disk(seed=7)
    stack = InteractiveDenoiser(tiny).run(x)
    assert stack.info["high"]["optimizer"].startswith("Gauss-Newton")
    assert stack.coverage["high"] >= 0.9 and stack.coverage["low"] >= 0.9
    roi = (slice(20, 28), slice(8, 16))  # flat soft tissue
    noise = np.array([c.image[roi].std() for c in stack])
    assert np.all(np.diff(noise) <= 0.1), noise
    assert np.all(np.diff(stack.strengths) > 0)
    # The first step of a nonlinear network: the prediction is close to what it makes.
    for d in ("high", "low"):
        pred, gained = stack.info[d]["predicted"][0], stack.info[d]["gained"][0]
        assert 0.5 < gained / pred < 2.0
        # Strongly damped first steps need few Lanczos vectors.
        assert stack.info[d]["basis_sizes"][0] < stack.info[d]["krylov_dim"]


def test_candidates_made_inside_one_iteration_carry_their_own_weights(tiny: Tiny) -> None:
    x = disk(seed=8)
    engine = InteractiveDenoiser(tiny, keep_weights=True)
    stack = engine.run(x)
    per_step = collections.Counter((c.direction, c.step) for c in stack if c.direction != "default")
    assert max(per_step.values()) >= 2  # several candidates from one Gauss-Newton iteration
    for c in stack:
        np.testing.assert_allclose(engine.apply(x, weights=c.weights), c.image, atol=1e-3)


def test_falls_back_to_adam_without_forward_mode_derivatives(tiny: Tiny) -> None:
    stack = InteractiveDenoiser(WithoutForwardAD(tiny).eval()).run(disk(seed=9))
    for d in ("high", "low"):
        assert "Adam" in stack.info[d]["fallback"]
    assert stack.coverage["high"] >= 0.5 and stack.coverage["low"] >= 0.5
    assert np.all(np.diff(stack.strengths) > 0)


def test_krylov_dim_validated(tiny: Tiny) -> None:
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="krylov_dim"):
            InteractiveDenoiser(tiny, krylov_dim=bad)  # type: ignore[arg-type]


class _Breaks(nn.Module):
    """``net``, whose next forward pass fails once after ``_Breaks.armed`` is set (class-wide:
    the engine fine-tunes deep copies). Swallowing the error would let the run go on."""

    armed = False

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        if _Breaks.armed:
            _Breaks.armed = False
            raise RuntimeError("broken after the first candidate")
        return self.net(hu)


def test_errors_after_a_gauss_newton_step_are_not_swallowed(tiny: Tiny) -> None:
    # The Adam fallback is for networks without forward-mode derivatives (the first
    # iteration fails); an error later is a real one and must reach the caller.
    made: list[Candidate] = []

    def arm(c: Candidate) -> None:
        made.append(c)
        if len(made) == 2:  # the first fine-tuned candidate: arm once
            _Breaks.armed = True

    engine = InteractiveDenoiser(_Breaks(tiny), directions=("high",))
    try:
        with pytest.raises(RuntimeError, match="broken after the first candidate"):
            engine.run(disk(seed=10), callback=arm)
    finally:
        _Breaks.armed = False
