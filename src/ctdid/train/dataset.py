"""Random training patches from a folder of low/normal-dose pairs, at any dose.

Patches are drawn mostly inside the body (a patch that is mostly air teaches nothing) and
augmented by the eight flips and 90 degree rotations. Sample ``i`` depends only on the seed and
``i``, so a resumed training run sees exactly the patches an uninterrupted one would.
A ``ctdid simulate`` folder (several stored doses and noise realisations per slice) is read
too: the images stored at the training dose are used, one realisation drawn per sample.
Values stay in HU: the training loop converts them with the model's
:class:`ctdid.core.adapter.HUAdapter`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ctdid.errors import InputError
from ctdid.train.pairs import Pair, list_pairs, load_pair

__all__ = ["PairPatchDataset", "split_pairs"]


def split_pairs(folder: str | os.PathLike[str], *, n_val: int = 2) -> tuple[list[Path], list[Path]]:
    """Split a pairs folder into training files and the last ``n_val`` files (validation).

    Raises
    ------
    InputError
        If the folder has no pair files, or too few to leave one for training.
    """
    files = list_pairs(folder)
    if n_val < 0:
        raise InputError(f"n_val must be >= 0, got {n_val}")
    if n_val >= len(files):
        raise InputError(
            f"{len(files)} pair file(s): too few to hold out {n_val} for validation", path=folder
        )
    return files[: len(files) - n_val], files[len(files) - n_val :]


class PairPatchDataset(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """Random (low, normal) HU patches from pair files at a chosen dose.

    Parameters
    ----------
    source : path-like or sequence of path-like
        A pairs folder (all its ``.npz``) or a list of pair files.
    dose : float
        Dose fraction of the returned low-dose patches, in (0, 1]; derived from each pair's
        base dose by :meth:`ctdid.train.pairs.Pair.low_at`, or, for a ``ctdid simulate``
        slice, its images stored at that dose (one of its realisations drawn per sample).
    patch : int, optional
        Patch size in pixels (square). Default 128.
    augment : bool, optional
        Random flips and 90 degree rotations. Default true.
    seed : int, optional
        Seed of the patch positions and augmentations.
    length : int, optional
        Number of samples :func:`len` reports (the dataset is infinite; index ``i`` is any
        non-negative integer). Default 1 000 000.
    body_hu : float, optional
        Pixels of the normal-dose image above this are body. Default -950 HU, so lung
        (about -850 HU) counts as body and air (-1000 HU) does not.
    min_body_fraction : float, optional
        A patch is accepted when at least this fraction of it is body. Default 0.5.
    max_tries : int, optional
        Positions tried per sample; the one with most body is kept if none qualifies.
    weights : sequence of float, optional
        Relative probability of drawing each file (same order). Default None: all equally
        likely.

    Raises
    ------
    InputError
        No pair, a bad option, a slice smaller than ``patch``, or a ``ctdid simulate`` slice
        without images at ``dose``.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        dose: float,
        patch: int = 128,
        augment: bool = True,
        seed: int = 0,
        length: int = 1_000_000,
        body_hu: float = -950.0,
        min_body_fraction: float = 0.5,
        max_tries: int = 20,
        weights: Sequence[float] | None = None,
    ) -> None:
        if isinstance(source, str | os.PathLike):
            files = list_pairs(source)
        else:
            files = [Path(f) for f in source]
        if not files:
            raise InputError("no pair files given for training")
        if not 0 < dose <= 1:
            raise InputError(f"dose must be a fraction in (0, 1], got {dose}")
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise InputError(f"patch must be a positive integer, got {patch!r}")
        if not 0 <= min_body_fraction <= 1:
            raise InputError(f"min_body_fraction must be in [0, 1], got {min_body_fraction}")
        self._p: NDArray[np.float64] | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(files),) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise InputError(f"need {len(files)} finite file weights >= 0, got {weights!r}")
            if w.sum() <= 0:
                raise InputError("the file weights sum to 0: no file could be drawn")
            self._p = w / w.sum()
        self.files = files
        self.dose = float(dose)
        self.patch = patch
        self.augment = bool(augment)
        self.seed = int(seed)
        self.length = int(length)
        self.min_body_fraction = float(min_body_fraction)
        self.max_tries = max(1, int(max_tries))
        self.pairs: list[Pair] = [load_pair(f, dose=self.dose) for f in files]
        self._low: list[NDArray[np.float32]] = []  # (realisations, y, x) at self.dose
        self._body_sum: list[NDArray[np.int64]] = []
        for f, pair in zip(files, self.pairs, strict=True):
            h, w = pair.normal.shape
            if h < patch or w < patch:
                raise InputError(f"slice {h}x{w} is smaller than the patch {patch}", path=f)
            self._low.append(pair.realisations_at(self.dose))
            body = (pair.normal > body_hu).astype(np.int64)
            integral = np.zeros((h + 1, w + 1), dtype=np.int64)
            integral[1:, 1:] = body.cumsum(0).cumsum(1)
            self._body_sum.append(integral)

    def __len__(self) -> int:
        return self.length

    def _body_fraction(self, k: int, y: int, x: int) -> float:
        s = self._body_sum[k]
        p = self.patch
        total = s[y + p, x + p] - s[y, x + p] - s[y + p, x] + s[y, x]
        return float(total) / (p * p)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Sample ``index``: ``(low, normal)`` HU tensors of shape (1, patch, patch)."""
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, int(index)])
        if self._p is None:
            k = int(rng.integers(len(self.pairs)))
        else:
            k = int(rng.choice(len(self.pairs), p=self._p))
        h, w = self.pairs[k].normal.shape
        p = self.patch
        best = (-1.0, 0, 0)
        for _ in range(self.max_tries):
            y = int(rng.integers(h - p + 1))
            x = int(rng.integers(w - p + 1))
            frac = self._body_fraction(k, y, x)
            if frac > best[0]:
                best = (frac, y, x)
            if frac >= self.min_body_fraction:
                break
        _, y, x = best
        rot, flip = (int(rng.integers(4)), bool(rng.integers(2))) if self.augment else (0, False)
        lows = self._low[k]
        r = int(rng.integers(lows.shape[0])) if lows.shape[0] > 1 else 0  # after the old draws
        low = lows[r, y : y + p, x : x + p]
        normal = self.pairs[k].normal[y : y + p, x : x + p]
        if self.augment:
            low = np.rot90(low, rot)
            normal = np.rot90(normal, rot)
            if flip:
                low = low[:, ::-1]
                normal = normal[:, ::-1]
        return (
            torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None],
            torch.from_numpy(np.ascontiguousarray(normal, dtype=np.float32))[None],
        )

    def batch(self, step: int, size: int) -> tuple[Tensor, Tensor]:
        """Batch number ``step``: samples ``step * size`` to ``(step + 1) * size - 1``, stacked.

        Returns
        -------
        low, normal : Tensor, shape (size, 1, patch, patch)
            HU.
        """
        items = [self[step * size + j] for j in range(size)]
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
