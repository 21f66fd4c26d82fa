"""DICOM unique identifiers (UIDs) made by ctdid.

ctdid has no registered UID root, so it uses the ``2.25`` arc (ISO/IEC 9834-8, DICOM PS3.5
B.2): a UID is ``2.25.`` followed by the decimal value of a 128-bit UUID. Such UIDs are at most
44 characters long and need no registration.

:func:`derive_uid` makes a *deterministic* UID from its inputs (a name-based UUID, like UUID
version 5, in a namespace of ctdid's own), so that writing the same output from the same source
twice gives the same UIDs; :func:`new_uid` makes a random one.
"""

from __future__ import annotations

import hashlib
import re
import uuid

__all__ = ["UID_ROOT", "derive_uid", "is_valid_uid", "new_uid"]

#: The root every ctdid UID starts with (UUID-derived UIDs, DICOM PS3.5 B.2).
UID_ROOT = "2.25."

# Namespace of ctdid's name-based UUIDs: fixed forever, or reruns would stop giving the same UIDs.
_NAMESPACE = uuid.UUID("3f0c7a52-6d1e-5b8e-9a43-c7d1d0c0ffee")

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def derive_uid(*parts: str) -> str:
    """A deterministic DICOM UID made from ``parts``.

    The same parts always give the same UID; any change to any part (or to their number or
    order) gives another one. Parts are joined unambiguously (length-prefixed), so
    ``derive_uid("a.b", "c")`` differs from ``derive_uid("a", "b.c")``.

    Parameters
    ----------
    *parts : str
        At least one string, e.g. a source SOP Instance UID and a description of the output.

    Returns
    -------
    str
        ``2.25.<decimal of a name-based 128-bit UUID>``: at most 44 characters, digits and dots
        only, no component with a leading zero.

    Raises
    ------
    ValueError
        If no part is given.
    TypeError
        If a part is not a ``str`` (to keep results stable, callers serialise values
        themselves, e.g. with ``json.dumps(..., sort_keys=True)``).
    """
    if not parts:
        raise ValueError("derive_uid needs at least one part")
    h = hashlib.sha256(_NAMESPACE.bytes)
    for i, part in enumerate(parts):
        if not isinstance(part, str):
            raise TypeError(f"derive_uid part {i} is {type(part).__name__}, not str")
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    # Like uuid5, but with SHA-256: keep 128 bits and set the RFC 4122 variant and version 5.
    u = uuid.UUID(bytes=h.digest()[:16], version=5)
    return UID_ROOT + str(u.int)


def new_uid() -> str:
    """A new random DICOM UID, ``2.25.<decimal of a random UUID (version 4)>``."""
    return UID_ROOT + str(uuid.uuid4().int)


def is_valid_uid(uid: str) -> bool:
    """Whether ``uid`` is a valid DICOM UID (PS3.5 9.1): 1-64 characters, digits and dots,
    components without leading zeros."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and _UID_RE.match(uid) is not None
