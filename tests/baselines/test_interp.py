"""Weight interpolation toward DID's end weights (DNI-style)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctdid.baselines import interpolate_weights, weight_interp_stack
from ctdid.core import InteractiveDenoiser


def test_interpolate_weights_ends_and_integers() -> None:
    w0 = {"a": torch.zeros(3), "n": torch.tensor(5)}
    w1 = {"a": torch.ones(3) * 2, "n": torch.tensor(9)}
    assert torch.equal(interpolate_weights(w0, w1, 0.0)["a"], w0["a"])
    assert torch.equal(interpolate_weights(w0, w1, 1.0)["a"], w1["a"])
    mid = interpolate_weights(w0, w1, 0.25)
    assert torch.allclose(mid["a"], torch.full((3,), 0.5))
    assert int(mid["n"]) == 5  # integer buffers are w0's
    with pytest.raises(ValueError, match="keys"):
        interpolate_weights(w0, {"a": w1["a"]}, 0.5)
    with pytest.raises(ValueError, match="shapes"):
        interpolate_weights(w0, {"a": torch.ones(2), "n": w1["n"]}, 0.5)


def test_weight_interp_stack_ends_are_the_did_ends(phantom, model) -> None:
    x = phantom[0]
    eng = InteractiveDenoiser(model, mode="fast", n_candidates=3, keep_weights=True)
    did = eng.run(x)
    ends = {"high": did.candidates[0].weights, "low": did.candidates[-1].weights}
    st = weight_interp_stack(
        eng.apply, x, w0=model.state_dict(), ends=ends, t_low=did.t_low, n_candidates=4
    )
    assert st.mode == "interp" and len(st) == 9
    assert np.allclose(st.default.image, did.default.image, atol=1e-4)
    assert np.allclose(st.candidates[0].image, did.candidates[0].image, atol=1e-3)
    assert np.allclose(st.candidates[-1].image, did.candidates[-1].image, atol=1e-3)
    assert np.all(np.diff(st.strengths) >= 0)
    assert st.coverage["high"] == pytest.approx(did.coverage["high"], abs=1e-3)
