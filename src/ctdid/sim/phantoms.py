"""Procedural 2-D phantoms in HU: QA (water cylinder, disks and edge) and anatomy (abdomen,
chest) with seeded random variation, low-contrast lesions and fine high-contrast details.

Shapes are painted in order (a later shape replaces what is under it) with anti-aliased edges
(each pixel's area fraction, from sub-pixel supersampling), so region values are exact HU away
from edges. Coordinates are in mm with the isocentre at the image centre, ``x`` along columns
(to the patient's left, as displayed in radiological convention) and ``y`` along rows
(posterior).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Lesion",
    "Phantom",
    "abdomen_phantom",
    "chest_phantom",
    "disk_phantom",
    "mita_lcd_phantom",
    "mtf_phantom",
    "shepp_logan_phantom",
    "water_cylinder",
]

AIR_HU = -1000.0


@dataclasses.dataclass(frozen=True)
class Lesion:
    """A round insert of a phantom.

    Attributes
    ----------
    center : tuple of float
        Centre ``(row, col)`` in pixels (fractional).
    radius : float
        Radius in pixels.
    contrast : float
        Value minus the surrounding value, in HU.
    """

    center: tuple[float, float]
    radius: float
    contrast: float

    def mask(self, shape: tuple[int, int], *, scale: float = 1.0) -> NDArray[np.bool_]:
        """Pixels whose centre lies within ``scale * radius`` of the centre."""
        rr, cc = np.mgrid[: shape[0], : shape[1]]
        return (rr - self.center[0]) ** 2 + (cc - self.center[1]) ** 2 <= (scale * self.radius) ** 2


@dataclasses.dataclass(frozen=True, eq=False)
class Phantom:
    """A phantom slice and its annotations.

    Attributes
    ----------
    hu : ndarray, shape (H, W)
        Float32 HU.
    spacing : tuple of float
        Pixel size ``(dy, dx)`` in mm.
    lesions : tuple of Lesion
        Inserts to detect or measure (low-contrast lesions, QA disks).
    flat_roi : tuple of slice
        A square region of one uniform value (for noise measurements), ``hu[flat_roi]``.
    masks : dict of str to ndarray of bool
        Named regions (pixels mostly covered by them).
    """

    hu: NDArray[np.float32]
    spacing: tuple[float, float]
    lesions: tuple[Lesion, ...] = ()
    flat_roi: tuple[slice, slice] = (slice(0, 0), slice(0, 0))
    masks: dict[str, NDArray[np.bool_]] = dataclasses.field(default_factory=dict)


class _Canvas:
    """An HU image painted with anti-aliased ellipses given in mm."""

    def __init__(self, shape: int, fov_mm: float, background: float, supersample: int) -> None:
        if shape < 8:
            raise ValueError(f"shape must be >= 8 pixels, got {shape}")
        if not fov_mm > 0:
            raise ValueError(f"fov_mm must be > 0, got {fov_mm}")
        self.n = shape
        self.px = fov_mm / shape
        self.ss = supersample
        self.img = np.full((shape, shape), background, dtype=np.float64)
        self.masks: dict[str, NDArray[np.bool_]] = {}

    def to_px(self, x: float, y: float) -> tuple[float, float]:
        """(row, col) of a point in mm."""
        c = (self.n - 1) / 2
        return (y / self.px + c, x / self.px + c)

    def ellipse(
        self,
        cx: float,
        cy: float,
        ax: float,
        ay: float,
        value: float,
        *,
        angle_deg: float = 0.0,
        name: str | None = None,
        add: bool = False,
        supersample: int | None = None,
    ) -> None:
        """Paint an ellipse of semi-axes (ax, ay) mm rotated by angle_deg about its centre.

        ``add`` adds ``value`` times the covered area instead of replacing what is under it;
        ``supersample`` overrides the canvas's sub-pixel sampling (for tiny objects).
        """
        ss = self.ss if supersample is None else supersample
        reach = max(ax, ay) / self.px + 2
        r0, c0 = self.to_px(cx, cy)
        rows = slice(max(0, math.floor(r0 - reach)), min(self.n, math.ceil(r0 + reach) + 1))
        cols = slice(max(0, math.floor(c0 - reach)), min(self.n, math.ceil(c0 + reach) + 1))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return
        sub = (np.arange(ss) + 0.5) / ss - 0.5
        rr = np.arange(rows.start, rows.stop)[:, None, None, None] + sub[None, None, :, None]
        cc = np.arange(cols.start, cols.stop)[None, :, None, None] + sub[None, None, None, :]
        c = (self.n - 1) / 2
        x = (cc - c) * self.px - cx
        y = (rr - c) * self.px - cy
        t = math.radians(angle_deg)
        u = x * math.cos(t) + y * math.sin(t)
        v = -x * math.sin(t) + y * math.cos(t)
        cover = ((u / ax) ** 2 + (v / ay) ** 2 <= 1).mean(axis=(2, 3))
        region = self.img[rows, cols]
        if add:
            self.img[rows, cols] = region + value * cover
        else:
            self.img[rows, cols] = region + (value - region) * cover
        if name is not None:
            mask = self.masks.setdefault(name, np.zeros((self.n, self.n), dtype=bool))
            mask[rows, cols] |= cover >= 0.5

    def disk(self, cx: float, cy: float, r: float, value: float, name: str | None = None) -> None:
        self.ellipse(cx, cy, r, r, value, name=name)

    def lesion(self, cx: float, cy: float, r: float, contrast: float) -> Lesion:
        row, col = self.to_px(cx, cy)
        return Lesion((row, col), r / self.px, contrast)

    def roi(self, cx: float, cy: float, half_mm: float) -> tuple[slice, slice]:
        row, col = self.to_px(cx, cy)
        h = max(1, round(half_mm / self.px))
        return (slice(round(row) - h, round(row) + h), slice(round(col) - h, round(col) + h))

    def phantom(self, lesions: list[Lesion], roi: tuple[slice, slice]) -> Phantom:
        return Phantom(
            self.img.astype(np.float32), (self.px, self.px), tuple(lesions), roi, self.masks
        )


def water_cylinder(
    *,
    shape: int = 512,
    fov_mm: float = 250.0,
    diameter_mm: float = 200.0,
    value: float = 0.0,
    supersample: int = 4,
) -> Phantom:
    """A uniform cylinder in air (water by default), centred.

    Parameters
    ----------
    shape : int, optional
        Image size in pixels (square).
    fov_mm : float, optional
        Width of the image in mm; pixel size is ``fov_mm / shape``.
    diameter_mm : float, optional
        Cylinder diameter in mm.
    value : float, optional
        Cylinder value in HU (0: water).
    supersample : int, optional
        Sub-pixel samples per axis for the edge.

    Returns
    -------
    Phantom
        ``flat_roi`` is a central square of half the cylinder radius; masks ``'cylinder'``.
    """
    canvas = _Canvas(shape, fov_mm, AIR_HU, supersample)
    canvas.disk(0.0, 0.0, diameter_mm / 2, value, name="cylinder")
    return canvas.phantom([], canvas.roi(0.0, 0.0, diameter_mm / 8))


def disk_phantom(
    *,
    shape: int = 512,
    fov_mm: float = 250.0,
    diameter_mm: float = 200.0,
    supersample: int = 4,
) -> Phantom:
    """A water cylinder with contrast disks and a straight edge (QA phantom).

    Six disks of 12 mm radius on the anterior half of a 60 mm ring (air -1000, fat -100, -20,
    +10, +100 and bone +1000 HU, listed in ``lesions`` with their contrast to water) and a
    300 HU square insert of 36 mm side rotated by 5 degrees (for edge-spread measurements),
    55 mm posterior of the centre. Sizes are for the default 200 mm cylinder and scale with it.

    Parameters
    ----------
    shape, fov_mm, diameter_mm, supersample
        As for :func:`water_cylinder`; scale ``fov_mm`` and ``diameter_mm`` together.

    Returns
    -------
    Phantom
        ``flat_roi`` is a water square at the centre; masks ``'cylinder'`` and ``'edge'``.
    """
    canvas = _Canvas(shape, fov_mm, AIR_HU, supersample)
    s = diameter_mm / 200.0
    canvas.disk(0.0, 0.0, diameter_mm / 2, 0.0, name="cylinder")
    lesions = []
    for k, value in enumerate((-1000.0, -100.0, -20.0, 10.0, 100.0, 1000.0)):
        t = math.pi * k / 5
        x, y = 60 * s * math.cos(t), -60 * s * math.sin(t)
        canvas.disk(x, y, 12 * s, value)
        lesions.append(canvas.lesion(x, y, 12 * s, value))
    _square(canvas, 0.0, 55 * s, 18 * s, 300.0, angle_deg=5.0, name="edge")
    return canvas.phantom(lesions, canvas.roi(0.0, 0.0, 12 * s))


def _square(
    canvas: _Canvas,
    cx: float,
    cy: float,
    half: float,
    value: float,
    *,
    angle_deg: float,
    name: str,
) -> None:
    """Paint an anti-aliased square of half side ``half`` mm rotated by ``angle_deg``."""
    reach = half * math.sqrt(2) / canvas.px + 2
    r0, c0 = canvas.to_px(cx, cy)
    n = canvas.n
    rows = slice(max(0, math.floor(r0 - reach)), min(n, math.ceil(r0 + reach) + 1))
    cols = slice(max(0, math.floor(c0 - reach)), min(n, math.ceil(c0 + reach) + 1))
    sub = (np.arange(canvas.ss) + 0.5) / canvas.ss - 0.5
    rr = np.arange(rows.start, rows.stop)[:, None, None, None] + sub[None, None, :, None]
    cc = np.arange(cols.start, cols.stop)[None, :, None, None] + sub[None, None, None, :]
    c = (n - 1) / 2
    x = (cc - c) * canvas.px - cx
    y = (rr - c) * canvas.px - cy
    t = math.radians(angle_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    cover = ((np.abs(u) <= half) & (np.abs(v) <= half)).mean(axis=(2, 3))
    region = canvas.img[rows, cols]
    canvas.img[rows, cols] = region + (value - region) * cover
    mask = canvas.masks.setdefault(name, np.zeros((n, n), dtype=bool))
    mask[rows, cols] |= cover >= 0.5


def _inside(x: float, y: float, cx: float, cy: float, ax: float, ay: float, ang: float) -> float:
    """Normalised radius of (x, y) in a rotated ellipse (< 1 inside)."""
    t = math.radians(ang)
    u = (x - cx) * math.cos(t) + (y - cy) * math.sin(t)
    v = -(x - cx) * math.sin(t) + (y - cy) * math.cos(t)
    return math.hypot(u / ax, v / ay)


def _free(x: float, y: float, r: float, taken: list[tuple[float, float, float]]) -> bool:
    return all(math.hypot(x - a, y - b) > r + c + 3 for a, b, c in taken)


#: A circle ``(x, y, r)`` in mm.
_Circle = tuple[float, float, float]
#: An ellipse ``(cx, cy, ax, ay, angle_deg)`` in mm.
_Ellipse = tuple[float, float, float, float, float]


def _place(
    rng: np.random.Generator,
    tries: int,
    radius: tuple[float, float],
    centre: Callable[[], tuple[float, float]],
    fits: Callable[[float, float, float], bool],
) -> _Circle | None:
    """The first of up to ``tries`` random circles (radius, then ``centre``) that ``fits``."""
    for _try in range(tries):
        r = rng.uniform(*radius)
        x, y = centre()
        if fits(x, y, r):
            return x, y, r
    return None


def _ribs(
    cv: _Canvas,
    rng: np.random.Generator,
    semi_axes: tuple[float, float],
    *,
    first_deg: float,
    step_deg: float,
    count: int,
    jitter_deg: float,
) -> None:
    """Paint ``count`` ribs a side on an ellipse of ``semi_axes`` mm, at jittered angles."""
    for side in (-1, 1):
        for k in range(count):
            t = math.radians(first_deg + step_deg * k + rng.uniform(-jitter_deg, jitter_deg))
            x, y = side * semi_axes[0] * math.cos(t), semi_axes[1] * math.sin(t)
            cv.ellipse(x, y, 6, 3.5, 900, angle_deg=math.degrees(t) * side, name="bone")
            cv.ellipse(x, y, 4, 1.8, 350, angle_deg=math.degrees(t) * side)


def abdomen_phantom(
    *,
    seed: int | None = None,
    shape: int = 512,
    fov_mm: float = 380.0,
    n_lesions: int = 5,
    supersample: int = 3,
) -> Phantom:
    """An upper-abdomen slice with random anatomy, liver lesions and fine details.

    Tissue values (HU): air and bowel gas -1000, fat -100, muscle 50, liver 60, spleen 45,
    kidneys 30, bowel content 20, spinal canal 20, enhanced vessels 150-300 (aorta, IVC, portal
    and hepatic vessels), cancellous bone 400 and cortical bone/ribs 800-1000. Body size, organ
    positions and sizes, vessel contrast, bowel loops and lesions vary with the seed.

    Parameters
    ----------
    seed : int, optional
        Seed of the random anatomy; the same seed gives the same phantom.
    shape : int, optional
        Image size in pixels (square; 512 by default).
    fov_mm : float, optional
        Field of view in mm (pixel size ``fov_mm / shape``); at least 360 so the body fits.
    n_lesions : int, optional
        Number of low-contrast liver lesions (3 to 20 HU from the liver, hypo- or
        hyperdense, 3 to 10 mm radius).
    supersample : int, optional
        Sub-pixel samples per axis for anti-aliased edges.

    Returns
    -------
    Phantom
        ``lesions`` holds the liver lesions; ``flat_roi`` a 16 mm liver square free of vessels
        and lesions; masks ``'body'``, ``'liver'``, ``'spleen'``, ``'kidney'``, ``'bone'``,
        ``'vessel'``, ``'gas'`` and ``'detail'`` (small high-contrast dots).
    """
    if fov_mm < 360:
        raise ValueError(f"fov_mm must be >= 360 mm for the abdomen phantom, got {fov_mm}")
    rng = np.random.default_rng(seed)
    cv = _Canvas(shape, fov_mm, AIR_HU, supersample)
    a, b = rng.uniform(150, 172), rng.uniform(105, 125)  # body semi-axes
    sy = b * 0.5  # the spine's centre
    _abdomen_wall(cv, rng, a, b, sy)
    liver, spleen = _abdomen_organs(cv, rng, a, b, sy)
    _bowel(cv, rng, a, b, sy, liver)
    # Liver: a flat ROI, vessels (fine details) and low-contrast lesions, without overlap.
    roi_half = 8.0
    roi_xy, taken = _liver_roi_and_vessels(cv, rng, liver, roi_half)
    lesions = _liver_lesions(cv, rng, liver, taken, n_lesions)
    _calcifications(cv, rng, sy, spleen)
    return cv.phantom(lesions, cv.roi(roi_xy[0], roi_xy[1], roi_half))


def _abdomen_wall(cv: _Canvas, rng: np.random.Generator, a: float, b: float, sy: float) -> None:
    """Paint the body, abdominal wall, visceral fat, back muscles and ribs."""
    cv.ellipse(0, 0, a, b, -100, name="body")
    cv.ellipse(0, 0, a - 11, b - 9, 50)  # abdominal wall muscle
    cv.ellipse(0, 0, a - 20, b - 18, -100)  # visceral fat
    for side in (-1, 1):
        cv.ellipse(side * 38, sy + 28, 28, 14, 50, angle_deg=side * 10)  # erector spinae
        cv.ellipse(side * 32, sy - 2, 13, 19, 50, angle_deg=side * 20)  # psoas
    # Ribs along the lateral and posterior wall.
    _ribs(cv, rng, (a - 16, b - 14), first_deg=15, step_deg=28, count=3, jitter_deg=5)


def _abdomen_organs(
    cv: _Canvas, rng: np.random.Generator, a: float, b: float, sy: float
) -> tuple[_Ellipse, tuple[float, float]]:
    """Paint liver, spleen, kidneys, vertebra and great vessels; return liver and spleen centre."""
    u = rng.uniform
    lx, ly = -a * u(0.38, 0.48), -b * u(0.05, 0.2)
    lax, lay, lang = a * u(0.38, 0.45), b * u(0.55, 0.65), u(-30, -10)
    cv.ellipse(lx, ly, lax, lay, 60, angle_deg=lang, name="liver")
    spx, spy = a * u(0.55, 0.62), b * u(0.15, 0.3)
    cv.ellipse(spx, spy, a * 0.16, b * 0.32, 45, angle_deg=u(20, 40), name="spleen")
    for side in (-1, 1):
        kx, ky = side * (50 + u(-5, 8)), sy + u(-8, 4)
        cv.ellipse(kx, ky, 21, 32, 30, angle_deg=side * u(15, 30), name="kidney")
        cv.ellipse(kx + side * 9, ky, 5, 9, -100)  # renal sinus fat
    # Vertebra: cortical shell, cancellous body, canal and posterior arch.
    cv.disk(0, sy, 19, 900, name="bone")
    cv.disk(0, sy, 16, 400)
    cv.ellipse(0, sy + 30, 15, 12, 850, name="bone")
    cv.ellipse(0, sy + 27, 8, 7, 20)
    cv.ellipse(0, sy + 40, 3.5, 7, 850, name="bone")
    # Great vessels (enhanced).
    cv.disk(12 + u(-3, 3), sy - 30, u(9, 12), u(200, 300), name="vessel")
    cv.ellipse(-20 + u(-3, 3), sy - 28, 13, 9, u(150, 200), name="vessel")
    return (lx, ly, lax, lay, lang), (spx, spy)


def _bowel(
    cv: _Canvas, rng: np.random.Generator, a: float, b: float, sy: float, liver: _Ellipse
) -> None:
    """Paint the stomach and bowel loops in the anterior abdomen, clear of liver and spine."""
    u = rng.uniform
    stomach = (a * 0.25, -b * 0.45, 28.0)
    cv.ellipse(stomach[0], stomach[1], 34, 22, 40, angle_deg=-15)
    cv.ellipse(stomach[0] - 5, stomach[1] - 8, 22, 9, AIR_HU, name="gas")
    taken: list[_Circle] = [stomach]
    lx, ly, lax, lay, lang = liver

    def centre() -> tuple[float, float]:
        return u(-a * 0.45, a * 0.55), u(-b * 0.6, b * 0.2)

    def fits(x: float, y: float, r: float) -> bool:
        inside_body = _inside(x, y, 0, 0, a - 22 - r, b - 20 - r, 0) < 1
        clear = _inside(x, y, lx, ly, lax + r, lay + r, lang) > 1 and _free(x, y, r, taken)
        return inside_body and clear and math.hypot(x, y - sy) > 50 + r

    for _ in range(int(rng.integers(4, 8))):
        loop = _place(rng, 30, (9, 16), centre, fits)
        if loop is not None:
            x, y, r = loop
            cv.disk(x, y, r, 40)  # wall
            content = AIR_HU if rng.random() < 0.4 else 20.0
            cv.disk(x, y, r - 2, content, name="gas" if content == AIR_HU else None)
            taken.append(loop)


def _in_box(rng: np.random.Generator, ellipse: _Ellipse) -> tuple[float, float]:
    """A random point in the box of half sides (ax, ay) centred on the ellipse's centre."""
    cx, cy, ax, ay, _ = ellipse
    return cx + rng.uniform(-1, 1) * ax, cy + rng.uniform(-1, 1) * ay


