"""Image-quality metrics in HU and cycles/mm: fidelity, ROIs, noise, resolution, task, labels,
spectral transfer.

Everything here is pure numpy/scipy on float HU arrays ordered (y, x) or (z, y, x), with pixel
spacing in mm and spatial frequencies in cycles/mm.
"""

from ctdid.metrics.choose import CandidateLabels, candidate_detectability, pick_candidate
from ctdid.metrics.curves import curve_at, difference_at_equal_noise, noise_levels, side_range
from ctdid.metrics.fidelity import psnr, rmse, ssim
from ctdid.metrics.labels import (
    find_body_mask,
    find_flat_regions,
    noise_label,
    resolution_label,
    skin_edge_mtf,
)
from ctdid.metrics.noise import (
    NoisePowerSpectrum,
    noise_std,
    nps_2d,
    nps_from_difference,
    nps_mean_frequency,
    nps_peak_frequency,
    radial_average,
    tile_patches,
)
from ctdid.metrics.resolution import MTF, edge_mtf, mtf_frequency, mtf_from_esf, ttf_from_insert
from ctdid.metrics.rois import RoiStats, circle_roi, cnr, rectangle_roi, roi_stats
from ctdid.metrics.task import (
    CHOResult,
    cho_detectability,
    disk_task_spectrum,
    eye_filter,
    laguerre_gauss_channels,
    npw_detectability,
)
from ctdid.metrics.transfer import (
    SpectralTransfer,
    body_window,
    spectral_transfer,
    transfer_label,
)

__all__ = [
    "MTF",
    "CHOResult",
    "CandidateLabels",
    "NoisePowerSpectrum",
    "RoiStats",
    "SpectralTransfer",
    "body_window",
    "candidate_detectability",
    "cho_detectability",
    "circle_roi",
    "cnr",
    "curve_at",
    "difference_at_equal_noise",
    "disk_task_spectrum",
    "edge_mtf",
    "eye_filter",
    "find_body_mask",
    "find_flat_regions",
    "laguerre_gauss_channels",
    "mtf_frequency",
    "mtf_from_esf",
    "noise_label",
    "noise_levels",
    "noise_std",
    "nps_2d",
    "nps_from_difference",
    "nps_mean_frequency",
    "nps_peak_frequency",
    "npw_detectability",
    "pick_candidate",
    "psnr",
    "radial_average",
    "rectangle_roi",
    "resolution_label",
    "rmse",
    "roi_stats",
    "side_range",
    "skin_edge_mtf",
    "spectral_transfer",
    "ssim",
    "tile_patches",
    "transfer_label",
    "ttf_from_insert",
]
