"""Decoded images in the mode a model trains on (``RGB`` or ``L``).

Transparent pixels (RGBA, LA, a palette or grey image with a transparent colour) are painted over a
background colour first (``data.background``, white by default). Dropping the alpha channel instead, as
``Image.convert("RGB")`` does, keeps whatever colour the invisible pixels happen to store: in many icon and
sprite sets that is the glyph's own colour, so every image would become one flat square.

Photos are turned upright by their EXIF orientation (phones store them sideways with a tag, which PIL does
not apply). 16-bit grey images (PNG, TIFF: modes ``I;16`` and ``I``) keep their top 8 bits, as torchvision's
``decode_png`` does: PIL's own conversion clips them at 255, which turns almost every pixel white.
"""

import numpy as np
from PIL import Image, ImageColor, ImageOps

from genlab.errors import ConfigError

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
ORIENTATION = 0x0112  # the EXIF tag


def background_colour(name: object) -> RGB:
    """``data.background`` as an RGB triple: a colour name (``white``, ``black``, ``gray``) or ``#rrggbb``."""
    try:
        return ImageColor.getrgb(str(name))[:3]
    except ValueError:
        raise ConfigError(
            f"data.background={name!r} is not a colour: use a name (white, black, gray) or a hex code ('#808080')"
        ) from None


def has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit grey image as 8-bit ``L`` (its top 8 bits); a 32-bit ``I`` image whose values stay within
    0-255 is kept as it is."""
    values = np.asarray(img, dtype=np.int64)
    if img.mode.startswith("I;16") or values.max() > 255:
        values = values >> 8
    return Image.fromarray(values.clip(0, 255).astype(np.uint8), "L")


def convert(img: Image.Image, mode: str, background: RGB = WHITE) -> Image.Image:
    """``img`` in ``mode``: upright, 16-bit grey scaled to 8 bits, transparent pixels flattened onto
    ``background``."""
    if img.getexif().get(ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode == "I" or img.mode.startswith("I;16"):
        img = to_8bit(img)
    if has_alpha(img):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba)
    return img.convert(mode)