def _in_ellipse(x: float, y: float, ellipse: _Ellipse, margin: float) -> bool:
    """Whether (x, y) lies in ``ellipse`` shrunk by ``margin`` mm."""
    cx, cy, ax, ay, ang = ellipse
    return _inside(x, y, cx, cy, ax - margin, ay - margin, ang) < 1


def _liver_roi_and_vessels(
    cv: _Canvas, rng: np.random.Generator, liver: _Ellipse, roi_half: float
) -> tuple[tuple[float, float], list[_Circle]]:
    """Place the liver's flat ROI and paint its vessels; return the ROI centre and what is taken."""
    u = rng.uniform
    lx, ly, lax, lay, _ = liver
    for _try in range(200):
        x, y = lx + u(-0.4, 0.4) * lax, ly + u(-0.4, 0.4) * lay
        if _in_ellipse(x, y, liver, roi_half * 1.5 + 6):
            break
    roi_xy = (x, y)
    taken = [(x, y, roi_half * 1.5)]
    cv.disk(lx + lax * 0.15, ly + lay * 0.35, u(5, 7), 180, name="vessel")  # portal vein
    taken.append((lx + lax * 0.15, ly + lay * 0.35, 7.0))

    def fits(x: float, y: float, r: float) -> bool:
        return _in_ellipse(x, y, liver, 6) and _free(x, y, r, taken)

    for _ in range(8):
        vessel = _place(rng, 50, (1.0, 3.0), lambda: _in_box(rng, liver), fits)
        if vessel is not None:
            cv.disk(vessel[0], vessel[1], vessel[2], u(150, 220), name="vessel")
            taken.append(vessel)
    return roi_xy, taken


