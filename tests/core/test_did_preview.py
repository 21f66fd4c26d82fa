"""Instant previews of the DID engine: blends first, marked, replaced, the stack unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ctdid.baselines import blend_stack
from ctdid.core import Candidate, InteractiveDenoiser
from ctdid.core.did import LiveCandidates, blend_previews, preview_image, replaces
from tiny_run_model import Tiny, disk_scan

torch.set_num_threads(1)

N_CAND = 3
OPTS: dict[str, Any] = {"mode": "fast", "n_candidates": N_CAND, "seed": 3}


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    return np.array(disk_scan(40, seed=2).hu[0])


@pytest.fixture(scope="module")
def streamed(noisy: np.ndarray) -> tuple[list[Candidate], Any]:
    """Every candidate yielded with previews on, and the returned stack."""
    gen = InteractiveDenoiser(Tiny(), **OPTS).iter_candidates(noisy, previews=True)
    out: list[Candidate] = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value


@pytest.fixture(scope="module")
def plain(noisy: np.ndarray) -> Any:
    return InteractiveDenoiser(Tiny(), **OPTS).run(noisy)


def test_default_then_previews_then_did(streamed):
    cands, _ = streamed
    flags = [c.preview for c in cands]
    assert cands[0].direction == "default" and not cands[0].preview
    n_prev = sum(flags)
    assert n_prev == 2 * N_CAND
    # previews come right after the default, before any fine-tuned candidate
    assert flags[1 : 1 + n_prev] == [True] * n_prev
    assert not any(flags[1 + n_prev :])
    assert len(cands) > 1 + n_prev  # DID candidates follow
    assert all(c.step >= 1 for c in cands[1 + n_prev :])


def test_previews_are_the_blend_baseline(streamed, noisy):
    cands, stack = streamed
    prev = [c for c in cands if c.preview]
    ref = blend_stack(noisy, stack.default.image, stack.t_low, n_candidates=N_CAND)
    by_s = {round(c.strength, 9): c for c in ref.candidates}
    expect = [sign * i / N_CAND for sign in (-1, 1) for i in range(1, N_CAND + 1)]
    assert [c.strength for c in prev] == expect
    for c in prev:
        assert c.direction == ("high" if c.strength < 0 else "low")
        assert c.progress == c.progress_raw == abs(c.strength) and c.step == 0
        assert c.image.shape == noisy.shape and c.image.dtype == np.float32
        np.testing.assert_array_equal(c.image, by_s[round(c.strength, 9)].image)  # bit for bit
    np.testing.assert_array_equal(prev[N_CAND - 1].image, noisy)  # s = -1: the input
    np.testing.assert_array_equal(prev[-1].image, stack.t_low)  # s = +1: t_low


def test_final_stack_equals_a_run_without_previews(streamed, plain):
    _, stack = streamed
    assert not any(c.preview for c in stack)
    assert len(stack) == len(plain) and stack.default_index == plain.default_index
    for a, b in zip(stack, plain, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert (a.direction, a.step, a.strength, a.progress, a.progress_raw) == (
            b.direction, b.step, b.strength, b.progress, b.progress_raw,
        )  # fmt: skip
    np.testing.assert_array_equal(stack.t_low, plain.t_low)
    np.testing.assert_array_equal(stack.body, plain.body)
    assert stack.steps == plain.steps and stack.stop_reasons == plain.stop_reasons


def test_run_gives_previews_only_to_the_callback(noisy, plain):
    seen: list[Candidate] = []
    stack = InteractiveDenoiser(Tiny(), **OPTS).run(noisy, callback=seen.append, previews=True)
    assert sum(c.preview for c in seen) == 2 * N_CAND
    assert not any(c.preview for c in stack)
    np.testing.assert_array_equal(stack.images, plain.images)
    # default off: no preview at all (existing behaviour)
    seen.clear()
    InteractiveDenoiser(Tiny(), **OPTS, max_steps=1).run(noisy, callback=seen.append)
    assert not any(c.preview for c in seen)


def test_did_candidates_replace_previews(streamed):
    cands, stack = streamed
    live = LiveCandidates(n_candidates=N_CAND)
    for c in cands[: 1 + 2 * N_CAND]:
        assert live.add(c) == []
    assert len(live.previews) == 2 * N_CAND
    s = [c.strength for c in live.candidates]
    assert s == sorted(s) and s[0] == -1.0 and s[-1] == 1.0  # the whole range at once
    for c in cands[1 + 2 * N_CAND :]:
        gone = live.add(c)
        assert all(p.preview and p.direction == c.direction for p in gone)
        for p in live.previews:  # what is left lies beyond DID's reach on its side
            did = [abs(d.strength) for d in live.candidates
                   if not d.preview and d.direction == p.direction]  # fmt: skip
            assert abs(p.strength) > max(did, default=0.0) + 0.5 / N_CAND - 1e-9
    assert len(live.previews) < 2 * N_CAND  # DID replaced some
    live.finish()
    assert live.previews == ()
    assert list(live.candidates) == list(stack.candidates)  # the same objects, same order


def test_replaces_rule():
    img = np.zeros((2, 2), np.float32)

    def cand(direction: str, s: float, preview: bool = False) -> Candidate:
        return Candidate(img, direction, 0 if preview else 1, abs(s), abs(s), s, 0.0,  # type: ignore[arg-type]
                         preview=preview)  # fmt: skip

    p = cand("low", 0.5, preview=True)
    assert replaces(cand("low", 0.4), p, n_candidates=4)  # 0.5 <= 0.4 + 0.5 / 4
    assert replaces(cand("low", 0.6), p, n_candidates=4)  # reached
    assert not replaces(cand("low", 0.3), p, n_candidates=4)  # 0.5 > 0.3 + 0.125
    assert not replaces(cand("high", -0.9), p, n_candidates=4)  # other side
    assert not replaces(cand("low", 0.9, preview=True), p, n_candidates=4)  # previews: no
    assert not replaces(cand("default", 0.0), cand("low", 0.1, True), n_candidates=4)


def test_blend_previews_checks():
    a = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="n_candidates"):
        blend_previews(a, a, a, n_candidates=0)
    with pytest.raises(ValueError, match="shapes differ"):
        blend_previews(a, a, a[:2], n_candidates=2)
    with pytest.raises(ValueError, match="direction"):
        blend_previews(a, a, a, n_candidates=2, directions=("sideways",))
    one = blend_previews(a, a + 1, a + 3, n_candidates=2, directions=("low",))
    assert [c.strength for c in one] == [0.5, 1.0]
    np.testing.assert_array_equal(one[0].image, a + 2)


def test_preview_image_is_the_preview_of_its_strength():
    rng = np.random.default_rng(0)
    x, y0, t = (rng.normal(0, 50, (2, 9, 7)).astype(np.float32) for _ in range(3))
    for c in blend_previews(x, y0, t, n_candidates=3):
        np.testing.assert_array_equal(preview_image(x, y0, t, strength=c.strength), c.image)
    np.testing.assert_array_equal(preview_image(x, y0, t, strength=0.0), y0)
    with pytest.raises(ValueError, match="strength"):
        preview_image(x, y0, t, strength=1.5)
    with pytest.raises(ValueError, match="shapes differ"):
        preview_image(x, y0, t[:1], strength=0.5)


def test_one_direction_previews_only_that_side(noisy):
    seen: list[Candidate] = []
    eng = InteractiveDenoiser(Tiny(), **OPTS, directions=("low",))
    eng.run(noisy, callback=seen.append, previews=True)
    prev = seen[1 : 1 + N_CAND]
    assert all(c.preview and c.direction == "low" for c in prev)
    assert not any(c.preview for c in seen[1 + N_CAND :])
    assert not any(c.direction == "high" for c in seen)
