from __future__ import annotations

import numpy as np
import pytest

from ctdid import CTVolume


def test_converts_to_readonly_float32_zyx(disk_phantom: np.ndarray) -> None:
    vol = CTVolume(disk_phantom.astype(np.int16), spacing=(2.5, 0.7, 0.7))
    assert vol.hu.dtype == np.float32
    assert vol.shape == (2, 64, 64)
    assert not vol.hu.flags.writeable
    np.testing.assert_array_equal(vol.hu, disk_phantom.astype(np.int16).astype(np.float32))


def test_2d_is_one_slice() -> None:
    vol = CTVolume(np.zeros((8, 9)))
    assert vol.shape == (1, 8, 9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hu": np.full((2, 2), np.nan)}, "NaN or Inf"),
        ({"hu": np.full((2, 2), np.inf)}, "NaN or Inf"),
        ({"hu": np.zeros((2, 2, 2, 2))}, "2-D or 3-D"),
        ({"hu": np.zeros((0, 4, 4))}, "empty"),
        ({"hu": np.array([["a"]])}, "numeric"),
        ({"hu": np.zeros((2, 2)), "spacing": (1, 0, 1)}, "> 0"),
        ({"hu": np.zeros((2, 2)), "spacing": (1, 1)}, "three"),
        ({"hu": np.zeros((2, 2)), "direction": np.eye(3) * 2}, "unit"),
        ({"hu": np.zeros((2, 2)), "dicom_headers": (None, None)}, "headers"),
    ],
)
def test_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CTVolume(**kwargs)


def test_affine_maps_index_to_patient_position() -> None:
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    vol = CTVolume(
        np.zeros((3, 4, 5)), spacing=(2.0, 0.5, 0.25), origin=(10, 20, 30), direction=direction
    )
    # voxel (x=4, y=3, z=2)
    pos = vol.affine @ np.array([4, 3, 2, 1.0])
    expected = np.array([10, 20, 30]) + 4 * 0.25 * direction[0] + 3 * 0.5 * direction[1]
    expected = expected + 2 * 2.0 * direction[2]
    np.testing.assert_allclose(pos[:3], expected)
    np.testing.assert_allclose(vol.slice_position(2), np.array([10, 20, 26.0]))


def test_with_hu_keeps_geometry_and_checks_shape(disk_phantom: np.ndarray) -> None:
    vol = CTVolume(disk_phantom, spacing=(3, 1, 1), meta={"format": "npy"})
    new = vol.with_hu(disk_phantom * 0.5, derived="half")
    assert new.spacing == vol.spacing
    assert new.meta == {"format": "npy", "derived": "half"}
    assert vol.meta == {"format": "npy"}
    with pytest.raises(ValueError, match="shape"):
        vol.with_hu(disk_phantom[:1])


def test_describe_reports_range(disk_phantom: np.ndarray) -> None:
    d = CTVolume(disk_phantom, spacing=(3, 0.5, 0.5)).describe()
    assert d["hu_min"] == -1000.0
    assert d["hu_max"] == pytest.approx(701.5)
    assert d["extent_mm_zyx"] == [6.0, 32.0, 32.0]
