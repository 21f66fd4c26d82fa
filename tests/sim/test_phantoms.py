"""Tests of ctdid.sim.phantoms: HU values, seeding, annotations."""

from __future__ import annotations

import numpy as np
import pytest

from ctdid.sim.phantoms import (
    abdomen_phantom,
    chest_phantom,
    disk_phantom,
    mita_lcd_phantom,
    mtf_phantom,
    shepp_logan_phantom,
    water_cylinder,
)


def test_water_cylinder() -> None:
    ph = water_cylinder(shape=128, fov_mm=250.0, diameter_mm=200.0)
    assert ph.hu.shape == (128, 128) and ph.hu.dtype == np.float32
    assert ph.spacing == (250 / 128, 250 / 128)
    assert ph.hu[ph.flat_roi].size > 100 and np.all(ph.hu[ph.flat_roi] == 0)
    assert ph.hu[0, 0] == -1000 and ph.hu.min() >= -1000 and ph.hu.max() <= 0
    # Anti-aliased area: the mean over the image matches the disk area in air.
    area = np.pi * 100**2 / (250 / 128) ** 2
    assert (ph.hu + 1000).sum() / 1000 == pytest.approx(area, rel=0.002)


def test_disk_phantom_inserts_and_edge() -> None:
    ph = disk_phantom(shape=256, fov_mm=250.0)
    assert sorted(les.contrast for les in ph.lesions) == [-1000, -100, -20, 10, 100, 1000]
    for les in ph.lesions:
        core = ph.hu[les.mask(ph.hu.shape, scale=0.8)]
        assert np.all(core == les.contrast)  # background is water (0 HU)
    assert np.all(ph.hu[ph.flat_roi] == 0)
    edge = ph.masks["edge"]
    assert np.median(ph.hu[edge]) == 300
    # An edge, not a blob: the square is about 36 mm wide.
    assert edge.sum() * (250 / 256) ** 2 == pytest.approx(36**2, rel=0.05)


@pytest.fixture(scope="module")
def abdomen() -> object:
    return abdomen_phantom(seed=7)


def test_abdomen_tissue_values(abdomen: object) -> None:
    ph = abdomen
    hu = ph.hu  # type: ignore[attr-defined]
    assert hu.shape == (512, 512) and hu.dtype == np.float32
    assert hu.min() >= -1000 and hu.max() <= 1000
    masks = ph.masks  # type: ignore[attr-defined]
    expected = {"liver": 60, "spleen": 45, "kidney": 30}
    for name, value in expected.items():
        assert np.median(hu[masks[name]]) == pytest.approx(value)
    assert np.median(hu[masks["gas"]]) == -1000
    assert np.median(hu[masks["body"] & ~masks["liver"]]) in (-100, 50)  # fat or muscle
    assert 400 <= np.median(hu[masks["bone"]]) <= 1000
    assert 150 <= np.median(hu[masks["vessel"]]) <= 300
    assert masks["detail"].sum() > 0 and hu[masks["detail"]].max() >= 600
    roi = hu[ph.flat_roi]  # type: ignore[attr-defined]
    assert roi.size >= 400 and np.all(roi == 60)


def test_abdomen_lesions_are_low_contrast_and_in_liver(abdomen: object) -> None:
    ph = abdomen
    lesions = ph.lesions  # type: ignore[attr-defined]
    assert len(lesions) == 5
    for les in lesions:
        assert 3 <= abs(les.contrast) <= 20
        inner = les.mask(ph.hu.shape, scale=0.7)  # type: ignore[attr-defined]
        np.testing.assert_allclose(ph.hu[inner], 60 + les.contrast, atol=1e-3)  # type: ignore[attr-defined]
        ring = les.mask(ph.hu.shape, scale=1.6) & ~les.mask(ph.hu.shape, scale=1.3)  # type: ignore[attr-defined]
        assert np.median(ph.hu[ring]) == 60  # type: ignore[attr-defined]
        rows, cols = ph.flat_roi  # type: ignore[attr-defined]
        assert not inner[rows, cols].any()


def test_abdomen_is_seeded_and_varies() -> None:
    a = abdomen_phantom(seed=1, shape=256)
    b = abdomen_phantom(seed=1, shape=256)
    c = abdomen_phantom(seed=2, shape=256)
    assert np.array_equal(a.hu, b.hu) and a.lesions == b.lesions
    assert np.mean(a.hu != c.hu) > 0.05
    assert a.spacing == (380 / 256, 380 / 256)
    with pytest.raises(ValueError, match="fov_mm"):
        abdomen_phantom(fov_mm=200.0)