def _liver_lesions(
    cv: _Canvas, rng: np.random.Generator, liver: _Ellipse, taken: list[_Circle], n: int
) -> list[Lesion]:
    """Paint ``n`` low-contrast liver lesions clear of what is ``taken`` (which they join)."""

    def fits(x: float, y: float, r: float) -> bool:
        return _in_ellipse(x, y, liver, r + 4) and _free(x, y, r, taken)

    lesions = []
    for _ in range(n):
        spot = _place(rng, 200, (3, 10), lambda: _in_box(rng, liver), fits)
        if spot is not None:
            x, y, r = spot
            contrast = float(rng.choice([-1, 1]) * rng.uniform(3, 20))
            cv.disk(x, y, r, 60 + contrast)
            lesions.append(cv.lesion(x, y, r, contrast))
            taken.append(spot)
    return lesions


def _calcifications(
    cv: _Canvas, rng: np.random.Generator, sy: float, spleen: tuple[float, float]
) -> None:
    """Paint fine high-contrast dots: calcifications in the aortic wall and the spleen."""
    u = rng.uniform
    for _ in range(4):
        t = u(0, 2 * math.pi)
        cv.disk(12 + 12 * math.cos(t), sy - 30 + 12 * math.sin(t), u(0.6, 1.2), 900, "detail")
    for _ in range(2):
        cv.disk(spleen[0] + u(-8, 8), spleen[1] + u(-8, 8), u(0.5, 1.0), 700, name="detail")


