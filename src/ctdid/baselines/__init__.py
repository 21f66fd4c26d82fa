"""Baselines a CT user gets without DID's fine-tuning, as candidate stacks.

Every function here takes and returns float32 HU images and builds the same
:class:`~ctdid.core.CandidateStack` as the DID engine (ordered high resolution -> low noise,
``s = -1`` the input, ``s = 0`` the default, ``s = +1`` the low-noise end), so that the labels,
the viewer, the exports and the evaluation treat DID and its baselines alike:

* :func:`blend_stack`: pixel blends x <-> y0 <-> t_low (the ASiR-V convention), milliseconds;
* :func:`iterate_stack`: the path through the iterates ``phi^j(x)`` (MAP-NN's family);
* :func:`weight_interp_stack`: weights ``w0 + a (w_end - w0)`` toward DID's end weights (DNI);
* :func:`tv_stack` and :func:`bm3d_stack`: classical strength sweeps of the input
  (scikit-image's TV; BM3D with a noise PSD estimated from flat regions, since CT noise is
  correlated).

:class:`BaselineDenoiser` wraps them behind the engine's interface for ``ctdid run --method``;
:class:`SidedDenoiser` makes each side with its own method (DID, blend or iterates) and joins
them at the default (``ctdid run --method auto``).
Nothing here reads or writes files or prints.
"""

from ctdid.baselines.blend import blend, blend_stack
from ctdid.baselines.classical import (
    bm3d_denoise,
    bm3d_stack,
    estimate_noise_psd,
    tv_denoise,
    tv_stack,
)
from ctdid.baselines.engine import METHODS, BaselineDenoiser
from ctdid.baselines.interp import interpolate_weights, weight_interp_stack
from ctdid.baselines.iterate import iterate_images, iterate_stack
from ctdid.baselines.sided import SIDE_METHODS, SidedDenoiser, join_sides
from ctdid.baselines.stack import make_stack

__all__ = [
    "METHODS",
    "SIDE_METHODS",
    "BaselineDenoiser",
    "SidedDenoiser",
    "blend",
    "blend_stack",
    "bm3d_denoise",
    "bm3d_stack",
    "estimate_noise_psd",
    "interpolate_weights",
    "iterate_images",
    "iterate_stack",
    "join_sides",
    "make_stack",
    "tv_denoise",
    "tv_stack",
    "weight_interp_stack",
]
