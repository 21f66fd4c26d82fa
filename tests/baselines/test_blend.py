"""Pixel blends (ASiR-V convention) and the iterates' path."""

from __future__ import annotations

import numpy as np
import pytest

from ctdid.baselines import blend, blend_stack, iterate_images, iterate_stack
from ctdid.core import InteractiveDenoiser


def _three(phantom, model):
    noisy = phantom[0]
    eng = InteractiveDenoiser(model)
    its = iterate_images(eng.apply, noisy, k=3)
    return its


def test_blend_ends_are_exact(phantom, model) -> None:
    x, y0, _, t_low = _three(phantom, model)
    assert np.array_equal(blend(x, y0, t_low, 0.0), y0)
    assert np.array_equal(blend(x, y0, t_low, -1.0), x)
    assert np.array_equal(blend(x, y0, t_low, 1.0), t_low)
    half = blend(x, y0, t_low, -0.5)
    assert np.allclose(half, 0.5 * x + 0.5 * y0, atol=1e-3)
    assert half.dtype == np.float32


@pytest.mark.parametrize("s", [1.5, -1.01, float("nan")])
def test_blend_refuses_bad_strength(phantom, model, s) -> None:
    x, y0, _, t_low = _three(phantom, model)
    with pytest.raises(ValueError, match="strength"):
        blend(x, y0, t_low, s)


def test_blend_stack_is_ordered_and_noise_falls(phantom, model, flat_noise, falls) -> None:
    x, y0, _, t_low = _three(phantom, model)
    st = blend_stack(x, y0, t_low, n_candidates=4)
    assert st.mode == "blend" and len(st) == 9 and st.default_index == 4
    assert np.array_equal(st.default.image, y0)
    assert np.array_equal(st.candidates[0].image, x)
    assert np.array_equal(st.candidates[-1].image, t_low)
    assert np.allclose(st.strengths, np.linspace(-1, 1, 9))
    # A blend's measured progress toward its bound is exactly its |s|.
    raw = [c.progress_raw for c in st]
    assert np.allclose(np.abs(raw), np.abs(st.strengths), atol=1e-4)
    noise = [flat_noise(c.image, phantom[1]) for c in st]
    assert falls(noise), noise
    # interpolate() between blend candidates is again the blend.
    assert np.allclose(st.interpolate(-0.3), blend(x, y0, t_low, -0.3), atol=1e-3)


def test_iterate_stack_follows_the_iterates(phantom, model, flat_noise, falls) -> None:
    its = _three(phantom, model)
    st = iterate_stack(its, n_candidates=4)
    assert st.mode == "iterate"
    assert np.array_equal(st.default.image, its[1])
    assert np.array_equal(st.candidates[0].image, its[0])
    assert np.array_equal(st.candidates[-1].image, its[3])
    s = st.strengths
    assert np.all(np.diff(s) >= 0) and s[0] == -1.0 and s[-1] == pytest.approx(1.0)
    # The high side is the blend x <-> y0; the low side passes phi^2 (half way along).
    bl = blend_stack(its[0], its[1], its[3], n_candidates=4)
    for a, b in zip(st.candidates[:4], bl.candidates[:4], strict=True):
        assert np.allclose(a.image, b.image, atol=1e-3)
    assert np.array_equal(st.candidates[4 + 2].image, its[2])
    noise = [flat_noise(c.image, phantom[1]) for c in st]
    assert falls(noise), noise


def test_iterate_images_checks_k(phantom, model) -> None:
    eng = InteractiveDenoiser(model)
    with pytest.raises(ValueError, match="k must"):
        iterate_images(eng.apply, phantom[0], k=0)
