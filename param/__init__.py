"""Image parameterisations: modules whose forward returns images ``[B, 3, H, W]`` in ``[0, 1]``."""

from studio.param.colour import COLOR_CORRELATION_SVD_SQRT, ColourSpace
from studio.param.fourier import FourierLatent, rfft_frequencies
from studio.param.image import ImageParam, image
from studio.param.pixel import PixelLatent

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "ColourSpace",
    "FourierLatent",
    "ImageParam",
    "PixelLatent",
    "image",
    "rfft_frequencies",
]
