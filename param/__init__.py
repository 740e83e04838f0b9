"""Image parameterisations: modules whose forward returns images ``[B, C, *size]`` (2D or 3D) in ``[0, 1]``."""

from studio.param.colour import COLOR_CORRELATION_SVD_SQRT, ColourSpace, decorrelation_from
from studio.param.cppn import CppnLatent
from studio.param.fourier import FourierLatent, rfft_frequencies
from studio.param.image import PARAM_KINDS, ImageParam, image
from studio.param.maco import MacoLatent, natural_magnitude, power_law_magnitude
from studio.param.pixel import PixelLatent

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "PARAM_KINDS",
    "ColourSpace",
    "CppnLatent",
    "MacoLatent",
    "FourierLatent",
    "ImageParam",
    "decorrelation_from",
    "PixelLatent",
    "image",
    "natural_magnitude",
    "power_law_magnitude",
    "rfft_frequencies",
]
