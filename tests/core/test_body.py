"""Tests of the automatic body mask."""

from __future__ import annotations

import numpy as np
import pytest

from ctdid.core.body import body_mask


def disk(n: int, r: float, cy: float = 0.0, cx: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def test_disk_with_lung_and_table():
    rng = np.random.default_rng(0)
    body = disk(64, 24)
    img = np.full((64, 64), -1000.0, np.float32)
    img[body] = 40.0
    lung = disk(64, 8, cx=-8)
    img[lung] = -850.0  # enclosed air-like region: must be filled
    img[60:62, 4:60] = 200.0  # a "table", separate from the body
    img += rng.normal(0, 30, img.shape).astype(np.float32)
    mask = body_mask(img)
    assert mask.dtype == bool and mask.shape == img.shape
    iou = (mask & body).sum() / (mask | body).sum()
    assert iou > 0.97
    assert mask[lung].all()
    assert not mask[60:62].any()
    # Without hole filling and component selection, the lung and the table stay as they are.
    raw = body_mask(img, largest_only=False, fill_holes=False)
    assert not raw[lung].any() and raw[60:62, 10:50].all()


def test_threshold_and_volume():
    img = np.full((2, 32, 32), -1000.0, np.float32)
    img[0][disk(32, 10)] = -300.0
    mask = body_mask(img)
    assert mask.shape == (2, 32, 32)
    assert mask[0].sum() == disk(32, 10).sum()
    assert not mask[1].any()  # empty slice stays empty
    assert not body_mask(img, threshold=-200.0).any()


def test_invalid():
    with pytest.raises(ValueError, match="shape"):
        body_mask(np.zeros(8))
    bad = np.zeros((4, 4))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        body_mask(bad)
    with pytest.raises(ValueError, match="numeric"):
        body_mask(np.array([["a"]]))