def chest_phantom(
    *,
    seed: int | None = None,
    shape: int = 512,
    fov_mm: float = 380.0,
    n_nodules: int = 4,
    supersample: int = 3,
) -> Phantom:
    """A chest slice: lungs (-850 HU) with vessels, heart, aorta, spine, ribs and nodules.

    Values (HU): fat -100, muscle 50, lung -850, pulmonary vessels 40, heart 40, aorta 40,
    trachea/bronchi -1000, cancellous bone 400, cortical bone and ribs 900. Solid lung nodules
    (2-6 mm radius, -850 + 700..870 HU) are listed in ``lesions`` with their contrast to lung.

    Parameters
    ----------
    seed, shape, fov_mm, supersample
        As for :func:`abdomen_phantom`.
    n_nodules : int, optional
        Number of lung nodules.

    Returns
    -------
    Phantom
        ``flat_roi`` a 16 mm square in the posterior back muscle (erector spinae); masks
        ``'body'``, ``'lung'``, ``'heart'``, ``'bone'`` and ``'vessel'``.
    """
    if fov_mm < 360:
        raise ValueError(f"fov_mm must be >= 360 mm for the chest phantom, got {fov_mm}")
    rng = np.random.default_rng(seed)
    u = rng.uniform
    cv = _Canvas(shape, fov_mm, AIR_HU, supersample)
    a, b = u(150, 170), u(105, 120)
    cv.ellipse(0, 0, a, b, -100, name="body")
    cv.ellipse(0, 0, a - 10, b - 8, 50)  # chest wall
    sy = b * 0.5
    lungs: list[_Ellipse] = []
    for side in (-1, 1):
        c = (side * a * 0.42, -b * 0.02, a * 0.38, b * 0.72, -side * u(0, 10))
        cv.ellipse(*c[:4], -850, angle_deg=c[4], name="lung")
        lungs.append(c)
    # Ribs around the chest wall.
    _ribs(cv, rng, (a - 15, b - 12), first_deg=-70, step_deg=35, count=5, jitter_deg=4)
    # Mediastinum, heart, aorta, trachea, spine.
    cv.ellipse(0, -b * 0.1, 35, b * 0.7, 50)
    cv.ellipse(u(10, 25), -b * 0.2, u(50, 60), u(40, 50), 40, angle_deg=u(-30, -15), name="heart")
    cv.disk(-8, -b * 0.55, 12, 40, name="vessel")  # ascending aorta
    cv.disk(18, sy - 28, 12, 40, name="vessel")  # descending aorta
    cv.disk(-2, sy - 52, 8, AIR_HU)  # trachea / carina region
    cv.disk(0, sy, 18, 900, name="bone")
    cv.disk(0, sy, 15, 400)
    cv.ellipse(0, sy + 29, 14, 11, 850, name="bone")
    cv.ellipse(0, sy + 26, 7, 7, 20)
    for side in (-1, 1):
        cv.ellipse(side * 38, sy + 26, 26, 12, 50, angle_deg=side * 10)
    roi_xy = (38.0, sy + 26)
    lesions = _lung_details(cv, rng, (a, b), lungs, n_nodules)
    return cv.phantom(lesions, cv.roi(roi_xy[0], roi_xy[1], 8.0))


