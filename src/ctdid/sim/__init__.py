"""Low-dose CT simulation: 2-D geometries, a differentiable torch projector and FBP, noise models
and procedural phantoms.

Units: images in HU (float32, (y, x) or (z, y, x)) with spacing in mm at the API surface;
attenuation mu in 1/mm and dimensionless line integrals inside.
"""

from __future__ import annotations

from ctdid.sim.fbp import KERNELS, backproject, fbp, filter_sinogram, ramp_kernel
from ctdid.sim.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry, pixel_coordinates
from ctdid.sim.noise import (
    DEFAULT_I0,
    DEFAULT_SIGMA_E,
    MU_WATER,
    dose_noise_scale,
    hu_to_mu,
    insertion_noise,
    insertion_variance,
    mu_to_hu,
    poisson_sinogram,
    rescale_noise,
)
from ctdid.sim.phantoms import (
    Lesion,
    Phantom,
    abdomen_phantom,
    chest_phantom,
    disk_phantom,
    mita_lcd_phantom,
    mtf_phantom,
    shepp_logan_phantom,
    water_cylinder,
)
from ctdid.sim.projector import forward_project
from ctdid.sim.simulate import simulate_low_dose

__all__ = [
    "DEFAULT_I0",
    "DEFAULT_SIGMA_E",
    "KERNELS",
    "MU_WATER",
    "FanBeamGeometry",
    "Geometry",
    "Lesion",
    "ParallelBeamGeometry",
    "Phantom",
    "abdomen_phantom",
    "backproject",
    "chest_phantom",
    "disk_phantom",
    "dose_noise_scale",
    "fbp",
    "filter_sinogram",
    "forward_project",
    "hu_to_mu",
    "insertion_noise",
    "insertion_variance",
    "mita_lcd_phantom",
    "mtf_phantom",
    "mu_to_hu",
    "pixel_coordinates",
    "poisson_sinogram",
    "ramp_kernel",
    "rescale_noise",
    "shepp_logan_phantom",
    "simulate_low_dose",
    "water_cylinder",
]
