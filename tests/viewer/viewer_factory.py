"""Result folders for the viewer tests, written with :class:`ctdid.results.ResultWriter`.

Import it from a test module in ``tests/viewer`` with ``from viewer_factory import make_result``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctdid.results import ResultWriter

#: Strengths of the synthetic candidates, in the order they are made (default first, then
#: alternating high/low as a running job adds them), so ids differ from curve order.
STRENGTHS = (0.0, -1 / 3, 1 / 3, -2 / 3, 2 / 3, -1.0, 1.0)


def disk_phantom(n: int) -> np.ndarray:
    """(n, n) HU: air, a water disk, a bone insert and a 10 HU lesion."""
    yy, xx = np.mgrid[:n, :n].astype(np.float32) * (64.0 / n)
    r = np.hypot(yy - 32, xx - 32)
    img = np.full((n, n), -1000.0, dtype=np.float32)
    img[r < 28] = 0.0
    img[np.hypot(yy - 20, xx - 40) < 5] = 700.0
    img[np.hypot(yy - 40, xx - 24) < 4] = 10.0
    return img


def make_result(
    folder: Path,
    *,
    n: int = 64,
    nz: int = 1,
    strengths: tuple[float, ...] = STRENGTHS,
    finish: bool = True,
    seed: int = 0,
    transfer: bool = True,
) -> ResultWriter:
    """A result folder: the same phantom with noise falling along the curve.

    ``transfer=False`` leaves out the ``transfer50_per_mm`` labels (an older result folder).
    """
    rng = np.random.default_rng(seed)
    clean = np.stack([disk_phantom(n) + 3.0 * k for k in range(nz)])
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    writer = ResultWriter(
        folder,
        input_hu=clean + 60.0 * noise,
        spacing=(2.0, 0.7, 0.7),
        info={"model": {"name": "synthetic"}, "config": {"mode": "test"}},
    )
    for k, s in enumerate(strengths):
        sigma = 30.0 * (1.0 - s) / 2.0 + 2.0
        labels = {"noise_hu": sigma, "mtf50_per_mm": 0.6 - 0.2 * s}
        if transfer:
            labels["transfer50_per_mm"] = 0.5 - 0.25 * s
        direction = "default" if s == 0 else ("high" if s < 0 else "low")
        writer.add(
            clean + sigma * noise,
            direction=direction,
            strength=s,
            step=k,
            progress=abs(s),
            elapsed_s=0.1 * k,
            labels=labels,
        )
    if finish:
        writer.finish()
    return writer


#: Strengths of synthetic previews (``s = +-i/4``, as ``blend_previews`` with n = 4).
PREVIEW_STRENGTHS = (-0.25, -0.5, -0.75, -1.0, 0.25, 0.5, 0.75, 1.0)


def add_previews(
    writer: ResultWriter, strengths: tuple[float, ...] = PREVIEW_STRENGTHS
) -> list[int]:
    """List previews (pixel blends of the input and the default) as a running DID run does.

    The folder must hold its default candidate (id 0); returns the preview ids. Positive
    strengths blend toward a darker copy of the default (a stand-in for t_low).
    """
    x = np.load(writer.folder / "input.npy")
    y0 = np.load(writer.folder / writer.records[0].file)
    ids = []
    for k, s in enumerate(strengths):
        img = (1 - abs(s)) * y0 + abs(s) * (x if s < 0 else y0 - 40.0)
        rec = writer.add_preview(
            img,
            direction="high" if s < 0 else "low",
            strength=s,
            progress=abs(s),
            elapsed_s=0.01,
            write_json=k == len(strengths) - 1,
        )
        ids.append(rec.id)
    return ids
