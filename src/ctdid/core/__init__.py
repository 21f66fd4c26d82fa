"""Pure torch/numpy algorithms of ctdid: the DID engine, candidate stacks and the HU adapter.

Nothing here reads or writes files, prints, or imports the other ctdid sub-packages.
"""

from ctdid.core.adapter import HUAdapter
from ctdid.core.body import body_mask
from ctdid.core.candidates import Candidate, CandidateStack, interpolate
from ctdid.core.did import DIDOptions, InteractiveDenoiser

__all__ = [
    "Candidate",
    "CandidateStack",
    "DIDOptions",
    "HUAdapter",
    "InteractiveDenoiser",
    "body_mask",
    "interpolate",
]
