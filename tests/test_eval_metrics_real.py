"""The real-data metrics evaluation (benchmarks/eval_metrics_real.py) on synthetic stand-ins."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from torch import nn

from benchmark_loading import benchmark_module
from ctdid.metrics import cho_detectability, laguerre_gauss_channels, rmse

CONTRASTS = (14.0, 7.0, 5.0, 3.0)
DIAMETERS_PX = (3.0, 4.0, 5.0, 6.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ev() -> Iterator[ModuleType]:
    with benchmark_module("eval_metrics_real") as module:
        yield module


# ---------------------------------------------------------------------------------------------
# synthetic MITA-LCD phantom


def _lcd_truth(n: int = 80, phantom_px: float = 64.0, ring_px: float = 18.0) -> np.ndarray:
    """Water disc in air with four discs (14/7/5/3 HU) at 45 + k 90 degrees, exact edges."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    c = (n - 1) / 2
    img = np.full((n, n), -1000.0)
    img[np.hypot(yy - c, xx - c) <= phantom_px / 2] = 0.0
    for k, (contrast, diam) in enumerate(zip(CONTRASTS, DIAMETERS_PX, strict=True)):
        ang = math.radians(45 + 90 * k)
        cy, cx = c - ring_px * math.sin(ang), c + ring_px * math.cos(ang)
        img[np.hypot(yy - cy, xx - cx) <= diam / 2] = contrast
    return img


def _ensemble(truth: np.ndarray, n: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (truth + rng.normal(0.0, sigma, (n, *truth.shape))).astype(np.float32)


def test_lcd_geometry_recovers_phantom_and_discs(ev: ModuleType) -> None:
    truth = _lcd_truth()
    g = ev.lcd_geometry(truth)
    assert [d.contrast_hu for d in g.discs] == list(CONTRASTS)
    assert g.center == pytest.approx((39.5, 39.5), abs=0.05)
    # the phantom holds 64 px: a 200 mm phantom gives 200/64 mm pixels
    assert g.pixel_from_edge_mm == pytest.approx(200.0 / 64.0, rel=0.02)
    for d, diam in zip(g.discs, DIAMETERS_PX, strict=True):
        # a pixelated disc of diameter D holds about pi D^2 / 4 pixels
        assert d.diameter_px == pytest.approx(diam, rel=0.12)
        assert d.nominal_mm == ev.CCT189_DISC_MM[round(d.contrast_hu)]
        r = math.hypot(d.center[0] - 39.5, d.center[1] - 39.5)
        assert r == pytest.approx(18.0, abs=0.3)
    expected = np.median([d.nominal_mm / d.diameter_px for d in g.discs])
    assert g.pixel_from_discs_mm == pytest.approx(expected)
    pos = g.positions(g.discs[0])
    assert len(pos) == ev.CHO_POSITIONS
    assert pos[0] == pytest.approx(g.discs[0].center)
    radii = [math.hypot(p[0] - 39.5, p[1] - 39.5) for p in pos]
    assert np.ptp(radii) < 1e-9
    # neighbouring positions are 45 degrees apart
    assert math.dist(pos[0], pos[1]) == pytest.approx(2 * radii[0] * math.sin(math.pi / 8))
    assert ev.lcd_pixel_mm(g, "edge") == g.pixel_from_edge_mm
    assert ev.lcd_pixel_mm(g, "discs") == g.pixel_from_discs_mm
    assert ev.lcd_pixel_mm(g, "0.5") == 0.5
    with pytest.raises(ValueError, match="lcd-pixel"):
        ev.lcd_pixel_mm(g, "big")
    with pytest.raises(ValueError, match="no phantom"):
        ev.lcd_geometry(np.full((32, 32), -1000.0))


def test_channel_outputs_match_full_image_channels(ev: ModuleType) -> None:
    rng = np.random.default_rng(1)
    imgs = rng.normal(0.0, 10.0, (3, 60, 60))
    center = (27.3, 31.8)
    out = ev.channel_outputs(imgs, [center], width_px=5.0, n_channels=4)
    full = laguerre_gauss_channels((60, 60), n_channels=4, width=5.0, center=center)
    expected = imgs.reshape(3, -1) @ full.reshape(4, -1).T
    assert out.shape == (3, 1, 4)
    # the square is cut at 2.5 widths: the channel tails beyond it are negligible
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="leaves the image"):
        ev.channel_outputs(imgs, [(3.0, 3.0)], width_px=5.0)


