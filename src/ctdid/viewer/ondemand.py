"""Slices of candidates whose volume is not on disk yet, rendered on demand from their weights.

A volume's shared trajectory saves every candidate's weights as soon as the fine-tuning makes
them and lists the candidate under ``rendering`` in ``run.json``
(:meth:`ctdid.results.ResultWriter.list_rendering`); its volume is rendered later, slice batch
by slice batch, which takes minutes for a long scan. :class:`OnDemandRenderer` renders just
the slice the viewer shows, from those weights, with the run's model: one forward pass (about
0.07 s for a 512 x 512 slice with ``unet-d25`` on 2 CPU cores). Rendered slices are kept in a
memory cache bounded in bytes.

It also renders the slices of a volume's on-demand previews (pixel blends listed under
``previews`` with ``"on_demand": true`` while the fine-tuning runs): the blend of the slice of
the input, the default ``phi(x)`` and t_low ``phi^k(x)`` (:func:`ctdid.core.did.preview_image`),
``k`` forward passes per slice, shared by every preview of that slice.

The run's model comes from the caller (``ctdid run --view`` passes its own) or is loaded from
``run.json``'s ``model`` entry (its ``spec``, ``weights`` and ``card``, as ``ctdid run`` loaded
it); either way its state-dict SHA-256 must equal ``run.json``'s, so a slice is never rendered
with another model than the run's.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import nn

from ctdid.errors import InputError
from ctdid.results import ResultReader

__all__ = ["OnDemandRenderer"]

_MB = 1024 * 1024


class OnDemandRenderer:
    """Render single slices of a result's ``rendering`` candidates, and cache them.

    Parameters
    ----------
    folder : path
        The result folder.
    model : nn.Module, optional
        The run's denoiser (HU in, HU out; it is not modified). Default: loaded when first
        needed from ``run.json``'s ``model`` (``spec``, ``weights``, ``card``).
    cache_bytes : int, optional
        Most bytes of rendered slices kept (float32), least recently used dropped first.
        Default 256 MiB (256 slices of 512 x 512).

    Notes
    -----
    A rendered slice equals the same slice of the candidate volume the run writes later (both
    are :meth:`ctdid.core.InteractiveDenoiser.apply` with the candidate's weights), up to
    float32 rounding of batched convolutions.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        model: nn.Module | None = None,
        cache_bytes: int = 256 * _MB,
    ) -> None:
        self.folder = Path(folder).absolute()
        self._model = model
        self._engine: Any = None
        self._why_not: str | None = None
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple[Any, ...], NDArray[np.float32]] = (
            collections.OrderedDict()
        )
        self._cache_bytes = int(cache_bytes)
        self._held = 0
        self._weights: tuple[int, Mapping[str, Any]] | None = None
        #: Slices rendered so far (cache misses).
        self.rendered = 0

    def status(self, doc: Mapping[str, Any]) -> tuple[bool, str | None]:
        """Whether slices can be rendered on demand for this run, and if not why.

        Loads and checks the model the first time (seconds); later calls are free.
        """
        with self._lock:
            self._ensure_engine(doc)
            return self._engine is not None, self._why_not

    def slice(self, reader: ResultReader, cid: int, z: int) -> NDArray[np.float32]:
        """Slice ``z`` of candidate ``cid`` (listed under ``rendering``), HU (y, x).

        Raises
        ------
        InputError
            The candidate is not listed under ``rendering``, the slice is out of range, or
            on-demand rendering is unavailable (the message says why: the model cannot be
            loaded or is not the run's).
        """
        key = (int(cid), int(z))
        with self._lock:
            hit = self._cached(key)
            if hit is not None:
                return hit
            if cid not in reader.rendering:
                raise InputError(f"candidate {cid} is not being rendered", path=self.folder)
            self._check_ready(reader, z)
            if self._weights is None or self._weights[0] != cid:
                self._weights = (int(cid), reader.candidate_weights(cid))
            x = np.array(reader.input()[z], dtype=np.float32)
            try:
                image = self._engine.apply(x, weights=self._weights[1], batch_size=1)
            except ValueError as exc:  # weights of another architecture
                raise InputError(f"cannot render candidate {cid}: {exc}") from None
            self.rendered += 1
            return self._keep(key, image)

    def preview_slice(self, reader: ResultReader, pid: int, z: int) -> NDArray[np.float32]:
        """Slice ``z`` of on-demand preview ``pid`` (listed under ``previews``), HU (y, x):
        bit for bit :func:`ctdid.core.did.preview_image` of that slice of the input, the
        default and t_low (the run's ``k``), these two computed once per slice.

        Raises
        ------
        InputError
            The preview is not listed (replaced by DID's candidates meanwhile) or has a file,
            the slice is out of range, or on-demand rendering is unavailable (says why).
        """
        from ctdid.core.did import preview_image

        key = ("preview", int(pid), int(z))
        with self._lock:
            hit = self._cached(key)
            if hit is not None:
                return hit
            rec = reader.previews.get(int(pid))
            if rec is None or not rec.on_demand:
                raise InputError(f"no on-demand preview {pid}", path=self.folder)
            self._check_ready(reader, z)
            x = np.array(reader.input()[z], dtype=np.float32)
            y0, t_low = self._bounds(reader, x, int(z))
            image = preview_image(x, y0, t_low, strength=rec.strength)
            return self._keep(key, image)

    def _cached(self, key: tuple[Any, ...]) -> NDArray[np.float32] | None:
        """The cached image of ``key`` (now the most recently used), or None."""
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        return hit

    def _check_ready(self, reader: ResultReader, z: int) -> None:
        """InputError unless slice ``z`` exists and the run's model is at hand (loaded now)."""
        n = reader.shape[0]
        if not 0 <= z < n:
            raise InputError(f"slice {z} out of range 0..{n - 1}", path=self.folder)
        self._ensure_engine(reader.doc)
        if self._engine is None:
            raise InputError(f"cannot render on demand: {self._why_not}", path=self.folder)

    def _bounds(
        self, reader: ResultReader, x: NDArray[np.float32], z: int
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The default and t_low of slice ``z`` (``x``), cached: the model applied once and
        ``k`` times in a row, ``k`` from ``run.json``'s config."""
        keys = (("default", z), ("t_low", z))
        y0_hit, t_hit = self._cached(keys[0]), self._cached(keys[1])
        if y0_hit is not None and t_hit is not None:
            return y0_hit, t_hit
        k = int((reader.doc.get("config") or {}).get("k", 3))
        y0 = np.asarray(self._engine.apply(x, batch_size=1), dtype=np.float32)
        t = y0
        for _ in range(k - 1):
            t = np.asarray(self._engine.apply(t, batch_size=1), dtype=np.float32)
        self.rendered += k
        return self._keep(keys[0], y0), self._keep(keys[1], t)

    def _keep(self, key: tuple[Any, ...], image: Any) -> NDArray[np.float32]:
        """Cache ``image`` (read-only float32) under ``key``, dropping the oldest over budget."""
        image = np.array(image, dtype=np.float32)
        image.setflags(write=False)
        self._cache[key] = image
        self._held += image.nbytes
        while self._held > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._held -= old.nbytes
        return image

    def _ensure_engine(self, doc: Mapping[str, Any]) -> None:
        if self._engine is not None or self._why_not is not None:
            return
        from ctdid.core import InteractiveDenoiser
        from ctdid.models import state_dict_sha256

        info = doc.get("model") or {}
        model = self._model
        if model is None:
            try:
                model = _load_run_model(info)
            except Exception as exc:  # any plug-in failure: say why, serve the rest
                self._why_not = f"the run's model cannot be loaded ({type(exc).__name__}: {exc})"
                return
        want = info.get("state_dict_sha256")
        if want is not None and state_dict_sha256(model) != want:
            self._why_not = "the model's weights differ from the run's (state-dict SHA-256)"
            return
        self._engine = InteractiveDenoiser(model)


def _load_run_model(info: Mapping[str, Any]) -> nn.Module:
    """The model ``ctdid run`` recorded in ``run.json`` (``spec``, ``weights``, ``card``)."""
    from ctdid.models import load_model

    spec = info.get("spec")
    if not spec:
        raise InputError(
            "run.json names no model spec (the run was started from Python with a model "
            "object; pass the model to the viewer: create_app(folder, model=...))"
        )
    weights, card = info.get("weights"), info.get("card")  # "card" may hold the card itself
    return load_model(
        str(spec),
        weights=weights if isinstance(weights, str) else None,
        card=card if isinstance(card, str) else None,
    )
