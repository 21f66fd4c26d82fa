"""Exceptions raised by ctdid.

Every error a user can cause by giving bad input derives from :class:`CTDIDError`. The CLI turns
these into a single line (``ctdid: error: <path>: <problem>``) and exit status 2; anything else
is a bug and shows a traceback.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "CTDIDError",
    "CTDIDWarning",
    "InputError",
    "MissingDecoderError",
    "OutputExistsError",
    "SeriesSelectionError",
]


class CTDIDError(Exception):
    """Base class for every error caused by the user's input or options.

    Parameters
    ----------
    message : str
        What is wrong, in one line, in the user's terms.
    path : str or path-like, optional
        The file or folder the problem is in; prefixed to the message.
    """

    def __init__(self, message: str, *, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(CTDIDError):
    """An input file or folder cannot be read as a CT volume."""


class MissingDecoderError(InputError):
    """The pixel data are compressed with a transfer syntax no installed plug-in decodes."""


class SeriesSelectionError(InputError):
    """A folder holds several DICOM series and none, or an unknown one, was chosen."""


class OutputExistsError(CTDIDError):
    """An output already exists and ``overwrite`` was not given."""


class CTDIDWarning(UserWarning):
    """Something in the input is unusual but readable (missing slice, gantry tilt, ...).

    The message names the file or slice it concerns. The CLI prints each one on one line.
    """
