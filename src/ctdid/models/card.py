"""Model cards: what a denoiser's weights are, how to use them, and where they came from.

A card is a small YAML or JSON file next to the weights. It says which architecture to build
(and with which options), how HU map to network units, what the network was trained on, and
the SHA-256 of the weights file so that a corrupted or swapped file is caught.

Examples
--------
>>> card = ModelCard(name="demo", architecture="compact-unet", hu_offset=-1000.0,
...                  hu_scale=1000.0)
>>> card.save("demo.card.yaml")                                    # doctest: +SKIP
>>> ModelCard.load("demo.card.yaml") == card                       # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctdid.errors import InputError
from ctdid.io.structured import STRUCTURED_SUFFIXES, read_structured, write_structured

__all__ = ["CARD_SUFFIXES", "ModelCard", "sha256_file"]

#: File name endings read and written as cards (YAML or JSON).
CARD_SUFFIXES = STRUCTURED_SUFFIXES

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("name", "architecture", "hu_offset", "hu_scale")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Description of a trained denoiser.

    Parameters
    ----------
    name : str
        Short name of the model (the shipped name, for shipped models).
    architecture : str
        Factory that builds the network: a key of ``ctdid.models.MODEL_FACTORIES``
        (``"compact-unet"``, ...) or a ``package.module:factory`` / ``file.py:factory`` spec.
    hu_offset : float
        HU value mapped to 0 in network units.
    hu_scale : float
        HU per network unit, > 0 (``net = (HU - hu_offset) / hu_scale``).
    architecture_config : dict, optional
        Keyword arguments of the factory.
    residual : bool, optional
        True if the network outputs the noise and the denoised image is ``x - net(x)``.
        False (default) if it outputs the denoised image (ctdid's own models subtract their
        noise estimate internally).
    size_multiple : int, optional
        Height and width the network needs to be multiples of (>= 1). Default 1.
    training_dose : float, optional
        Dose of the training inputs as a fraction of the reference dose, in (0, 1].
    kernel : str, optional
        Reconstruction kernel of the training data (e.g. ``"B30"``, ``"ramp"``).
    training_data : str, optional
        Free description of the training data and its provenance.
    licence : str, optional
        Licence of the weights (SPDX identifier where possible).
    weights_sha256 : str, optional
        Lower-case hex SHA-256 of the weights file; checked when the weights are loaded.
    metrics : dict, optional
        Evaluation results (name -> value), units in the names (e.g. ``"rmse_hu"``).
    training_config : dict, optional
        Hyper-parameters of the training run.
    notes : str, optional
        Anything else.

    Raises
    ------
    InputError
        If a field has the wrong type or an invalid value.
    """

    name: str
    architecture: str
    hu_offset: float
    hu_scale: float
    architecture_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    residual: bool = False
    size_multiple: int = 1
    training_dose: float | None = None
    kernel: str | None = None
    training_data: str = ""
    licence: str = ""
    weights_sha256: str | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    training_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ conversion

    def to_dict(self) -> dict[str, Any]:
        """The card as a plain, JSON/YAML-serialisable dict (field name -> value)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> ModelCard:
        """Build a card from a mapping, as read from a card file.

        Parameters
        ----------
        data : mapping
            Field name -> value. ``name``, ``architecture``, ``hu_offset`` and ``hu_scale`` are
            required; unknown fields are rejected (they are usually typos).
        path : str or path-like, optional
            The file the mapping came from, named in errors.

        Raises
        ------
        InputError
            Naming ``path`` and the missing, unknown or invalid field.
        """
        if not isinstance(data, Mapping):
            raise InputError(
                f"a model card must be a mapping of fields, got {type(data).__name__}", path=path
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise InputError(f"model card lacks required field(s): {', '.join(missing)}", path=path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(
                f"model card has unknown field(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})",
                path=path,
            )
        try:
            return cls(**{str(k): v for k, v in data.items()})
        except InputError as exc:
            raise InputError(exc.problem, path=path) from None

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a card from a ``.yaml``/``.yml`` or ``.json`` file.

        Raises
        ------
        InputError
            If the file is missing, not valid YAML/JSON, or the card is invalid.
        """
        p = Path(path)
        data = read_structured(p, what="model card")
        return cls.from_dict(data, path=p)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the card as YAML (``.yaml``/``.yml``) or JSON (``.json``), atomically.

        Parameters
        ----------
        path : str or path-like
            Output file; its ending chooses the format.
        overwrite : bool, optional
            Replace an existing file. Default false.

        Returns
        -------
        Path
            The absolute path written.

        Raises
        ------
        InputError
            If the ending is not a card ending.
        OutputExistsError
            If ``path`` exists and ``overwrite`` is false.
        """

        return write_structured(self.to_dict(), path, what="model card", overwrite=overwrite)

    def verify_weights(self, path: str | os.PathLike[str]) -> None:
        """Check the weights file against :attr:`weights_sha256` (no check if it is unset).

        Raises
        ------
        InputError
            Naming the weights file, if its SHA-256 differs from the card's.
        """
        if self.weights_sha256 is None:
            return
        actual = sha256_file(path)
        if actual != self.weights_sha256:
            raise InputError(
                f"weights do not match model card {self.name!r}: SHA-256 is {actual}, "
                f"the card expects {self.weights_sha256} (corrupted or wrong file?)",
                path=path,
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field_error(field: str, problem: str, value: Any) -> InputError:
    return InputError(f"model card field {field!r} {problem}, got {value!r}")


def _validate(card: ModelCard) -> None:
    for field in ("name", "architecture"):
        value = getattr(card, field)
        if not isinstance(value, str) or not value.strip():
            raise _field_error(field, "must be a non-empty string", value)
    for field in ("training_data", "licence", "notes"):
        value = getattr(card, field)
        if not isinstance(value, str):
            raise _field_error(field, "must be a string", value)
    if card.kernel is not None and not isinstance(card.kernel, str):
        raise _field_error("kernel", "must be a string or null", card.kernel)
    for field in ("architecture_config", "metrics", "training_config"):
        value = getattr(card, field)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _field_error(field, "must be a mapping with string keys", value)
    if not _is_number(card.hu_offset) or not math.isfinite(card.hu_offset):
        raise _field_error("hu_offset", "must be a finite number (HU)", card.hu_offset)
    if not _is_number(card.hu_scale) or not (math.isfinite(card.hu_scale) and card.hu_scale > 0):
        raise _field_error("hu_scale", "must be a finite number > 0 (HU per unit)", card.hu_scale)
    if not isinstance(card.residual, bool):
        raise _field_error("residual", "must be true or false", card.residual)
    if (
        not isinstance(card.size_multiple, int)
        or isinstance(card.size_multiple, bool)
        or card.size_multiple < 1
    ):
        raise _field_error("size_multiple", "must be an integer >= 1", card.size_multiple)
    dose = card.training_dose
    if dose is not None and not (_is_number(dose) and 0 < dose <= 1):
        raise _field_error("training_dose", "must be a fraction in (0, 1] or null", dose)
    sha = card.weights_sha256
    if sha is not None and not (isinstance(sha, str) and _SHA_RE.match(sha)):
        raise _field_error("weights_sha256", "must be 64 lower-case hex digits or null", sha)
