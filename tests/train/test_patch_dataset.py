"""Patch sampling: HU values, dose derivation, body bias, augmentation, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pairs_factory import write_pairs

from ctdid.errors import InputError
from ctdid.train.dataset import PairPatchDataset, split_pairs
from ctdid.train.pairs import load_pair


def test_full_size_patch_without_augmentation_is_the_slice_at_the_dose(tmp_path: Path) -> None:
    files = write_pairs(tmp_path, n=1, size=32)
    pair = load_pair(files[0])
    for dose in (0.25, 0.5, 1 / 16):
        ds = PairPatchDataset(files, dose=dose, patch=32, augment=False, seed=0)
        low, normal = ds[5]
        assert low.shape == normal.shape == (1, 32, 32)
        assert low.dtype == torch.float32
        np.testing.assert_array_equal(normal[0].numpy(), pair.normal)  # HU, not network units
        np.testing.assert_allclose(low[0].numpy(), pair.low_at(dose), atol=1e-3)


def test_samples_are_deterministic_and_vary(tmp_path: Path) -> None:
    write_pairs(tmp_path, n=3, size=64)
    ds = PairPatchDataset(tmp_path, dose=0.25, patch=16, seed=1)
    a, b = ds[3], ds[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(ds[4][0], a[0])
    other = PairPatchDataset(tmp_path, dose=0.25, patch=16, seed=2)
    assert not torch.equal(other[3][0], a[0])
    low, normal = ds.batch(2, 5)
    assert low.shape == normal.shape == (5, 1, 16, 16)
    assert torch.equal(low[1], ds[11][0])
    assert len(ds) == 1_000_000
    with pytest.raises(IndexError):
        ds[-1]


def test_augmentation_transforms_low_and_normal_together(tmp_path: Path) -> None:
    files = write_pairs(tmp_path, n=1, size=32)
    # make low a known function of normal: any mismatch of flips/rotations shows
    with np.load(files[0]) as z:
        data = dict(z)
    data["low"] = (2 * data["normal"]).astype(np.float32)
    np.savez(files[0], **data)
    ds = PairPatchDataset(files, dose=0.25, patch=32, augment=True, seed=0)
    seen = set()
    for i in range(40):
        low, normal = ds[i]
        np.testing.assert_array_equal(low.numpy(), 2 * normal.numpy())
        seen.add(normal.numpy().tobytes())
    assert len(seen) == 8  # the eight flips/rotations of a non-symmetric slice


def test_patches_are_biased_to_the_body(tmp_path: Path) -> None:
    files = write_pairs(tmp_path, n=1, size=64)
    with np.load(files[0]) as z:
        data = dict(z)
    body = np.full((64, 64), -1000.0, dtype=np.float32)
    body[:32, :32] = 0.0  # body only in one corner
    data["normal"] = body
    data["low"] = body.copy()
    np.savez(files[0], **data)

    def body_fractions(min_fraction: float) -> np.ndarray:
        ds = PairPatchDataset(files, dose=0.25, patch=16, seed=0, min_body_fraction=min_fraction)
        return np.array([float((ds[i][1] > -500).float().mean()) for i in range(60)])

    assert np.mean(body_fractions(0.5) >= 0.5) > 0.9
    assert np.mean(body_fractions(0.0) >= 0.5) < 0.5  # uniform sampling mostly hits air


def test_bad_options_raise_input_error(tmp_path: Path) -> None:
    files = write_pairs(tmp_path, n=2, size=32)
    with pytest.raises(InputError, match="smaller than the patch"):
        PairPatchDataset(files, dose=0.25, patch=64)
    with pytest.raises(InputError, match="dose"):
        PairPatchDataset(files, dose=0.0)
    with pytest.raises(InputError, match="patch"):
        PairPatchDataset(files, dose=0.25, patch=0)
    with pytest.raises(InputError, match="no pair"):
        PairPatchDataset([], dose=0.25)


def test_split_pairs_holds_out_the_last_files(tmp_path: Path) -> None:
    files = write_pairs(tmp_path, n=4, size=32)
    train, val = split_pairs(tmp_path, n_val=1)
    assert train == files[:3] and val == files[3:]
    assert split_pairs(tmp_path, n_val=0) == (files, [])
    with pytest.raises(InputError, match="too few"):
        split_pairs(tmp_path, n_val=4)


def _drawn_files(ds: PairPatchDataset, n: int) -> np.ndarray:
    """How often each file was drawn in samples 0..n-1 (matched by the full-size normal)."""
    normals = [p.normal for p in ds.pairs]
    counts = np.zeros(len(normals), int)
    for i in range(n):
        normal = ds[i][1][0].numpy()
        counts[[k for k, ref in enumerate(normals) if np.array_equal(ref, normal)]] += 1
    return counts


def test_file_weights_set_how_often_each_file_is_drawn(tmp_path: Path) -> None:
    files = write_pairs(tmp_path, n=3, size=32)
    even = PairPatchDataset(files, dose=0.25, patch=32, augment=False, seed=0)
    weighted = PairPatchDataset(
        files, dose=0.25, patch=32, augment=False, seed=0, weights=[6.0, 0.0, 2.0]
    )
    counts = _drawn_files(weighted, 400)
    assert counts[1] == 0  # weight 0: never drawn
    assert 0.65 < counts[0] / 400 < 0.85  # 3/4 expected
    assert np.all(_drawn_files(even, 300) > 60)  # default: all files drawn
    with pytest.raises(InputError, match="file weights"):
        PairPatchDataset(files, dose=0.25, patch=32, weights=[1.0, 1.0])
    with pytest.raises(InputError, match="sum to 0"):
        PairPatchDataset(files, dose=0.25, patch=32, weights=[0.0, 0.0, 0.0])
