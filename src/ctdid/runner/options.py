"""The options of one run: :class:`RunOptions`, built once from the CLI or from Python."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ctdid.errors import InputError
from ctdid.runner.curve_choice import CurveChoice, choose_curve

__all__ = [
    "EXPORT_FORMATS",
    "METHODS",
    "MODES",
    "PICK_TASKS",
    "RunOptions",
    "check_pick",
    "parse_exports",
]

MODES = ("robust", "faithful", "fast")
#: Candidate makers of ``ctdid run --method``: per side the better of DID and its free
#: baselines by the comparison harness's verdict (``auto``), the DID engine, or a baseline.
METHODS = ("auto", "did", "blend", "iterate", "interp", "tv", "bm3d")
PICK_TASKS = ("detect", "match-noise", "sharpest-below")
#: Export format names accepted by ``export`` -> (format of write_volume, file suffix).
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "dicom": ("dicom", "_dicom"),
    "nifti": ("nifti", ".nii.gz"),
    "png": ("png", ".png"),
    "numpy": ("numpy", ".npy"),
    "tiff": ("tiff", ".tif"),
    "metaimage": ("metaimage", ".mhd"),
}
_EXPORT_ALIASES = {
    "nii": "nifti",
    "npy": "numpy",
    "tif": "tiff",
    "mhd": "metaimage",
    "dcm": "dicom",
}


def parse_exports(export: Sequence[str] | str) -> tuple[str, ...]:
    """Normalise export format names (``"dicom,nifti"`` or a sequence); raises InputError."""
    items = export.split(",") if isinstance(export, str) else list(export)
    out: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        name = _EXPORT_ALIASES.get(name, name)
        if name not in EXPORT_FORMATS:
            raise InputError(
                f"unknown export format {item!r}; use {', '.join(EXPORT_FORMATS)} (comma-separated)"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def check_pick(
    pick: str | None, options: Mapping[str, Any], *, has_reference: bool
) -> dict[str, Any]:
    """Validate a pick task and its options; return the options without the unset ones.

    Raises
    ------
    InputError
        Unknown task or option, or a target the task needs is missing.
    """
    opts = dict(options)
    allowed = {"diameter_mm", "contrast_hu", "eye", "target_noise", "noise_ceiling"}
    unknown = set(opts) - allowed
    if unknown:
        raise InputError(f"unknown pick option(s) {sorted(unknown)}; use {sorted(allowed)}")
    opts = {k: v for k, v in opts.items() if v is not None}
    if pick is None:
        return opts
    if pick not in PICK_TASKS:
        raise InputError(f"unknown pick task {pick!r}; use {', '.join(PICK_TASKS)}")
    if pick == "match-noise" and "target_noise" not in opts and not has_reference:
        raise InputError(
            "--pick match-noise needs --target-noise HU (or --reference, whose noise is matched)"
        )
    if pick == "sharpest-below" and "noise_ceiling" not in opts:
        raise InputError("--pick sharpest-below needs --noise-ceiling HU")
    return opts


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How :func:`ctdid.runner.run_did` makes and writes the candidates; checked when made.

    Every option is keyword-only; ``run.json`` records them (:meth:`config`) and a resumed
    run must give the same ones. The candidates are ordered high resolution -> default ->
    low noise.

    Parameters
    ----------
    mode : {"robust", "faithful", "fast"}
        Engine mode, see :class:`ctdid.core.InteractiveDenoiser`. Default ``"robust"``.
    method : {"did", "auto", "blend", "iterate", "interp", "tv", "bm3d"}
        What makes the candidates: the DID engine (default here; ``ctdid run`` defaults to
        ``"auto"``), ``"auto"`` (per side the better of DID and the blend / iterate
        baselines by the comparison harness's packaged verdict,
        :func:`ctdid.runner.curve_choice.choose_curve`; DID on both sides in the faithful
        mode) or one of its baselines
        (:class:`ctdid.baselines.BaselineDenoiser`: pixel blends x <-> y0 <-> t_low, the
        iterates of the model, weights interpolated toward DID's end weights (DID runs in
        ``mode`` first), or TV / BM3D sweeps of the input). Every method writes the same
        result folder; ``run.json`` records it under ``config.method``. Baselines run each
        slice of a volume on its own at the strengths ``0, +-i / n_candidates`` (``shared``
        does not apply).
    k : int
        Times the model is applied for the low-noise bound. Default 3.
    n_candidates : int
        Candidates per direction (robust/fast); the run makes about ``2 n + 1``. Default 8.
    seed : int
        Seed of the engine (the positions of the training crops). Default 0.
    shared : bool
        Volumes (z > 1): one trajectory for the whole scan (default), so a strength means
        the same tradeoff on every slice: the engine fine-tunes on ``train_slices`` evenly
        spaced slices, each candidate's weights are saved
        (``candidates/cNNN.weights.safetensors``), then each candidate volume is rendered
        ``batch_size`` slices at a time into a memory map. Strengths are measured on the
        whole volume, as :meth:`ctdid.core.InteractiveDenoiser.run_volume` does.
        False: one trajectory per slice; each slice's candidates are interpolated
        (:func:`ctdid.core.interpolate`) at the strengths ``0, +-coverage * i / n_candidates``
        (fixed before the first slice) and written as soon as the slice is done; a slice
        whose trajectory stopped short of a strength gives its last candidate there
        (``run.json``: ``engine.per_slice[i].reach`` and ``engine.clamped``).
    pick : {"detect", "match-noise", "sharpest-below"}, optional
        Choose one candidate for this task from its labels
        (:func:`ctdid.metrics.pick_candidate`) and record it in ``picks.json``.
    pick_options : mapping, optional
        ``diameter_mm`` and ``contrast_hu`` (detect, default 5 mm and 10 HU), ``eye``,
        ``target_noise`` in HU (match-noise; default the reference's noise),
        ``noise_ceiling`` in HU (sharpest-below; required). ``None`` values are dropped.
    export : sequence of str or str
        Formats (``dicom``, ``nifti``, ``png``, ``numpy``, ``tiff``, ``metaimage``; also
        ``"dicom,nifti"``) in which to write the picked candidate (the default one without
        ``pick``) under ``exports/``. DICOM is a derived series of a DICOM input.
    window : (float, float)
        Display window (low, high) in HU for the montage, PNG and DICOM exports. Default
        (-160, 240).
    overwrite : bool
        Replace an existing result folder's contents.
    resume : bool
        Continue an interrupted run in the result folder (see :func:`ctdid.runner.run_did`).
        Excludes ``overwrite``.
    engine_options : mapping, optional
        Further options of :class:`ctdid.core.did.DIDOptions` (``coverage``,
        ``step_progress``, ``time_budget``, ``max_steps``, ...); ``keep_weights`` is set by
        the run and dropped here.
    train_slices : int
        Volumes, shared trajectory: evenly spaced slices the weights are fine-tuned on.
        Default 8.
    batch_size : int
        Volumes: slices per forward pass when rendering candidate volumes (and per unit of
        progress saved for a resume). Default 8.
    previews : bool
        Method ``"did"`` on a single slice: as soon as the default exists, write preview
        images (pixel blends ``(1 - |s|) y0 + |s| x`` toward the input and
        ``(1 - s) y0 + s t_low`` toward the low-noise bound at ``s = +-i / n_candidates``;
        :meth:`ctdid.core.InteractiveDenoiser.iter_candidates`) to ``previews/``, listed under
        ``previews`` in ``run.json``, before the fine-tuning starts; each DID candidate then
        replaces the previews of its side it has reached, and the rest go when the engine
        ends. True: a slider over the whole range within milliseconds of the default, at the
        cost of writing ``2 n`` more images; the finished folder is the same either way
        (``run.json`` adds ``previews_shown``). A volume's shared trajectory lists the same
        previews without files (``"on_demand": true``): a viewer renders the slice it shows
        from the input, the default and t_low; they go when the fine-tuning ends. Other
        methods and per-slice runs make no previews. Not compared on resume. Default False
        (``ctdid run`` turns it on).

    Raises
    ------
    InputError
        An unknown mode, method, pick task, pick option or export format; a bad window;
        ``train_slices`` or ``batch_size`` below 1; ``resume`` with ``overwrite``. (Options
        of the engine are checked when the engine is built; a pick target that depends on
        the reference when the run starts.)
    """

    mode: str = "robust"
    method: str = "did"
    k: int = 3
    n_candidates: int = 8
    seed: int = 0
    shared: bool = True
    pick: str | None = None
    pick_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    export: Sequence[str] | str = ()
    window: tuple[float, float] = (-160.0, 240.0)
    overwrite: bool = False
    resume: bool = False
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train_slices: int = 8
    batch_size: int = 8
    previews: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}; use {', '.join(MODES)}")
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; use {', '.join(METHODS)}")
        low, high = float(self.window[0]), float(self.window[1])
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise InputError(f"window must be LOW,HIGH with HIGH > LOW, got {self.window!r}")
        set_ = object.__setattr__
        set_(self, "window", (low, high))
        set_(self, "export", parse_exports(self.export))
        set_(self, "pick_options", check_pick(self.pick, self.pick_options, has_reference=True))
        engine_options = dict(self.engine_options or {})
        engine_options.pop("keep_weights", None)
        set_(self, "engine_options", engine_options)
        _check_count("train_slices", self.train_slices)
        _check_count("batch_size", self.batch_size)
        if not isinstance(self.previews, bool | np.bool_):
            raise InputError(f"previews must be True or False, got {self.previews!r}")
        set_(self, "previews", bool(self.previews))
        if self.resume and self.overwrite:
            raise InputError(
                "resume and overwrite exclude each other (resume continues the run in the "
                "folder, overwrite starts it again)"
            )

    @property
    def curve(self) -> CurveChoice:
        """The method of each side (``auto`` resolved by the harness's verdict)."""
        return choose_curve(self.method, self.mode)

    @property
    def exports(self) -> tuple[str, ...]:
        """The export formats, normalised (``export`` after :func:`parse_exports`)."""
        return tuple(self.export)

    def config(self, *, per_slice: bool, reference: bool, roi: bool) -> dict[str, Any]:
        """The options as ``run.json`` records them under ``config`` (compared on resume).

        ``previews`` is not among them: it changes what is shown while the run goes, not the
        result (a run with previews resumes one without, and the other way round).

        For ``method="auto"`` the resolved sides are recorded too (``"auto:high+low"``), so
        that a run is not resumed with another curve after the packaged verdict changed.
        """
        method = self.method
        if method == "auto":
            curve = self.curve
            method = f"auto:{curve.high}+{curve.low}"
        return {
            "mode": self.mode,
            "method": method,
            "k": int(self.k),
            "n_candidates": int(self.n_candidates),
            "seed": int(self.seed),
            "trajectory": "per-slice" if per_slice else "shared",
            "window_hu": list(self.window),
            "pick": self.pick,
            "pick_options": dict(self.pick_options),
            "export": list(self.exports),
            "engine_options": dict(self.engine_options),
            "reference": reference,
            "roi": roi,
            "train_slices": int(self.train_slices),
            "batch_size": int(self.batch_size),
        }