def test_hotelling_raw_equals_library_cho(ev: ModuleType) -> None:
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:41, :41]
    signal = 3.0 * (np.hypot(yy - 20, xx - 20) <= 3)
    g0 = rng.normal(0.0, 5.0, (14, 41, 41))
    g1 = rng.normal(0.0, 5.0, (14, 41, 41)) + signal
    lib = cho_detectability(g1, g0, width=6.0, n_channels=5, center=(20.0, 20.0))
    v1 = ev.channel_outputs(g1, [(20.0, 20.0)], width_px=6.0)[:, 0]
    v0 = ev.channel_outputs(g0, [(20.0, 20.0)], width_px=6.0)[:, 0]
    assert ev.hotelling_dprime(v1, v0, unbiased=False) == pytest.approx(lib.d_prime, rel=1e-4)
    # the correction lowers the small-sample estimate
    assert ev.hotelling_dprime(v1, v0) < lib.d_prime


def test_hotelling_correction_is_unbiased(ev: ModuleType) -> None:
    rng = np.random.default_rng(3)
    p, n1, n0, d_true = 5, 10, 80, 1.5
    shift = np.zeros(p)
    shift[0] = d_true
    corrected, raw = [], []
    for _ in range(400):
        v1 = rng.normal(size=(n1, p)) + shift
        v0 = rng.normal(size=(n0, p))
        corrected.append(ev.hotelling_dprime(v1, v0) ** 2)
        raw.append(ev.hotelling_dprime(v1, v0, unbiased=False) ** 2)
    assert np.mean(corrected) == pytest.approx(d_true**2, rel=0.08)
    # without the correction, d'^2 is biased up by about p (1/n1 + 1/n0) = 0.56
    assert np.mean(raw) > d_true**2 + 0.4
    with pytest.raises(ValueError, match="samples"):
        ev.hotelling_dprime(np.zeros((2, 5)), np.zeros((3, 5)))


def test_cho_study_auc_and_jackknife_interval_coverage(ev: ModuleType) -> None:
    rng = np.random.default_rng(4)
    p, d_true = 5, 1.5
    shift = np.zeros(p)
    shift[0] = d_true
    covered, widths = 0, []
    trials = 150
    for _ in range(trials):
        v1 = rng.normal(size=(10, p)) + shift
        v0 = rng.normal(size=(10, 8, p))
        res = ev.cho_study(v1, v0)
        covered += res["ci_low"] <= d_true <= res["ci_high"]
        widths.append(res["ci_high"] - res["ci_low"])
    # the 95 % interval covers the true d' in about 95 % of studies of 10 + 10 images
    assert 0.85 <= covered / trials <= 0.995
    assert 0.5 < np.median(widths) < 3.0
    assert res["n_present"] == 10 and res["n_absent"] == 80
    assert res["auc"] == pytest.approx(stats.norm.cdf(res["d_prime"] / math.sqrt(2)))
    assert res["d_prime"] == pytest.approx(math.sqrt(max(res["d2"], 0.0)))
    assert res["d_prime_raw"] > res["d_prime"]
    # no signal: d' near 0, and the interval still has a positive upper end
    null = ev.cho_study(rng.normal(size=(10, p)), rng.normal(size=(10, 8, p)))
    assert null["d_prime"] < 0.9 and null["ci_high"] > 0.0


def test_noise_only_removes_the_object(ev: ModuleType) -> None:
    truth = _lcd_truth()
    noise = ev.noise_only(_ensemble(truth, 10, 8.0, seed=5))
    assert abs(noise.mean(axis=0)).max() < 1e-3
    assert noise.std() == pytest.approx(8.0, rel=0.03)
    with pytest.raises(ValueError, match="two images"):
        ev.noise_only(truth[None])


