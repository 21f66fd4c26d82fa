"""Figures of the reproduction report (matplotlib, Agg backend, PNG).

Images are shown at a display window in HU (default [-160, 240] HU, the paper's abdomen
window); difference images at [-60, 60] HU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["WINDOW", "plot_curves", "plot_panels", "plot_transition", "plot_zoom"]

#: Display window (low, high) in HU.
WINDOW = (-160.0, 240.0)
_DIFF_WINDOW = (-60.0, 60.0)
_PANEL_IN = 2.3

Image = NDArray[np.floating[Any]]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", dpi=fig.dpi)
    return target


def _show(ax: Any, img: Image, window: tuple[float, float], title: str = "") -> None:
    ax.imshow(np.asarray(img), cmap="gray", vmin=window[0], vmax=window[1],
              interpolation="nearest")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _crop(img: Image, box: tuple[float, float, float]) -> Image:
    r, c, half = box
    h = max(2, round(half))
    r0 = int(np.clip(round(r) - h, 0, max(0, img.shape[0] - 2 * h)))
    c0 = int(np.clip(round(c) - h, 0, max(0, img.shape[1] - 2 * h)))
    return np.asarray(img)[r0 : r0 + 2 * h, c0 : c0 + 2 * h]


def plot_transition(
    images: Sequence[Image],
    labels: Sequence[str],
    default: Image,
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] = WINDOW,
) -> Path:
    """A row of images and, below, each minus the default.

    Parameters
    ----------
    images : sequence of ndarray (y, x)
        Images in HU, in curve order (input first).
    labels : sequence of str
        Title of each image.
    default : ndarray
        The default image in HU, subtracted in the second row.
    path : path
        PNG to write.
    window : (float, float), optional
        Display window in HU.

    Returns
    -------
    Path
    """
    n = len(images)
    fig = _figure(_PANEL_IN * n, 2 * _PANEL_IN + 0.6)
    axes = fig.subplots(2, n, squeeze=False)
    for j, (img, lab) in enumerate(zip(images, labels, strict=True)):
        _show(axes[0, j], img, window, lab)
        _show(axes[1, j], np.asarray(img, np.float32) - np.asarray(default, np.float32),
              _DIFF_WINDOW, "minus default")  # fmt: skip
    fig.tight_layout()
    return _save(fig, path)


def plot_panels(
    images: Sequence[Image],
    titles: Sequence[str],
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] = WINDOW,
    columns: int | None = None,
    zoom: tuple[float, float, float] | None = None,
    circles: Sequence[tuple[float, float, float]] = (),
) -> Path:
    """Images side by side with titles, optionally zoomed on one region.

    Parameters
    ----------
    images : sequence of ndarray (y, x)
        Images in HU.
    titles : sequence of str
        One per image.
    path : path
        PNG to write.
    window : (float, float), optional
        Display window in HU.
    columns : int, optional
        Panels per row (default all in one row, at most 7).
    zoom : (row, col, half) in pixels, optional
        Show only this square region (a second row shows the whole first image).
    circles : sequence of (row, col, radius) in pixels, optional
        Circles drawn on the zoomed panels (e.g. the lesion).

    Returns
    -------
    Path
    """
    from matplotlib.patches import Circle, Rectangle

    n = len(images)
    ncol = columns or (min(n + 1, 8) if zoom is not None else min(n, 7))
    nrow = math.ceil(n / ncol)
    fig = _figure(_PANEL_IN * ncol, (_PANEL_IN + 0.35) * nrow + 0.2)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for k, (img, title) in enumerate(zip(images, titles, strict=True)):
        ax = axes.ravel()[k]
        if zoom is None:
            _show(ax, img, window, title)
            continue
        sub = _crop(img, zoom)
        _show(ax, sub, window, title)
        r, c, half = zoom
        h = max(2, round(half))
        r0 = int(np.clip(round(r) - h, 0, max(0, np.shape(img)[0] - 2 * h)))
        c0 = int(np.clip(round(c) - h, 0, max(0, np.shape(img)[1] - 2 * h)))
        for cr, cc, rad in circles:
            ax.add_patch(Circle((cc - c0, cr - r0), rad, fill=False, color="#ffcc00", lw=0.8))
        if k == n - 1 and n < nrow * ncol:  # a free slot: show where the zoom is
            ax2 = axes.ravel()[n]
            ax2.axis("on")
            _show(ax2, images[0], window, "zoom region")
            ax2.add_patch(Rectangle((c0, r0), 2 * h, 2 * h, fill=False, color="#ffcc00"))
    fig.tight_layout()
    return _save(fig, path)


def plot_zoom(
    images: Sequence[Image],
    titles: Sequence[str],
    boxes: Sequence[tuple[float, float, float, str]],
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] = WINDOW,
    extra: tuple[Sequence[Image], tuple[float, float, float, str]] | None = None,
) -> Path:
    """Zoomed regions (rows) of several images (columns).

    Parameters
    ----------
    images : sequence of ndarray (y, x)
        Images in HU, in curve order.
    titles : sequence of str
        Column titles.
    boxes : sequence of (row, col, half, name)
        Square regions (centre and half side in pixels) shown on each row.
    path : path
        PNG to write.
    window : (float, float), optional
        Display window in HU.
    extra : (images, box), optional
        A further row from other images (same number of columns), e.g. another scan.

    Returns
    -------
    Path
    """
    rows: list[tuple[Sequence[Image], tuple[float, float, float, str]]] = [
        (images, b) for b in boxes
    ]
    if extra is not None:
        rows.append(extra)
    ncol = max(len(r[0]) for r in rows)
    fig = _figure(1.8 * ncol, 1.9 * len(rows) + 0.3)
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for i, (imgs, (r, c, half, name)) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(imgs):
                ax.axis("off")
                continue
            title = titles[j] if i == 0 and j < len(titles) else ""
            _show(ax, _crop(imgs[j], (r, c, half)), window, title)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(
    series: Sequence[tuple[str, Any, Any, int | None]],
    path: str | os.PathLike[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """Line plot of several measures along the candidates.

    Parameters
    ----------
    series : sequence of (label, x, y, default index)
        One line each; the default (if given) is marked with a dot.
    path : path
        PNG to write.
    xlabel, ylabel, title : str
        Axis labels (with units) and title.

    Returns
    -------
    Path
    """
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    for label, x, y, d in series:
        xs = np.asarray(x, float)
        ys = np.asarray(y, float)
        (line,) = ax.plot(xs, ys, marker=".", label=label)
        if d is not None:
            ax.plot([xs[d]], [ys[d]], "o", color=line.get_color(), ms=8, mfc="none")
    ax.axvline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
