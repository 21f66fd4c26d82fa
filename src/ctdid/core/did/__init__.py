"""The Deep Interactive Denoiser engine (Bai et al., arXiv 2011.14873).

From one pretrained denoiser ``phi_w0`` (HU in, HU out) and one noisy image ``x``, the engine
makes an ordered set of candidate images along the noise-resolution tradeoff curve:

* the default ``y0 = phi_w0(x)``;
* toward the *high-resolution* bound ``t_high = x``: fine-tune a copy of the weights on the
  one-sample loss ``||phi_w(x) - t_high||^2``; the outputs become sharper and noisier;
* toward the *low-noise* bound ``t_low = phi_w0^k(x)`` (the model applied ``k`` times): the
  same with ``t_low``; the outputs become smoother.

Each candidate's *progress* toward its bound is the projection, inside the body mask, of
``y - y0`` on ``t - y0`` divided by ``||t - y0||^2`` (0 = default, 1 = bound).

Modes
-----
``"faithful"``
    The paper: SGD (momentum 0.9, learning rate 1e-2) on all weights, mean-squared error in
    network units, every iteration's output is a candidate, stop when the relative change
    between consecutive outputs (whole image, network units) is below ``tol`` (1 %).
``"robust"`` (default)
    Gauss-Newton (Levenberg-Marquardt) steps on the same one-sample loss, with the damping
    set, each iteration, so that progress advances by a fixed amount (0.2 of the way). Each
    iteration linearises the network and builds a small Lanczos basis (at most 40 vectors,
    each one Jacobian-vector and one vector-Jacobian product) of the Gauss-Newton matrix; in
    that basis the damped step and the progress it predicts are known for every damping, so
    the damping that advances 0.2 is found without further passes and checked with one
    forward pass (the loss must fall). A damped step is an implicit-Euler step of the
    gradient flow of the linearised loss, the continuous limit of the paper's SGD, so long
    steps stay stable where the loss is stiff (ctdid's measurements: Adam and SGD directions
    stall at about half of the way to ``t_low`` on norm-free networks; these steps reach
    0.8-0.9). The trajectory is parameterised by progress, not by a learning rate: it does
    not depend on the scale of the images, on the loss normalisation or on the size of the
    model. Candidates are evenly spaced in progress; those that fall inside one iteration
    are made from the same basis at the damping that predicts their progress. A direction
    runs until its last candidate reaches ``coverage`` or two iterations in a row gain less
    than a quarter of the candidate spacing. Networks whose layers have no forward-mode
    derivative fall back to the Adam directions below (recorded in ``info``).
``"fast"`` (the best CPU option)
    The same Gauss-Newton steps with a smaller basis (at most 12 vectors), longer steps
    (0.25) and an earlier stop (iterations gaining less than half the spacing): a quarter to
    a half of the robust mode's Jacobian products for nearly the same curve, reaching less
    far toward ``t_low``. Its Jacobian-vector products are finite differences of the weights
    (one plain forward pass each instead of a forward-mode pass, ``DIDOptions.jvp``), which
    moves the curve by a fraction of a HU; ``jvp="autodiff"`` gives the exact products.

Both modes fine-tune on crops inside the body (four 128 x 128 crops per training slice) and
apply the weights to the whole image for each candidate, which makes an iteration about four
times cheaper on a 512 x 512 slice. Crops are used only when the network has no layer that
pools statistics over the image (instance, group or layer norm): with such layers a crop
sees other statistics than the whole image and the curve would stray (``n_crops=0`` forces
the whole image).

``step_control="search"`` and ``"adaptive"`` (experimental,
:mod:`~ctdid.core.did.adam_experimental`) select the earlier Adam directions with a step
length searched per iteration (several forward passes) or adapted from the last one (one
forward pass), each iteration advancing progress by 0.04 resp. 0.08: cheaper per iteration,
but on norm-free networks they stall far from ``t_low``.

Both directions run interleaved by default (one network copy each, advanced in turn), so the
first candidates of both ends appear after a few iterations; ``interleave=False`` runs them
one after the other with one copy (less memory, same candidates).

The engine never modifies the caller's model: it fine-tunes a deep copy.

Layout
------
:mod:`~ctdid.core.did.engine` (the public class), :mod:`~ctdid.core.did.options` (the
options object), :mod:`~ctdid.core.did.generate` (one run: bounds, training set, directions,
stack), :mod:`~ctdid.core.did.problem` (targets, progress, crops), the strategies behind
:mod:`~ctdid.core.did.strategy` (:mod:`~ctdid.core.did.sgd`, :mod:`~ctdid.core.did.
progress_control` with :mod:`~ctdid.core.did.gauss_newton` or :mod:`~ctdid.core.did.
adam_experimental`), :mod:`~ctdid.core.did.preview` (the instant blend previews) and
:mod:`~ctdid.core.did.volume`.
"""

from ctdid.core.did.engine import InteractiveDenoiser
from ctdid.core.did.options import DIDOptions, Mode, StepControl
from ctdid.core.did.preview import LiveCandidates, blend_previews, preview_image, replaces
from ctdid.core.did.problem import progress

__all__ = [
    "DIDOptions",
    "InteractiveDenoiser",
    "LiveCandidates",
    "Mode",
    "StepControl",
    "blend_previews",
    "preview_image",
    "progress",
    "replaces",
]