def test_lcd_method_rows_white_noise(ev: ModuleType) -> None:
    truth = _lcd_truth()
    g = ev.lcd_geometry(truth)
    sp = _ensemble(truth, 12, 4.0, seed=6)
    sa = _ensemble(np.where(truth > 0, 0.0, truth), 12, 4.0, seed=7)
    rows, noise = ev.lcd_method_rows(sp, sa, g, spacing=0.5)
    assert noise["noise_hu"] == pytest.approx(4.0, rel=0.05)
    assert [r["contrast_hu"] for r in rows] == list(CONTRASTS)
    for r, d in zip(rows, g.discs, strict=True):
        # white noise, sharp edges: NPW d' = C sqrt(area in px) / sigma
        ideal = d.contrast_hu * math.sqrt(math.pi * d.diameter_px**2 / 4) / 4.0
        assert r["npw_d_prime"] == pytest.approx(ideal, rel=0.2)
        assert r["diameter_mm"] == pytest.approx(0.5 * d.diameter_px)
        # the channelized observer reaches most of the ideal d' (10 images: loose bounds)
        assert 0.4 * ideal < r["cho_d_prime"] < 1.5 * ideal
    # smoothing lowers the noise and its frequencies, not the detectability of the discs
    blur = np.stack([ndimage.gaussian_filter(x, 1.0) for x in sp])
    blur_a = np.stack([ndimage.gaussian_filter(x, 1.0) for x in sa])
    _, noise_b = ev.lcd_method_rows(blur, blur_a, g, spacing=0.5)
    assert noise_b["noise_hu"] < 0.5 * noise["noise_hu"]
    assert noise_b["nps_mean_frequency"] < noise["nps_mean_frequency"]

    # the phantom edge of the blurred mean image transfers less at 0.5 cycles/mm
    def ttf_at(n: dict, f: float) -> float:
        return float(np.interp(f, n["ttf"]["f"], n["ttf"]["ttf"]))

    assert ttf_at(noise_b, 0.5) < 0.8 * ttf_at(noise, 0.5)
    assert math.isfinite(noise_b["ttf50"])


# ---------------------------------------------------------------------------------------------
# synthetic CatPhan


def _catphan(n: int = 192, seed: int = 8) -> np.ndarray:
    """Slices 0-3 uniform, 4-6 with an air and a Teflon insert, 7-11 with a low-contrast disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(float)
    c = (n - 1) / 2
    body = np.hypot(yy - c, xx - c) <= 80
    vol = []
    for z in range(12):
        img = np.where(body, 0.0, -1000.0)
        if 4 <= z <= 6:
            img[np.hypot(yy - c, xx - (c - 16)) <= 12] = -1000.0
            img[np.hypot(yy - c, xx - (c + 16)) <= 12] = 950.0
        if z >= 7:
            img[np.hypot(yy - (c + 15), xx - c) <= 10] = 20.0
        vol.append(img + rng.normal(0.0, 10.0, img.shape))
    return np.stack(vol).astype(np.float32)


def test_catphan_modules_and_measurements(ev: ModuleType) -> None:
    vol = _catphan()
    mods = ev.catphan_modules(vol, spacing=(0.5, 0.5), n_slices=3)
    assert mods["ctp404"] == [4, 5, 6]
    assert mods["uniform"] == [0, 1, 2] or mods["uniform"] == [1, 2, 3]
    assert ev.catphan_modules(vol, spacing=(0.5, 0.5), n_slices=1)["ctp404"] == [5]
    center, radius = ev.catphan_air_insert(vol[5], spacing=(0.5, 0.5))
    assert center == pytest.approx((95.5, 79.5), abs=0.3)
    assert radius == pytest.approx(6.0, rel=0.05)
    nps, std = ev.catphan_nps(vol[:3], spacing=(0.5, 0.5), size=32)
    assert std == pytest.approx(10.0, rel=0.08)
    assert nps.n_patches >= 3


class _Blur(nn.Module):
    """An HU-to-HU 5x5 convolution with trainable weights, starting as a 3x3 box filter (a
    stand-in denoiser that DID can make sharper or smoother)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5, padding=2, padding_mode="replicate", bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1:4, 1:4] = 1.0 / 9.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_evaluate_catphan_with_a_smoother(ev: ModuleType) -> None:
    vol = _catphan()
    res = ev.evaluate_catphan(
        vol, (0.5, 0.5), {"blur": _Blur()}, did_model=None, n_slices=1, log=lambda m: None
    )
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"input", "blur"}
    assert rows["input"]["noise_hu"] == pytest.approx(10.0, rel=0.15)
    # a 3x3 box filter divides white-noise STD by 3
    assert rows["blur"]["noise_hu"] == pytest.approx(rows["input"]["noise_hu"] / 3, rel=0.15)
    assert rows["blur"]["mtf50"] < rows["input"]["mtf50"]
    assert "| blur |" in ev.catphan_table(res)


