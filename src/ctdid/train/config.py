"""Training configuration: one dataclass, saved and loaded as JSON or YAML.

Examples
--------
>>> cfg = TrainConfig(name="compact-ld25", dataset="pairs", dose=0.25)
>>> cfg.save("compact-ld25.config.json")                              # doctest: +SKIP
>>> TrainConfig.load("compact-ld25.config.json") == cfg                 # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctdid.errors import InputError
from ctdid.io.structured import read_structured, write_structured

__all__ = ["RESUME_IGNORED_FIELDS", "WEIGHTS_DTYPES", "TrainConfig"]

#: Fields that may change between a run and its resumption (they do not change the result).
RESUME_IGNORED_FIELDS = frozenset(
    {"checkpoint_every", "val_every", "log_every", "threads", "weights_dtype"}
)

#: Storage types of the written weights (the network always computes in float32).
WEIGHTS_DTYPES = ("float32", "float16")

_SUFFIXES = (".json", ".yaml", ".yml")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Parameters
    ----------
    name : str
        Model name; outputs are ``<name>.safetensors``, ``<name>.card.yaml``, ...
    dataset : str
        Pairs folder written by :func:`ctdid.train.pairs.make_pairs` or ``ctdid simulate``; the
        validation slices come from it.
    extra_datasets : list of str, optional
        More pairs folders, every slice of which is trained on (none is held out for
        validation). Default none.
    dataset_weights : list of float, optional
        Share of the training patches drawn from ``dataset`` and from each of
        ``extra_datasets``, in that order (relative; split equally over each folder's slices).
        Default None: every training slice equally likely, whatever folder it is in.
    architecture : str, optional
        Key of :data:`ctdid.models.MODEL_FACTORIES` or a ``module:factory`` spec.
        Default ``"compact-unet"``.
    model_config : dict, optional
        Keyword arguments of the architecture.
    dose : float, optional
        Dose fraction of the training inputs, in (0, 1). Default 0.25.
    hu_offset, hu_scale : float, optional
        Network units ``(HU - hu_offset) / hu_scale``. Default -1000 and 1000.
    iterations : int, optional
        Optimiser steps. Default 20000.
    batch_size : int, optional
        Patches per step. Default 4.
    patch : int, optional
        Patch size in pixels. Default 128.
    lr : float, optional
        Adam learning rate. Default 1e-4 (the paper's).
    lr_milestones : list of float, optional
        Fractions of ``iterations`` at which the rate is multiplied by ``lr_gamma``.
        Default [0.5, 0.75].
    lr_gamma : float, optional
        Default 0.1.
    augment : bool, optional
        Random flips and rotations. Default true.
    seed : int, optional
        Seed of the weights' initialisation, the patches and torch/numpy.
    checkpoint_every : int, optional
        Iterations between checkpoints. Default 500.
    val_every : int, optional
        Iterations between validations (also done at the end). Default 500.
    log_every : int, optional
        Iterations between training-loss log entries (mean over them). Default 10.
    val_files : list of str, optional
        Pair files for validation (full slices). Default: the last ``n_val`` of the dataset,
        which are then not trained on.
    n_val : int, optional
        Default 2.
    min_body_fraction : float, optional
        Fraction of body a patch needs. Default 0.5.
    test_low, test_normal : str, optional
        A real held-out pair (e.g. Mayo L506 quarter and full dose) evaluated with the
        validation; ``test_low`` is at ``test_dose`` and is rescaled to ``dose``.
    test_read : dict, optional
        Keyword arguments of :func:`ctdid.io.read_volume` for the test files (raw: ``shape``,
        ``dtype``, ``hu_offset``, ``spacing``).
    test_dose : float, optional
        Dose fraction of ``test_low``. Default 0.25.
    threads : int, optional
        torch CPU threads (default: torch's choice).
    weights_dtype : {"float32", "float16"}, optional
        Storage type of the floating-point tensors of ``<name>.safetensors`` (default
        ``"float32"``). ``"float16"`` halves the file; the weights are rounded once when written
        (relative error <= 2**-11) and loaded back as float32, so the network still computes in
        float32. Training and checkpoints are float32 either way; the card's training metrics
        are of the float32 weights before rounding.
    licence : str, optional
        Licence of the weights for the card. Default ``"MIT"``.
    notes : str, optional
        Card notes (e.g. the training data's terms).

    Raises
    ------
    InputError
        If a field has the wrong type or value.
    """

    name: str
    dataset: str
    extra_datasets: list[str] = dataclasses.field(default_factory=list)
    dataset_weights: list[float] | None = None
    architecture: str = "compact-unet"
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    dose: float = 0.25
    hu_offset: float = -1000.0
    hu_scale: float = 1000.0
    iterations: int = 20000
    batch_size: int = 4
    patch: int = 128
    lr: float = 1e-4
    lr_milestones: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.75])
    lr_gamma: float = 0.1
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 500
    val_every: int = 500
    log_every: int = 10
    val_files: list[str] | None = None
    n_val: int = 2
    min_body_fraction: float = 0.5
    test_low: str | None = None
    test_normal: str | None = None
    test_read: dict[str, Any] = dataclasses.field(default_factory=dict)
    test_dose: float = 0.25
    threads: int | None = None
    weights_dtype: str = "float32"
    licence: str = "MIT"
    notes: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value, JSON/YAML-serialisable."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> TrainConfig:
        """Build a config from a mapping; unknown fields are rejected.

        Raises
        ------
        InputError
            Naming ``path`` and the missing, unknown or invalid field.
        """
        if not isinstance(data, Mapping):
            raise InputError(
                f"a training config must be a mapping, got {type(data).__name__}", path=path
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(
                f"training config has unknown field(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})",
                path=path,
            )
        missing = [k for k in ("name", "dataset") if k not in data]
        if missing:
            raise InputError(f"training config lacks field(s): {', '.join(missing)}", path=path)
        try:
            return cls(**{str(k): v for k, v in data.items()})
        except InputError as exc:
            raise InputError(exc.problem, path=path) from None

    @staticmethod
    def read_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The raw mapping of a ``.json``/``.yaml``/``.yml`` file (for partial configs).

        Raises
        ------
        InputError
            Missing or unparsable file, or not a mapping.
        """
        p = Path(path)
        data = read_structured(p, what="training config")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError("training config must be a mapping of fields", path=p)
        return data

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a config from a ``.json``, ``.yaml`` or ``.yml`` file.

        Raises
        ------
        InputError
            Missing or unparsable file, or an invalid config.
        """
        return cls.from_dict(cls.read_mapping(path), path=path)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the config as JSON or YAML (chosen by the ending), atomically.

        Raises
        ------
        InputError
            Bad ending.
        OutputExistsError
            If ``path`` exists and ``overwrite`` is false.
        """
        return write_structured(self.to_dict(), path, what="training config", overwrite=overwrite)

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of fields that differ and matter for the result (resume check)."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if k not in RESUME_IGNORED_FIELDS and a[k] != b[k])


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_path(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _bad(field: str, problem: str, value: Any) -> InputError:
    return InputError(f"training config field {field!r} {problem}, got {value!r}")


def _validate(c: TrainConfig) -> None:
    for field in ("name", "dataset", "architecture"):
        v = getattr(c, field)
        if not isinstance(v, str) or not v.strip():
            raise _bad(field, "must be a non-empty string", v)
    if any(ch in c.name for ch in "/\\") or c.name.startswith("."):
        raise _bad("name", "must be a plain file name stem", c.name)
    if not (isinstance(c.extra_datasets, list) and all(_is_path(f) for f in c.extra_datasets)):
        raise _bad("extra_datasets", "must be a list of folder paths", c.extra_datasets)
    if c.dataset_weights is not None:
        w = c.dataset_weights
        if not (
            isinstance(w, list)
            and len(w) == 1 + len(c.extra_datasets)
            and all(_is_num(v) and v >= 0 for v in w)
            and sum(w) > 0
        ):
            raise _bad(
                "dataset_weights",
                f"must be null or {1 + len(c.extra_datasets)} numbers >= 0 (dataset, then "
                "each of extra_datasets) with a positive sum",
                w,
            )
    if not isinstance(c.model_config, dict) or not all(isinstance(k, str) for k in c.model_config):
        raise _bad("model_config", "must be a mapping with string keys", c.model_config)
    if not isinstance(c.test_read, dict):
        raise _bad("test_read", "must be a mapping", c.test_read)
    if not (_is_num(c.dose) and 0 < c.dose <= 1):
        raise _bad("dose", "must be a fraction in (0, 1]", c.dose)
    if not (_is_num(c.test_dose) and 0 < c.test_dose < 1):
        raise _bad("test_dose", "must be a fraction in (0, 1)", c.test_dose)
    if not _is_num(c.hu_offset):
        raise _bad("hu_offset", "must be a finite number (HU)", c.hu_offset)
    if not (_is_num(c.hu_scale) and c.hu_scale > 0):
        raise _bad("hu_scale", "must be a number > 0 (HU per unit)", c.hu_scale)
    for field in ("iterations", "batch_size", "patch", "checkpoint_every", "val_every"):
        v = getattr(c, field)
        if not (_is_int(v) and v >= 1):
            raise _bad(field, "must be an integer >= 1", v)
    if not (_is_int(c.log_every) and c.log_every >= 1):
        raise _bad("log_every", "must be an integer >= 1", c.log_every)
    if not (_is_int(c.n_val) and c.n_val >= 0):
        raise _bad("n_val", "must be an integer >= 0", c.n_val)
    if not _is_int(c.seed):
        raise _bad("seed", "must be an integer", c.seed)
    if c.threads is not None and not (_is_int(c.threads) and c.threads >= 1):
        raise _bad("threads", "must be an integer >= 1 or null", c.threads)
    if not (_is_num(c.lr) and c.lr > 0):
        raise _bad("lr", "must be a number > 0", c.lr)
    if not (_is_num(c.lr_gamma) and 0 < c.lr_gamma <= 1):
        raise _bad("lr_gamma", "must be in (0, 1]", c.lr_gamma)
    ms = c.lr_milestones
    if not isinstance(ms, list) or not all(_is_num(m) and 0 < m < 1 for m in ms):
        raise _bad("lr_milestones", "must be a list of fractions in (0, 1)", ms)
    if not isinstance(c.augment, bool):
        raise _bad("augment", "must be true or false", c.augment)
    if not (_is_num(c.min_body_fraction) and 0 <= c.min_body_fraction <= 1):
        raise _bad("min_body_fraction", "must be in [0, 1]", c.min_body_fraction)
    if c.val_files is not None and not (
        isinstance(c.val_files, list) and all(isinstance(f, str) for f in c.val_files)
    ):
        raise _bad("val_files", "must be a list of paths or null", c.val_files)
    if (c.test_low is None) != (c.test_normal is None):
        raise _bad("test_low/test_normal", "must be given together", (c.test_low, c.test_normal))
    if c.weights_dtype not in WEIGHTS_DTYPES:
        raise _bad("weights_dtype", f"must be one of {', '.join(WEIGHTS_DTYPES)}", c.weights_dtype)
    for field in ("licence", "notes"):
        if not isinstance(getattr(c, field), str):
            raise _bad(field, "must be a string", getattr(c, field))
