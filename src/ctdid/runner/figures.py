"""Figures of a DID run: the candidate montage and the noise-resolution tradeoff plot.

Both are drawn with matplotlib's Agg backend (no display needed) and written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctdid.io.atomic import atomic_file

__all__ = ["PanelInfo", "plot_montage", "plot_tradeoff"]

#: One montage panel: (image (y, x) in HU, strength, direction, labels).
PanelInfo = tuple[NDArray[np.floating[Any]], float, str, Mapping[str, float]]

_HIGH_COLOUR = "#d95f02"
_LOW_COLOUR = "#1b9e77"
_DEFAULT_COLOUR = "#e7298a"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(fig: Any, path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    target = Path(path)
    with atomic_file(target, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return target


def _fmt(value: float | None, spec: str, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:{spec}}{unit}"


def plot_montage(
    panels: Sequence[PanelInfo],
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] = (-160.0, 240.0),
    title: str = "",
    max_columns: int = 9,
    panel_inches: float = 2.4,
    overwrite: bool = False,
) -> Path:
    """Write the candidates side by side at a display window, high resolution first.

    Parameters
    ----------
    panels : sequence of (image, strength, direction, labels)
        In curve order, from the high-resolution end (sharpest, noisiest) to the low-noise
        end (smoothest). ``labels`` may hold ``noise_hu``, ``transfer50_per_mm`` (shown as
        "f50"), ``mtf50_per_mm`` and ``rmse_hu``.
    path : path
        The PNG to write.
    window : (float, float), optional
        Display window (low, high) in HU. Default abdomen W400/L40.
    title : str, optional
        Figure title (e.g. the model and mode).
    max_columns : int, optional
        Panels per row; more candidates wrap to further rows (reading order).
    panel_inches : float, optional
        Size of one panel in inches (100 dpi).
    overwrite : bool, optional
        Replace an existing file.

    Returns
    -------
    Path
    """
    if not panels:
        raise ValueError("no panel to draw")
    n = len(panels)
    rows = math.ceil(n / max(1, max_columns))
    cols = math.ceil(n / rows)
    fig = _figure(cols * panel_inches, rows * (panel_inches + 0.75) + 0.6)
    low, high = window
    for i, (img, strength, direction, labels) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(np.asarray(img), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        head = "default" if direction == "default" else f"s = {strength:+.2f}"
        if i == 0 and n > 1:
            head += "  (high res.)"
        elif i == n - 1 and n > 1:
            head += "  (low noise)"
        noise = f"noise {_fmt(labels.get('noise_hu'), '.1f', ' HU')}"
        mtf = f"MTF50 {_fmt(labels.get('mtf50_per_mm'), '.2f', '/mm')}"
        rmse = f"RMSE {_fmt(labels.get('rmse_hu'), '.1f', ' HU')}" if "rmse_hu" in labels else ""
        if "transfer50_per_mm" in labels:
            f50 = f"f50 {_fmt(labels.get('transfer50_per_mm'), '.3f', '/mm')}"
            text = f"{head}\n{noise}  {f50}\n{mtf}" + (f"  {rmse}" if rmse else "")
        else:
            text = f"{head}\n{noise}  {mtf}" + (f"\n{rmse}" if rmse else "")
        ax.set_title(text, fontsize=7)
        colour = {"default": _DEFAULT_COLOUR, "high": _HIGH_COLOUR}.get(direction, _LOW_COLOUR)
        width = 3.0 if direction == "default" else 1.0
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(width)
    head = f"{title}\n" if title else ""
    fig.suptitle(
        f"{head}high resolution (more noise)  \u2192  low noise (smoother)   "
        f"window [{low:g}, {high:g}] HU",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path, overwrite=overwrite)


def plot_tradeoff(
    strengths: Sequence[float],
    labels: Sequence[Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    default_index: int,
    extra_points: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Plot noise against resolution along the candidates, default marked.

    The resolution axis is the f50 of the spectral transfer from the input
    (``transfer50_per_mm``) when any candidate has it, else the skin-edge MTF50.

    Parameters
    ----------
    strengths : sequence of float
        Strength of each candidate, in curve order (high resolution -> low noise).
    labels : sequence of mapping
        ``noise_hu`` and ``transfer50_per_mm`` and/or ``mtf50_per_mm`` of each candidate.
    path : path
        The PNG to write.
    default_index : int
        Position of the default in the sequences.
    extra_points : mapping of str to mapping, optional
        Further labelled points (e.g. ``"noisy input"``, ``"normal dose"``) with their
        the same labels.
    title : str, optional
    overwrite : bool, optional

    Returns
    -------
    Path

    Notes
    -----
    When no resolution label could be measured, noise is plotted against strength instead.
    """
    s = np.asarray(strengths, dtype=float)
    noise = np.array([lab.get("noise_hu", math.nan) for lab in labels], dtype=float)
    key, xlabel = "transfer50_per_mm", "resolution: f50 of transfer from input, cycles/mm"
    res = np.array([lab.get(key, math.nan) for lab in labels], dtype=float)
    if not np.isfinite(res).any():
        key, xlabel = "mtf50_per_mm", "MTF50 (cycles/mm), skin edge"
        res = np.array([lab.get(key, math.nan) for lab in labels], dtype=float)
    use_res = bool(np.isfinite(res).any())
    x = res if use_res else s
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, noise, "-", color="0.6", zorder=1)
    sc = ax.scatter(x, noise, c=s, cmap="coolwarm", vmin=-1, vmax=1, zorder=2, s=28)
    fig.colorbar(sc, ax=ax, label="strength s (-1 high resolution, +1 low noise)")
    d = int(default_index)
    ax.scatter(
        [x[d]], [noise[d]], marker="*", s=220, color=_DEFAULT_COLOUR, zorder=3, label="default"
    )
    if len(s) > 1:
        ax.annotate("high resolution end", (x[0], noise[0]), fontsize=8, ha="right",
                    xytext=(-5, 5), textcoords="offset points")  # fmt: skip
        ax.annotate("low noise end", (x[-1], noise[-1]), fontsize=8,
                    xytext=(5, -12), textcoords="offset points")  # fmt: skip
    markers = iter("s^Dvo")
    for name, lab in (extra_points or {}).items():
        px = lab.get(key, math.nan) if use_res else -1.0
        py = lab.get("noise_hu", math.nan)
        if math.isfinite(px) and math.isfinite(py):
            ax.scatter([px], [py], marker=next(markers, "o"), color="k", s=40, zorder=3, label=name)
    ax.set_xlabel(xlabel if use_res else "strength s")
    ax.set_ylabel("noise STD (HU), flat regions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "noise-resolution tradeoff", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, overwrite=overwrite)