# ---------------------------------------------------------------------------------------------
# synthetic L506


def _body_pair(n: int = 128, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(float)
    body = np.hypot((yy - n / 2) / 0.8, xx - n / 2) <= 0.42 * n
    # the skin edge blurred by a Gaussian of 1 pixel
    clean = ndimage.gaussian_filter(np.where(body, 40.0, -1000.0), 1.0)
    normal = clean + rng.normal(0.0, 5.0, clean.shape)
    low = normal + rng.normal(0.0, 20.0, clean.shape)
    return low.astype(np.float32), normal.astype(np.float32)


def test_l506_metrics_of_a_noisy_copy(ev: ModuleType) -> None:
    low, normal = _body_pair()
    body, regions, nps_regions = ev.l506_regions(normal, spacing=0.7, nps_roi_mm=11.2)
    assert regions and len(nps_regions) >= 4
    m = ev.l506_metrics(
        low, normal, body=body, regions=regions, nps_regions=nps_regions, spacing=0.7
    )
    assert m["rmse_hu"] == pytest.approx(20.0, rel=0.05)
    assert m["std_hu"] == pytest.approx(math.hypot(20.0, 5.0), rel=0.1)
    assert 0.0 < m["nps_mean_frequency"] < 0.5 / 0.7
    # Gaussian edge of 0.7 mm: MTF50 = sqrt(ln 2 / 2) / (pi 0.7 mm)
    assert m["mtf50"] == pytest.approx(math.sqrt(math.log(2) / 2) / (math.pi * 0.7), rel=0.15)


def test_evaluate_l506_did_curve(ev: ModuleType) -> None:
    low, normal = _body_pair(96)
    model = _Blur()
    res = ev.evaluate_l506(
        low, normal, {"blur": model}, did_model="blur", n_candidates=2, log=lambda m: None
    )
    rows = res["rows"]
    assert [r["method"] for r in rows[:2]] == ["full dose", "input"]
    curve = [r for r in rows if r["strength"] is not None]
    strengths = [r["strength"] for r in curve]
    assert strengths == sorted(strengths) and strengths[0] < 0 < strengths[-1]
    default = next(r for r in curve if r["strength"] == 0.0)
    assert default["method"] == "blur"
    body = ev.find_body_mask(normal)
    assert default["rmse_hu"] == pytest.approx(
        rmse(ev.denoise(model, low), normal, mask=body), rel=1e-4
    )
    # toward high resolution the noise rises toward the input's, toward low noise it falls
    assert curve[0]["std_hu"] > default["std_hu"] > curve[-1]["std_hu"]
    assert res["did_seconds"] > 0
    assert "+0.00" in ev.l506_table(res)


# ---------------------------------------------------------------------------------------------
# the command line, on a synthetic LCD folder in the real data's formats


def _write_mhd(folder: Path, stem: str, stack: np.ndarray, *, big_endian: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = stack.shape[0]
    dtype = ">u2" if big_endian else "<i2"
    for i, sl in enumerate(stack, start=1):
        sl.astype(dtype).tofile(folder / f"{stem}_{i:03d}.raw")
    (folder / f"{stem}.mhd").write_text(
        "ObjectType = Image\nNDims = 3\n"
        f"DimSize = {stack.shape[2]} {stack.shape[1]} {n}\n"
        "ElementType = MET_SHORT\nElementSpacing = 1 1 1\n"
        f"ElementByteOrderMSB = {'True' if big_endian else 'False'}\n"
        f"ElementDataFile = {stem}_%03d.raw 1 {n} 1\n"
    )


def _lcd_folder(root: Path) -> None:
    truth = _lcd_truth()
    lcd = root / "lcd_ct_cct189"
    (lcd / "fbp").mkdir(parents=True)
    (truth + 1000).astype("<u2").tofile(lcd / "fbp" / "ground_truth.raw")
    (lcd / "fbp" / "ground_truth.mhd").write_text(
        "ObjectType = Image\nNDims = 2\nBinaryDataByteOrderMSB = False\nDimSize = 80 80\n"
        "ElementType = MET_USHORT\nElementDataFile = ground_truth.raw"
    )
    absent = np.where(truth > 0, 0.0, truth)
    for dose, sigma in (("dose_010", 12.0), ("dose_100", 4.0)):
        for k, (name, obj) in enumerate((("signal_present", truth), ("signal_absent", absent))):
            img = np.rint(_ensemble(obj, 10, sigma, seed=10 + k + int(sigma)))
            _write_mhd(lcd / "fbp" / dose / name, name, img + 1000, big_endian=False)
            if dose == "dose_010":
                _write_mhd(lcd / "DL_denoised" / dose / name, name, img + 33768, big_endian=True)


def _weights(folder: Path) -> Path:
    from safetensors.torch import save_file

    from ctdid.models import ModelCard, sha256_file
    from ctdid.models.plain import PlainNet

    folder.mkdir()
    torch.manual_seed(0)
    net = PlainNet(n_layers=2, channels=4, residual=True)
    save_file(net.state_dict(), str(folder / "unet-d25.safetensors"))
    ModelCard(
        name="unet-d25",
        architecture="plain",
        architecture_config={"n_layers": 2, "channels": 4, "residual": True},
        hu_offset=-1000.0,
        hu_scale=1000.0,
        weights_sha256=sha256_file(folder / "unet-d25.safetensors"),
    ).save(folder / "unet-d25.card.yaml")
    return folder


def test_main_on_synthetic_lcd(
    ev: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _lcd_folder(data)
    wdir = _weights(tmp_path / "weights")
    out_json, out_md, figs = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "figs"
    rc = ev.main(
        [
            "--data",
            str(data),
            "--weights-dir",
            str(wdir),
            "--did-doses",
            "dose_100",
            "--json",
            str(out_json),
            "--markdown",
            str(out_md),
            "--figures",
            str(figs),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "dose_055 not found" in text and "skipping CatPhan" in text
    doc = json.loads(out_json.read_text())
    assert doc["did_model"] == "unet-d25"
    lcd = doc["lcd"]
    assert lcd["geometry"]["pixel_used_mm"] == pytest.approx(200.0 / 64.0, rel=0.02)
    methods = {(r["method"], r["dose"]) for r in lcd["rows"]}
    assert ("FBP", 0.1) in methods and ("FDA DL", 0.1) in methods
    assert ("FDA DL", 1.0) not in methods
    assert ("unet-d25", 1.0) in methods and ("unet-d25 DID s=+0.5", 1.0) in methods
    assert ("unet-d25 DID s=+0.5", 0.1) not in methods
    # FBP and the FDA images hold the same pixels here: same detectability
    fbp = [r for r in lcd["rows"] if r["method"] == "FBP" and r["dose"] == 0.1]
    fda = [r for r in lcd["rows"] if r["method"] == "FDA DL" and r["dose"] == 0.1]
    for a, b in zip(fbp, fda, strict=True):
        assert a["cho_d_prime"] == pytest.approx(b["cho_d_prime"], rel=1e-6)
    # detectability grows with dose for FBP
    d100 = {
        r["contrast_hu"]: r["npw_d_prime"]
        for r in lcd["rows"]
        if r["method"] == "FBP" and r["dose"] == 1.0
    }
    for r in fbp:
        assert d100[r["contrast_hu"]] > r["npw_d_prime"]
    assert len(doc["skipped"]) == 2
    md = out_md.read_text()
    assert "| 1.00 | unet-d25 DID s=-1.0 |" in md and "## Skipped" in md
    assert (figs / "lcd_cho_dprime.png").stat().st_size > 1000
