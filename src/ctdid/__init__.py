"""ctdid: the Deep Interactive Denoiser for X-ray CT.

Puts a human back in control of deep-learning CT denoising: from one pretrained denoiser, make an
ordered set of candidate images along the noise-resolution tradeoff curve (Bai et al., arXiv
2011.14873) and let a person pick one per task.
"""

from ctdid.errors import CTDIDError, CTDIDWarning, InputError, OutputExistsError
from ctdid.volume import CTVolume

__version__ = "0.1.0"

__all__ = [
    "CTDIDError",
    "CTDIDWarning",
    "CTVolume",
    "InputError",
    "OutputExistsError",
    "__version__",
]