def test_chest_phantom() -> None:
    ph = chest_phantom(seed=0, shape=256)
    lung = ph.masks["lung"]
    assert np.median(ph.hu[lung]) == -850
    assert (ph.hu[lung] > -200).mean() > 0.01  # vessels and nodules in the lungs
    assert np.all(ph.hu[ph.flat_roi] == 50)
    assert len(ph.lesions) == 4
    for les in ph.lesions:
        assert np.all(ph.hu[les.mask(ph.hu.shape, scale=0.5)] == -850 + les.contrast)


@pytest.mark.parametrize("modified", [True, False])
def test_shepp_logan_phantom_values(modified: bool) -> None:
    ph = shepp_logan_phantom(shape=256, fov_mm=256.0, modified=modified)
    hu = ph.hu
    assert hu.shape == (256, 256) and hu.dtype == np.float32 and ph.spacing == (1.0, 1.0)
    assert hu[0, 0] == -1000
    skull, brain = (0.0, -800.0) if modified else (1000.0, 20.0)
    ring = ph.masks["head"] & ~ph.masks["brain"]
    assert np.median(hu[ring]) == pytest.approx(skull)
    assert np.all(hu[ph.flat_roi] == pytest.approx(brain))
    # Ellipses add: the three round blobs are 100 (10) HU above the brain around them.
    assert len(ph.lesions) == 3
    for les in ph.lesions:
        assert les.contrast == pytest.approx(100.0 if modified else 10.0)
        core = hu[les.mask(hu.shape, scale=0.5)]
        assert core.size > 0
    # Standard orientation: the three small bottom ellipses lie below the centre.
    assert ph.lesions[-1].center[0] > 200
    # Where the upper blob (centre 0.1, radius 0.046 of the half field, y up) overlaps the
    # large ellipse above it (from 0.1 up) the image holds the sum of both: row of y = 0.13.
    assert hu[111, 127] == pytest.approx(brain + (200.0 if modified else 20.0))


def test_mita_lcd_phantom_rods() -> None:
    ph = mita_lcd_phantom(shape=512, fov_mm=250.0)
    px = 250.0 / 512
    assert [les.contrast for les in ph.lesions] == [14.0, 7.0, 5.0, 3.0]
    diameters = [2 * les.radius * px for les in ph.lesions]
    np.testing.assert_allclose(diameters, [3.0, 5.0, 7.0, 10.0])
    for les in ph.lesions:
        inner = ph.hu[les.mask(ph.hu.shape, scale=0.6)]
        assert inner.size > 0 and np.all(inner == les.contrast)
        # Anti-aliased area matches the rod's cross-section.
        box = les.mask(ph.hu.shape, scale=1.5)
        area = ph.hu[box].sum() / les.contrast * px * px
        assert area == pytest.approx(np.pi * (les.radius * px) ** 2, rel=0.03)
        assert not les.mask(ph.hu.shape, scale=1.2)[ph.flat_roi].any()
    assert np.all(ph.hu[ph.flat_roi] == 0)
    assert np.median(ph.hu[ph.masks["cylinder"]]) == 0
    with pytest.raises(ValueError, match="ring_mm"):
        mita_lcd_phantom(ring_mm=95.0)


def test_mtf_phantom_wire_and_insert() -> None:
    ph = mtf_phantom(shape=256, fov_mm=250.0)
    px = 250.0 / 256
    wire, insert = ph.lesions
    assert wire.contrast == 3000 and insert.contrast == 300
    # The sub-pixel wire keeps its line integral: HU * area summed around it.
    touched = ph.masks["wire"]
    assert 1 <= touched.sum() <= 4
    mass = ph.hu[touched].sum() * px * px
    assert mass == pytest.approx(3000 * np.pi * 0.1**2, rel=0.03)
    rows, cols = np.nonzero(touched)
    assert abs(rows.mean() - wire.center[0]) < 1 and abs(cols.mean() - wire.center[1]) < 1
    assert np.median(ph.hu[ph.masks["insert"]]) == 300
    assert 2 * insert.radius * px == pytest.approx(30.0)
    assert np.all(ph.hu[ph.flat_roi] == 0)
    with pytest.raises(ValueError, match="wire_mm"):
        mtf_phantom(wire_mm=0.0)
