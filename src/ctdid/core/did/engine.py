"""The public engine: :class:`InteractiveDenoiser` (build, run, iterate, apply)."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Generator, Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from ctdid.core.candidates import Candidate, CandidateStack
from ctdid.core.did import volume as _volume
from ctdid.core.did.generate import Setup, generate
from ctdid.core.did.inputs import as_batch, as_tensor, body_weights
from ctdid.core.did.network import apply_net, deterministic, pools_over_image
from ctdid.core.did.options import DIDOptions, Mode

__all__ = ["InteractiveDenoiser"]

DEFAULT_HU_SCALE = 1000.0  # HU per network unit when the model does not say
DEFAULT_HU_OFFSET = -1000.0  # HU of network value 0 (air 0, water 1)


class InteractiveDenoiser:
    """Make candidate images along a denoiser's noise-resolution tradeoff curve.

    Parameters
    ----------
    model : nn.Module
        Denoiser mapping (B, 1, H, W) float32 HU images to HU images of the same shape. If it
        has an attribute ``hu_scale`` (HU per network unit, as :class:`ctdid.core.adapter.
        HUAdapter`), the faithful mode's loss and stopping rule use it (and ``hu_offset``);
        otherwise 1000 HU per unit and an offset of -1000 HU (air 0, water 1). The model is
        never modified: a deep copy is fine-tuned, in eval mode (batch-norm statistics and
        dropout frozen), all floating-point parameters trainable.
    options : DIDOptions, optional
        How to fine-tune (see :class:`~ctdid.core.did.options.DIDOptions` for every option,
        its units and default). Default ``DIDOptions()``: the robust mode.
    **overrides
        Options by keyword (``mode="fast"``, ``k=3``, ...), replacing those of ``options``.

    Attributes
    ----------
    options : DIDOptions
        The resolved options (the mode's defaults filled in); ``options.to_dict()`` is
        JSON-ready.
    device : torch.device
        Where the engine computes: ``options.device``, else the model's first parameter's.

    Raises
    ------
    ValueError
        If an option is out of range or unknown, or ``model.hu_scale`` is not positive.
    TypeError
        If ``model`` is not a ``torch.nn.Module`` or an override is not an option.

    Examples
    --------
    >>> engine = InteractiveDenoiser(model, mode="fast")      # doctest: +SKIP
    >>> stack = engine.run(noisy_hu)                          # doctest: +SKIP
    >>> sharper = stack.interpolate(-0.5)                     # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, options: DIDOptions | None = None, **overrides: Any
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if options is not None and not isinstance(options, DIDOptions):
            raise TypeError(f"options must be a DIDOptions, got {type(options).__name__}")
        if options is None:
            opts = DIDOptions(**overrides)
        else:
            opts = dataclasses.replace(options, **overrides)
        self.options: DIDOptions = opts.resolved()
        self.model = model
        device = self.options.device
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.hu_scale = float(getattr(model, "hu_scale", DEFAULT_HU_SCALE))
        self.hu_offset = float(getattr(model, "hu_offset", DEFAULT_HU_OFFSET))
        if not (math.isfinite(self.hu_scale) and self.hu_scale > 0):
            raise ValueError(f"model.hu_scale must be finite and > 0, got {self.hu_scale}")
        self.setup = Setup(
            self.options, model, self.device, self.hu_scale, self.hu_offset,
            pools_over_image(model),
        )  # fmt: skip
        self._apply_cache: tuple[Any, nn.Module] | None = None

    # The options most callers read, as attributes (the rest: ``engine.options``).
    @property
    def mode(self) -> Mode:
        """Fine-tuning mode: "robust", "faithful" or "fast"."""
        return self.options.mode

    @property
    def k(self) -> int:
        """Times the model is applied to make ``t_low``."""
        return self.options.k

    @property
    def n_candidates(self) -> int:
        """Robust/fast: candidates per direction."""
        return self.options.n_candidates

    @property
    def coverage(self) -> float:
        """Robust/fast: progress of the last candidate of a direction."""
        return self.options.coverage

    @property
    def directions(self) -> tuple[str, ...]:
        """The bounds fine-tuned toward, of "high" and "low"."""
        return self.options.directions

    @property
    def body_threshold(self) -> float:
        """HU threshold of the automatic body mask."""
        return self.options.body_threshold

    @property
    def keep_weights(self) -> bool:
        """Whether candidates carry the weights that made them."""
        return self.options.keep_weights

    # ---------------------------------------------------------------------------------- API

    def run(
        self,
        x: ArrayLike | Tensor,
        *,
        body: ArrayLike | Tensor | None = None,
        callback: Callable[[Candidate], object] | None = None,
        previews: bool = False,
    ) -> CandidateStack:
        """Make the candidate stack for one image (or one batch sharing a trajectory).

        Parameters
        ----------
        x : array_like or Tensor, shape (H, W) or (B, 1, H, W)
            Noisy image(s) in HU. A batch is fine-tuned as one sample (the loss summed over
            it), so that a strength means the same on every image.
        body : array_like or Tensor of bool, optional
            Where to measure progress, same shape as ``x``. Default: the automatic body
            mask (whole image if no pixel is above ``body_threshold``).
        callback : callable, optional
            Called with each :class:`Candidate` as soon as it is made (the default first;
            see :meth:`iter_candidates` for the order).
        previews : bool, optional
            If true, ``callback`` also gets the preview candidates (see
            :meth:`iter_candidates`); the returned stack never holds them and is the same
            as without. Default False.

        Returns
        -------
        CandidateStack
            Candidates ordered high resolution -> low noise; images shaped like ``x``.
        """
        return _volume.drain(self.iter_candidates(x, body=body, previews=previews), callback)

    def iter_candidates(
        self,
        x: ArrayLike | Tensor,
        *,
        body: ArrayLike | Tensor | None = None,
        previews: bool = False,
    ) -> Generator[Candidate, None, CandidateStack]:
        """Yield candidates as they are made; the generator returns the :class:`CandidateStack`.

        Same arguments as :meth:`run`. Order of the yielded candidates: the default, then
        the candidates as they are made: each direction's from the default outward, the two
        directions interleaved (or one after the other when ``interleave=False``). Closing
        the generator early stops the fine-tuning.

        With ``previews=True``, right after the default and before the fine-tuning starts,
        the generator yields preview candidates (``Candidate.preview`` true): pixel blends of
        the engine's own images at ``s = +-i / n_candidates`` (i = 1..n, each direction of
        ``directions`` from the default outward; ``(1 - |s|) y0 + |s| x`` toward the input,
        ``(1 - s) y0 + s t_low`` toward the low-noise bound; see
        :mod:`ctdid.core.did.preview`). They cost milliseconds and give a slider over the
        whole range at once; each DID candidate then replaces the previews of its direction
        it has reached (:func:`~ctdid.core.did.preview.replaces`;
        :class:`~ctdid.core.did.preview.LiveCandidates` keeps the current set). The
        returned stack holds no preview and equals, bit for bit, the stack of a run
        without previews (same options and seed).
        """
        xt, shape = as_batch(x, self.device)
        mask = body_weights(
            xt, body, shape, threshold=self.options.body_threshold, device=self.device
        )
        return generate(self.setup, xt, mask, shape, batch_size=None, previews=bool(previews))

    def run_volume(
        self,
        x: ArrayLike | Tensor,
        *,
        shared: bool = True,
        train_slices: int = 8,
        batch_size: int = 8,
        body: ArrayLike | Tensor | None = None,
        callback: Callable[[Candidate], object] | None = None,
    ) -> CandidateStack | list[CandidateStack]:
        """Candidates for a CT volume.

        Parameters
        ----------
        x : array_like or Tensor, shape (Z, H, W)
            Noisy volume in HU.
        shared : bool, optional
            If true (default), fine-tune one trajectory on up to ``train_slices`` evenly
            spaced slices together and apply each candidate's weights to every slice, so a
            given strength means the same on all slices. If false, run each slice on its own
            and return one stack per slice.
        train_slices : int, optional
            Shared mode: slices the weights are fine-tuned on. Default 8.
        batch_size : int, optional
            Slices per forward pass when applying the model to the volume. Default 8.
        body : array_like of bool, shape (Z, H, W), optional
            Where to measure progress; default the automatic body mask.
        callback : callable, optional
            Called with each candidate as it is made.

        Returns
        -------
        CandidateStack or list of CandidateStack
            Shared: one stack whose images are (Z, H, W) volumes (memory: number of
            candidates times the volume). Otherwise one (H, W) stack per slice.
        """
        return _volume.run_volume(
            self, x, shared=shared, train_slices=train_slices, batch_size=batch_size,
            body=body, callback=callback,
        )  # fmt: skip

    def apply(
        self,
        x: ArrayLike | Tensor,
        *,
        weights: Mapping[str, Tensor] | None = None,
        batch_size: int = 8,
    ) -> NDArray[np.float32]:
        """Apply the pretrained model, or a candidate's weights, to images (no fine-tuning).

        Parameters
        ----------
        x : array_like or Tensor, shape (H, W) or (Z, H, W)
            Images in HU.
        weights : mapping of str to Tensor, optional
            A state dict of the model, e.g. ``Candidate.weights`` from a run with
            ``keep_weights=True`` or a candidate's weights file written by ``ctdid run``.
            Default the model's own (pretrained) weights: the default candidate ``phi_w0``.
        batch_size : int, optional
            Slices per forward pass. Default 8.

        Returns
        -------
        ndarray of float32
            The output in HU, shaped like ``x``; computed as the engine renders its
            candidates (eval mode, no gradients, deterministic cuDNN if ``deterministic``).

        Raises
        ------
        ValueError
            If ``x`` is not (H, W) or (Z, H, W), or the weights do not fit the model.
        """
        xt = as_tensor(x, "x")
        shape = tuple(xt.shape)
        if xt.ndim not in (2, 3):
            raise ValueError(f"x must be an (H, W) image or (Z, H, W) HU slices, got {shape}")
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        net = self._net_for(weights)
        xb = xt.reshape(-1, 1, *shape[-2:]).to(self.device)
        with deterministic(self.device, self.options.deterministic):
            y = apply_net(net, xb, int(batch_size))
        return np.ascontiguousarray(y.to("cpu", torch.float32).numpy()).reshape(shape)

    def _net_for(self, weights: Mapping[str, Tensor] | None) -> nn.Module:
        """A cached copy of the model holding ``weights`` (default the model's own)."""
        key = self.model if weights is None else weights
        if self._apply_cache is None or self._apply_cache[0] is not key:
            net = self._apply_cache[1] if self._apply_cache is not None else None
            if net is None:
                net = copy.deepcopy(self.model).to(self.device)
                net.eval()
            state = self.model.state_dict() if weights is None else weights
            try:
                net.load_state_dict(dict(state), strict=True)
            except RuntimeError as exc:
                self._apply_cache = None  # partly loaded: not reused
                raise ValueError(f"the weights do not fit the model: {exc}") from None
            self._apply_cache = (key, net)
        return self._apply_cache[1]
