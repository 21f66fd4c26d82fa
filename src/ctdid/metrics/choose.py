"""Task presets: pick one candidate image from its quality labels.

Each candidate along the noise-resolution curve carries :class:`CandidateLabels` (noise in HU,
MTF50 in cycles/mm, optionally a measured NPS and TTF). :func:`pick_candidate` chooses one for
a task:

``"detect"``
    maximise the NPW detectability d' of a low-contrast disk (:func:`candidate_detectability`);
``"match-noise"``
    the candidate whose noise is closest to a target, e.g. the noise the reader is used to;
``"sharpest-below"``
    the highest MTF50 among the candidates whose noise does not exceed a ceiling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from ctdid.metrics.noise import NoisePowerSpectrum
from ctdid.metrics.resolution import MTF
from ctdid.metrics.task import npw_detectability

__all__ = ["CandidateLabels", "candidate_detectability", "pick_candidate"]

Curve = tuple[ArrayLike, ArrayLike]


@dataclasses.dataclass(frozen=True)
class CandidateLabels:
    """Quality labels of one candidate image.

    ``mtf50`` may be any 50 % transfer frequency of the candidate as a whole (a measured MTF50
    or TTF50); :meth:`from_transfer` builds it from the spectral transfer f50 relative to the
    input (:func:`ctdid.metrics.transfer_label`).

    Attributes
    ----------
    noise : float
        Noise standard deviation in HU.
    mtf50 : float
        Frequency of 50 % transfer in cycles/mm.
    nps : NoisePowerSpectrum or (f, nps_r), optional
        Measured noise power spectrum (HU^2 mm^2 over cycles/mm).
    ttf : MTF or (f, ttf_r), optional
        Measured task transfer function.
    name : str, optional
        A label for display (e.g. the tradeoff parameter).
    """

    noise: float
    mtf50: float
    nps: NoisePowerSpectrum | Curve | None = None
    ttf: MTF | Curve | None = None
    name: str = ""

    @classmethod
    def from_transfer(
        cls,
        noise: float,
        transfer50: float,
        *,
        input_mtf50: float | None = None,
        name: str = "",
    ) -> CandidateLabels:
        """Labels from a noise and the f50 of the spectral transfer from the input.

        The transfer f50 says how much of the input's content the candidate keeps, not the
        candidate's own MTF. With the input's MTF50 given, both are taken as Gaussians and
        cascaded, ``mtf50 = (transfer50^-2 + input_mtf50^-2)^-1/2`` (exact for Gaussians);
        without it the input is taken as perfectly sharp and ``mtf50 = transfer50``, which
        keeps the order of the candidates (the ``sharpest-below`` choice) but overrates the
        sharp end for ``detect``.

        Parameters
        ----------
        noise : float
            Noise standard deviation in HU.
        transfer50 : float
            f50 of the transfer from the input, cycles/mm.
        input_mtf50 : float, optional
            MTF50 of the input in cycles/mm (e.g. its skin-edge or insert MTF50).
        name : str, optional

        Returns
        -------
        CandidateLabels
        """
        if not transfer50 > 0:
            raise ValueError(f"transfer50 must be > 0, got {transfer50!r}")
        mtf50 = float(transfer50)
        if input_mtf50 is not None:
            if not input_mtf50 > 0:
                raise ValueError(f"input_mtf50 must be > 0, got {input_mtf50!r}")
            mtf50 = float((transfer50**-2 + float(input_mtf50) ** -2) ** -0.5)
        return cls(noise=float(noise), mtf50=mtf50, name=name)


def _model_curves(
    lab: CandidateLabels, f: np.ndarray
) -> tuple[NoisePowerSpectrum | Curve, MTF | Curve]:
    """Fill in a missing TTF (Gaussian with the MTF50) and NPS (ramp times TTF^2)."""
    if lab.ttf is not None:
        ttf: MTF | Curve = lab.ttf
        if isinstance(lab.ttf, MTF):
            t = lab.ttf.evaluate(f)
        else:
            ft, tt = (np.asarray(c, dtype=float) for c in lab.ttf)
            t = np.interp(f, ft, tt, right=0.0)
    else:
        t = 0.5 ** ((f / lab.mtf50) ** 2)
        ttf = (f, t)
    if lab.nps is not None:
        return lab.nps, ttf
    shape = f * t * t
    integral = float(np.sum(0.5 * (shape[1:] * f[1:] + shape[:-1] * f[:-1]) * np.diff(f)))
    nps = shape * lab.noise**2 / (2.0 * np.pi * integral)
    return (f, nps), ttf


def candidate_detectability(
    labels: Sequence[CandidateLabels],
    *,
    diameter_mm: float,
    contrast_hu: float,
    eye: bool = False,
    f_max: float | None = None,
) -> list[float]:
    """NPW (or NPWE) detectability d' of a disk for every candidate.

    Measured NPS and TTF are used when given. Otherwise the TTF is modelled as the Gaussian
    with the candidate's MTF50, ``TTF(f) = 0.5^((f / mtf50)^2)``, and the NPS as that of
    filtered back-projection noise shaped by it, ``NPS(f) ~ f TTF(f)^2``, scaled so that its
    integral equals ``noise^2``.

    Parameters
    ----------
    labels : sequence of CandidateLabels
    diameter_mm : float
        Lesion diameter in mm.
    contrast_hu : float
        Lesion contrast in HU.
    eye : bool, optional
        Include the eye filter (NPWE), see :func:`ctdid.metrics.task.eye_filter`.
    f_max : float, optional
        Highest frequency of the modelled curves in cycles/mm; default 4 times the largest
        MTF50 (where the Gaussian TTF is below 1e-4).

    Returns
    -------
    list of float
        d' of each candidate.
    """
    if not labels:
        raise ValueError("labels is empty")
    for lab in labels:
        if not (lab.noise > 0 and lab.mtf50 > 0):
            raise ValueError(f"noise and mtf50 must be > 0, got {lab.noise!r}, {lab.mtf50!r}")
    top = 4.0 * max(lab.mtf50 for lab in labels) if f_max is None else float(f_max)
    f = np.linspace(0.0, top, 1024)
    out = []
    for lab in labels:
        nps, ttf = _model_curves(lab, f)
        out.append(
            npw_detectability(
                nps, diameter_mm=diameter_mm, contrast_hu=contrast_hu, ttf=ttf, eye=eye
            )
        )
    return out


def pick_candidate(
    labels: Sequence[CandidateLabels],
    *,
    task: Literal["detect", "match-noise", "sharpest-below"] = "detect",
    diameter_mm: float = 5.0,
    contrast_hu: float = 10.0,
    eye: bool = False,
    target_noise: float | None = None,
    noise_ceiling: float | None = None,
) -> int:
    """Index of the candidate that best serves a task.

    Parameters
    ----------
    labels : sequence of CandidateLabels
        One per candidate, in any order.
    task : {'detect', 'match-noise', 'sharpest-below'}, optional
        ``detect``: maximise d' of a disk of ``diameter_mm`` and ``contrast_hu``
        (:func:`candidate_detectability`). ``match-noise``: noise closest to
        ``target_noise``. ``sharpest-below``: largest MTF50 with noise <= ``noise_ceiling``.
    diameter_mm, contrast_hu : float, optional
        Lesion of the detection task (5 mm, 10 HU by default: a low-contrast liver lesion).
    eye : bool, optional
        Use the NPWE observer for ``detect``.
    target_noise : float, optional
        Noise in HU for ``match-noise``.
    noise_ceiling : float, optional
        Maximum noise in HU for ``sharpest-below``.

    Returns
    -------
    int
        Index into ``labels``. Ties go to the first.

    Raises
    ------
    ValueError
        For an unknown task, a missing target, or when no candidate is below the ceiling.
    """
    if not labels:
        raise ValueError("labels is empty")
    if task == "detect":
        scores = candidate_detectability(
            labels, diameter_mm=diameter_mm, contrast_hu=contrast_hu, eye=eye
        )
        return int(np.argmax(scores))
    if task == "match-noise":
        if target_noise is None:
            raise ValueError("task 'match-noise' needs target_noise (HU)")
        return int(np.argmin([abs(lab.noise - target_noise) for lab in labels]))
    if task == "sharpest-below":
        if noise_ceiling is None:
            raise ValueError("task 'sharpest-below' needs noise_ceiling (HU)")
        ok = [i for i, lab in enumerate(labels) if lab.noise <= noise_ceiling]
        if not ok:
            lowest = min(lab.noise for lab in labels)
            raise ValueError(
                f"no candidate has noise <= {noise_ceiling} HU (the lowest is {lowest:.1f} HU)"
            )
        return max(ok, key=lambda i: (labels[i].mtf50, -i))
    raise ValueError(f"unknown task {task!r}; use 'detect', 'match-noise' or 'sharpest-below'")
