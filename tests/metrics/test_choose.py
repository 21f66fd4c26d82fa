import numpy as np
import pytest
from scipy import special

from ctdid.metrics.choose import CandidateLabels, candidate_detectability, pick_candidate
from ctdid.metrics.task import npw_detectability


def tradeoff():
    """A smoothing family: noise falls as the MTF50 falls (noise ~ mtf50^1.5)."""
    mtf50 = np.array([0.6, 0.45, 0.35, 0.25, 0.18, 0.12])
    return [
        CandidateLabels(noise=40 * (m / 0.6) ** 1.5, mtf50=m, name=f"c{i}")
        for i, m in enumerate(mtf50)
    ]


def test_equal_resolution_detect_picks_the_least_noisy():
    labels = [CandidateLabels(noise=n, mtf50=0.4) for n in (30.0, 12.0, 20.0)]
    d = candidate_detectability(labels, diameter_mm=5.0, contrast_hu=10.0)
    # same NPS shape and TTF: d' scales as 1 / noise
    assert d[0] / d[1] == pytest.approx(12.0 / 30.0)
    assert pick_candidate(labels, task="detect") == 1


def test_equal_noise_detect_picks_the_sharpest_for_a_small_lesion():
    labels = [CandidateLabels(noise=20.0, mtf50=m) for m in (0.2, 0.5, 0.3)]
    assert pick_candidate(labels, task="detect", diameter_mm=2.0, contrast_hu=50.0) == 1


def test_detect_uses_measured_nps_and_ttf_when_given():
    # white noise and a perfect TTF: the analytic NPW value C sqrt(pi R^2 frac) / (sigma dx)
    sigma, dx, c, d = 10.0, 0.5, 10.0, 6.0
    fn = 0.5 / dx
    white = (np.array([0.0, fn]), np.full(2, sigma**2 * dx * dx))
    perfect = (np.array([0.0, fn]), np.ones(2))
    labels = [*tradeoff(), CandidateLabels(noise=sigma, mtf50=10.0, nps=white, ttf=perfect)]
    scores = candidate_detectability(labels, diameter_mm=d, contrast_hu=c, f_max=fn)
    x = 2 * np.pi * (d / 2) * fn
    frac = 1 - special.j0(x) ** 2 - special.j1(x) ** 2
    assert scores[-1] == pytest.approx(c * np.sqrt(np.pi * 9 * frac) / (sigma * dx), rel=1e-3)
    assert scores[-1] == pytest.approx(npw_detectability(white, diameter_mm=d, contrast_hu=c))
    assert pick_candidate(labels, task="detect", diameter_mm=d, contrast_hu=c) == len(labels) - 1


def test_detect_on_a_tradeoff_prefers_smoother_images_for_larger_lesions_with_the_eye():
    labels = tradeoff()
    small = pick_candidate(labels, task="detect", diameter_mm=2.0, contrast_hu=50.0, eye=True)
    large = pick_candidate(labels, task="detect", diameter_mm=15.0, contrast_hu=5.0, eye=True)
    assert labels[large].mtf50 < labels[small].mtf50


def test_match_noise_and_sharpest_below():
    labels = tradeoff()
    noises = [lab.noise for lab in labels]
    i = pick_candidate(labels, task="match-noise", target_noise=15.0)
    assert i == int(np.argmin(np.abs(np.array(noises) - 15.0)))
    j = pick_candidate(labels, task="sharpest-below", noise_ceiling=20.0)
    assert labels[j].noise <= 20.0
    assert all(lab.mtf50 <= labels[j].mtf50 for lab in labels if lab.noise <= 20.0)
    assert j == 2  # noise 40*(0.35/0.6)^1.5 = 17.8 HU; the next sharper is 26 HU
    with pytest.raises(ValueError, match="lowest"):
        pick_candidate(labels, task="sharpest-below", noise_ceiling=1.0)
    with pytest.raises(ValueError, match="target_noise"):
        pick_candidate(labels, task="match-noise")
    with pytest.raises(ValueError, match="unknown task"):
        pick_candidate(labels, task="fastest")  # type: ignore[arg-type]