def _lung_details(
    cv: _Canvas,
    rng: np.random.Generator,
    body: tuple[float, float],
    lungs: list[_Ellipse],
    n_nodules: int,
) -> list[Lesion]:
    """Paint pulmonary vessels and ``n_nodules`` solid nodules in the lungs, without overlap."""
    u = rng.uniform
    a, b = body
    taken: list[_Circle] = []

    def centre() -> tuple[float, float]:
        return u(-a, a), u(-b, b)

    def in_lung(x: float, y: float, margin: float) -> bool:
        return any(_in_ellipse(x, y, lung, margin) for lung in lungs)

    def vessel_fits(x: float, y: float, r: float) -> bool:
        return in_lung(x, y, 4) and _free(x, y, r, taken)

    def nodule_fits(x: float, y: float, r: float) -> bool:
        return in_lung(x, y, r + 5) and _free(x, y, r, taken)

    for _ in range(60):
        vessel = _place(rng, 30, (0.6, 3.5), centre, vessel_fits)
        if vessel is not None:
            cv.disk(vessel[0], vessel[1], vessel[2], 40, name="vessel")
            taken.append(vessel)
    lesions = []
    for _ in range(n_nodules):
        spot = _place(rng, 200, (2, 6), centre, nodule_fits)
        if spot is not None:
            x, y, r = spot
            contrast = float(u(700, 870))
            cv.disk(x, y, r, -850 + contrast)
            lesions.append(cv.lesion(x, y, r, contrast))
            taken.append(spot)
    return lesions


