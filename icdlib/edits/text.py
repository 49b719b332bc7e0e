"""Text rendering shared by the overlay and frame ops: Pillow's built-in scalable font."""

from __future__ import annotations

from functools import lru_cache

from PIL import ImageDraw, ImageFont


def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font at ``size`` pixels (at least 1).

    Loaded once per size and process (:func:`_font`): Pillow rebuilds the font from its
    embedded bytes on every ``load_default`` call, about 0.5 ms, where drawing is read-only.
    """
    return _font(max(1, int(size)))


@lru_cache(maxsize=512)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def draw_text_centered(draw: ImageDraw.ImageDraw, text: str, centre, size: int, fill, max_width: int):
    """Draw ``text`` centred at ``centre`` (x, y), shrinking the font to fit ``max_width``."""
    f = font(size)
    width = draw.textlength(text, font=f)
    if width > 0.95 * max_width:
        f = font(size * 0.95 * max_width / width)
    draw.text(centre, text, font=f, fill=fill, anchor="mm")