# Shepp & Logan (1974) ellipses: centre (x0, y0) and semi-axes (a, b) in units of the half
# field, tilt in degrees, y up; intensities of the original and of Toft's modified version.
_SHEPP_LOGAN = (
    (0.0, 0.0, 0.69, 0.92, 0.0),
    (0.0, -0.0184, 0.6624, 0.874, 0.0),
    (0.22, 0.0, 0.11, 0.31, -18.0),
    (-0.22, 0.0, 0.16, 0.41, 18.0),
    (0.0, 0.35, 0.21, 0.25, 0.0),
    (0.0, 0.1, 0.046, 0.046, 0.0),
    (0.0, -0.1, 0.046, 0.046, 0.0),
    (-0.08, -0.605, 0.046, 0.023, 0.0),
    (0.0, -0.606, 0.023, 0.023, 0.0),
    (0.06, -0.605, 0.023, 0.046, 0.0),
)
_SL_ORIGINAL = (2.0, -0.98, -0.02, -0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
_SL_MODIFIED = (1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)


def shepp_logan_phantom(
    *,
    shape: int = 512,
    fov_mm: float = 256.0,
    modified: bool = True,
    supersample: int = 4,
) -> Phantom:
    """The Shepp-Logan head phantom in HU.

    The ten ellipses of Shepp & Logan (1974, IEEE Trans Nucl Sci 21:21) add their
    intensities ``v``, mapped to ``HU = 1000 (v - 1)``: outside the head ``v = 0`` is air
    (-1000 HU) and ``v = 1`` is water (0 HU). With Toft's modified intensities (default) the
    skull is 0 HU, the brain -800 HU, the ventricles -1000 HU and the small blobs -700 HU:
    high contrast. With the original ones the skull is +1000 HU, the brain +20 HU, the
    ventricles 0 HU and the blobs +30 or +40 HU: CT-like, low contrast.

    Parameters
    ----------
    shape : int, optional
        Image size in pixels (square).
    fov_mm : float, optional
        Width of the image in mm; the phantom's unit (half field) is ``fov_mm / 2``, so the
        skull is about 0.69 x 0.92 of it (88 x 118 mm semi-axes at 256 mm).
    modified : bool, optional
        Toft's modified intensities (True) or Shepp & Logan's original ones.
    supersample : int, optional
        Sub-pixel samples per axis for anti-aliased edges.

    Returns
    -------
    Phantom
        ``lesions`` holds the three round blobs (contrast to the surrounding brain);
        ``flat_roi`` a brain square above the large central ellipse; masks ``'head'``
        (inside the skull's outer edge) and ``'brain'`` (inside its inner edge).
    """
    canvas = _Canvas(shape, fov_mm, AIR_HU, supersample)
    unit = fov_mm / 2
    values = _SL_MODIFIED if modified else _SL_ORIGINAL
    lesions = []
    for k, ((x0, y0, a, b, tilt), v) in enumerate(zip(_SHEPP_LOGAN, values, strict=True)):
        # The canvas's y runs down the rows: mirror y and the tilt.
        cx, cy, ax, ay = x0 * unit, -y0 * unit, a * unit, b * unit
        name = {0: "head", 1: "brain"}.get(k)
        canvas.ellipse(cx, cy, ax, ay, 1000.0 * v, angle_deg=-tilt, name=name, add=True)
        if math.isclose(a, b) and k >= 5:
            lesions.append(canvas.lesion(cx, cy, ax, 1000.0 * v))
    return canvas.phantom(lesions, canvas.roi(0.0, -0.72 * unit, 0.05 * unit))


# MITA CCT189 low-contrast module (FDA LCD-CT): rod diameter (mm) and contrast (HU).
_MITA_RODS = ((3.0, 14.0), (5.0, 7.0), (7.0, 5.0), (10.0, 3.0))


def mita_lcd_phantom(
    *,
    shape: int = 512,
    fov_mm: float = 250.0,
    diameter_mm: float = 200.0,
    ring_mm: float = 45.0,
    background: float = 0.0,
    supersample: int = 4,
) -> Phantom:
    """A CCT189 / MITA-LCD-like low-contrast detectability phantom.

    A water-equivalent cylinder (``background`` HU) with four rods of 3, 5, 7 and 10 mm
    diameter at +14, +7, +5 and +3 HU contrast, as in the MITA CCT189 module used by the FDA's
    LCD-CT toolkit. The rods sit on a ring of ``ring_mm`` radius, at 45 degrees from the axes
    (14 HU upper right, 7 HU upper left, 5 HU lower left, 3 HU lower right as displayed).

    Parameters
    ----------
    shape, fov_mm, supersample
        As for :func:`water_cylinder`.
    diameter_mm : float, optional
        Cylinder diameter in mm (200 for CCT189).
    ring_mm : float, optional
        Distance of the rod centres from the cylinder axis in mm.
    background : float, optional
        Cylinder value in HU.

    Returns
    -------
    Phantom
        ``lesions`` holds the rods in the order above (``radius`` in pixels, ``contrast`` in
        HU); ``flat_roi`` a central background square free of rods; masks ``'cylinder'``
        and ``'rods'``.
    """
    if ring_mm + 10 > diameter_mm / 2:
        raise ValueError(f"ring_mm {ring_mm} leaves no room for the rods in the cylinder")
    canvas = _Canvas(shape, fov_mm, AIR_HU, supersample)
    canvas.disk(0.0, 0.0, diameter_mm / 2, background, name="cylinder")
    lesions = []
    r = ring_mm / math.sqrt(2)
    for (diam, contrast), (sx, sy) in zip(
        _MITA_RODS, ((1, -1), (-1, -1), (-1, 1), (1, 1)), strict=True
    ):
        canvas.disk(sx * r, sy * r, diam / 2, background + contrast, name="rods")
        lesions.append(canvas.lesion(sx * r, sy * r, diam / 2, contrast))
    return canvas.phantom(lesions, canvas.roi(0.0, 0.0, min(ring_mm / 3, 15.0)))


def mtf_phantom(
    *,
    shape: int = 512,
    fov_mm: float = 250.0,
    diameter_mm: float = 200.0,
    wire_mm: float = 0.2,
    wire_hu: float = 3000.0,
    wire_xy_mm: tuple[float, float] = (0.0, -50.0),
    insert_mm: float = 30.0,
    insert_hu: float = 300.0,
    insert_xy_mm: tuple[float, float] = (0.0, 50.0),
    supersample: int = 4,
) -> Phantom:
    """A resolution phantom: a thin wire (MTF) and a large round insert (TTF) in water.

    The wire, thinner than a pixel, gives the point spread function: its area-weighted
    value (partial volume from dense sub-pixel sampling) keeps its line integral, so
    ``(HU sum around the wire) * pixel area = wire_hu * pi wire_mm^2 / 4``. The insert's
    circular edge gives the task-transfer function (edge spread over all directions).

    Parameters
    ----------
    shape, fov_mm, diameter_mm, supersample
        As for :func:`water_cylinder` (water cylinder of ``diameter_mm``).
    wire_mm : float, optional
        Wire diameter in mm (e.g. a 0.2 mm tungsten-like wire).
    wire_hu : float, optional
        Wire value in HU.
    wire_xy_mm : tuple of float, optional
        Wire position ``(x, y)`` in mm from the isocentre (y down the rows).
    insert_mm : float, optional
        Insert diameter in mm.
    insert_hu : float, optional
        Insert value in HU (its contrast to water).
    insert_xy_mm : tuple of float, optional
        Insert centre ``(x, y)`` in mm.

    Returns
    -------
    Phantom
        ``lesions`` holds the wire and then the insert (contrast to water); ``flat_roi`` a
        water square at the centre; masks ``'cylinder'``, ``'wire'`` (the pixels it
        touches) and ``'insert'``.
    """
    if not 0 < wire_mm < insert_mm:
        raise ValueError(f"need 0 < wire_mm < insert_mm, got {wire_mm} and {insert_mm}")
    canvas = _Canvas(shape, fov_mm, AIR_HU, supersample)
    canvas.disk(0.0, 0.0, diameter_mm / 2, 0.0, name="cylinder")
    ix, iy = insert_xy_mm
    canvas.disk(ix, iy, insert_mm / 2, insert_hu, name="insert")
    wx, wy = wire_xy_mm
    # Enough sub-samples that the wire's area is resolved to about 1 %.
    fine = max(supersample, math.ceil(12 * canvas.px / wire_mm))
    before = canvas.img.copy()
    canvas.ellipse(wx, wy, wire_mm / 2, wire_mm / 2, wire_hu, supersample=fine)
    canvas.masks["wire"] = canvas.img != before
    wire = canvas.lesion(wx, wy, wire_mm / 2, wire_hu)
    insert = canvas.lesion(ix, iy, insert_mm / 2, insert_hu)
    half = min(abs(iy), abs(wy), diameter_mm / 2) / 3 if iy and wy else diameter_mm / 12
    return canvas.phantom([wire, insert], canvas.roi(0.0, 0.0, half))
