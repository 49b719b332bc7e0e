"""Per-op samplers: one seeded draw of a complete, typical spec for every sampled op.

Each sampler takes ``(rng, cfg)`` (a ``numpy.random.Generator`` and an
:class:`icdlib.edits.EditConfig`) and returns ``(spec, keep)``: the spec, and a rough
estimate of the share of the source it leaves visible (crop area, uncovered share,
rotation corners...), which the ``chains`` recipe spends against its keep budget. Both
recipes (:mod:`icdlib.edits.chains`, :mod:`icdlib.edits.recipe`) and the explorer's
"add edit" button draw from :data:`SAMPLERS`, so an op's typical strength is defined once.
"""

from __future__ import annotations

import math

WORDS = (
    "lol", "wow", "omg", "so true", "me irl", "sale", "new", "free", "when you", "nope",
    "hello", "2021", "best day", "look", "mood", "epic", "#tbt", "classic", "yes", "why",
)


def uniform(rng, lo, hi) -> float:
    """One float drawn uniformly from ``[lo, hi)`` (``rng.uniform``: one draw of ``rng``)."""
    return float(rng.uniform(lo, hi))


def one_of(rng, options):
    """``options[k]`` for a uniform ``k``: the same draw as ``rng.choice(options)`` (which
    takes ``rng.integers(len(options))``), without building an array of the options."""
    return options[int(rng.integers(len(options)))]


def draw_seed(rng) -> int:
    """A seed for an op's own randomness (noise, donor picks): an int in ``[0, 2**31 - 1)``, one draw of ``rng``."""
    return int(rng.integers(0, 2**31 - 1))


def _color(rng) -> list[int]:
    return [int(v) for v in rng.integers(0, 256, 3)]


def _rot_keep(deg: float) -> float:
    return 1.0 - 0.35 * abs(math.sin(math.radians(deg)))


def _crop(rng, cfg):
    a, r = uniform(rng, *cfg.crop_area), math.exp(uniform(rng, -0.7, 0.7))
    bw, bh = min(1.0, math.sqrt(a * r)), min(1.0, math.sqrt(a / r))
    spec = {"op": "crop", "left": uniform(rng, 0, 1 - bw), "top": uniform(rng, 0, 1 - bh), "width": bw, "height": bh}
    return spec, bw * bh


def _rrc(rng, cfg):
    a = uniform(rng, *cfg.crop_area)
    spec = {"op": "random_resized_crop", "area": a, "ratio": math.exp(uniform(rng, -0.4, 0.4)),
            "x": uniform(rng, 0, 1), "y": uniform(rng, 0, 1), "resample": "bilinear"}
    return spec, a


def _rotate(rng, cfg):
    deg, expand = uniform(rng, -cfg.rotate_max, cfg.rotate_max), bool(rng.random() < 0.5)
    spec = {"op": "rotate", "degrees": deg, "expand": expand, "fill": [0, 0, 0], "resample": "bilinear"}
    return spec, 1.0 if expand else _rot_keep(deg)


def _affine(rng, cfg):
    s, deg = uniform(rng, 0.8, 1.25), uniform(rng, -cfg.rotate_max / 4, cfg.rotate_max / 4)
    sh = uniform(rng, -cfg.shear_max, cfg.shear_max)
    tx, ty = uniform(rng, -0.1, 0.1), uniform(rng, -0.1, 0.1)
    horizontal = bool(rng.random() < 0.5)
    spec = {"op": "affine", "degrees": deg, "scale": s, "shear_x": sh if horizontal else 0.0,
            "shear_y": 0.0 if horizontal else sh, "translate_x": tx, "translate_y": ty,
            "fill": [0, 0, 0], "resample": "bilinear"}
    keep = min(1.0, 1 / s**2) * _rot_keep(deg) * (1 - abs(tx)) * (1 - abs(ty)) * (1 - abs(sh) / 180)
    return spec, keep


def _perspective(rng, cfg):
    d = cfg.perspective_max
    offs = [uniform(rng, -d, d) for _ in range(8)]
    return {"op": "perspective", "offsets": offs, "fill": [0, 0, 0], "resample": "bilinear"}, 1 - 1.5 * d


def _pad(rng, cfg):
    sides = [uniform(rng, 0, 0.3) if rng.random() < 0.6 else 0.0 for _ in range(4)]
    spec = {"op": "pad", "left": sides[0], "top": sides[1], "right": sides[2], "bottom": sides[3],
            "color": _color(rng) if rng.random() < 0.5 else [0, 0, 0]}
    return spec, 1.0


def _paste_onto(rng, cfg):
    lo = min(1.0, 1.0 - cfg.occlusion_threshold + 0.1)
    spec = {"op": "paste_onto", "canvas_w": uniform(rng, 1.2, 2.0), "canvas_h": uniform(rng, 1.2, 2.0),
            "area": uniform(rng, *cfg.paste_area), "x": uniform(rng, 0, 1), "y": uniform(rng, 0, 1),
            "opacity": uniform(rng, lo, 1.0), "background": "donor" if rng.random() < 0.85 else "color",
            "color": _color(rng), "seed": draw_seed(rng), "resample": "bilinear"}
    return spec, 1.0


def _covering(rng, cfg, op, area_keep=1.0, **extra):
    area, opacity = uniform(rng, *cfg.cover_area), uniform(rng, 0.3, 1.0)
    spec = {"op": op, "area": area, "ratio": math.exp(uniform(rng, -0.7, 0.7)), "x": uniform(rng, 0, 1),
            "y": uniform(rng, 0, 1), "opacity": opacity, **extra, "seed": draw_seed(rng)}
    # translucent layers still count: they compound with later ones (see Context.weight)
    return spec, 1.0 - area * area_keep * min(1.0, opacity / cfg.occlusion_threshold)


def _paste_object(rng, cfg):
    shape = "ellipse" if rng.random() < 0.6 else "polygon"
    bw, bh = uniform(rng, 0.6, 0.95), uniform(rng, 0.6, 0.95)
    spec = {"op": "paste_object", "shape": shape, "box_x": uniform(rng, 0, 1 - bw), "box_y": uniform(rng, 0, 1 - bh),
            "box_w": bw, "box_h": bh, "degrees": uniform(rng, -30, 30), "scale": uniform(rng, 0.5, 1.0),
            "x": uniform(rng, 0.4, 0.6), "y": uniform(rng, 0.4, 0.6), "canvas_w": uniform(rng, 1.0, 1.6),
            "canvas_h": uniform(rng, 1.0, 1.6), "opacity": uniform(rng, 0.8, 1.0), "seed": draw_seed(rng),
            "resample": "bilinear"}
    return spec, bw * bh * (math.pi / 4 if shape == "ellipse" else 0.6)


def _collage(rng, cfg):
    while True:
        rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        if rows * cols >= 2:
            break
    spec = {"op": "collage", "rows": rows, "cols": cols, "index": int(rng.integers(rows * cols)),
            "tile_scale": uniform(rng, 0.3, 0.6), "gap": uniform(rng, 0.0, 0.05), "color": _color(rng),
            "seed": draw_seed(rng), "resample": "bilinear"}
    return spec, 1.0


ERASE_AREA = (0.02, 0.33)  # random erasing as torchvision draws it by default: area share...
ERASE_RATIO = (0.3, 3.3)  # ...and width/height, log-uniform


def _erase(rng, cfg):
    area = uniform(rng, *ERASE_AREA)
    spec = {"op": "erase", "area": area, "ratio": math.exp(uniform(rng, *(math.log(r) for r in ERASE_RATIO))),
            "x": uniform(rng, 0, 1), "y": uniform(rng, 0, 1), "color": [0, 0, 0]}
    return spec, 1.0 - area


def _words(rng, n_max=3) -> str:
    return " ".join(str(w) for w in rng.choice(WORDS, int(rng.integers(1, n_max + 1))))


def _frame(rng, cfg):
    dark = bool(rng.random() < 0.5)
    spec = {"op": "frame", "style": "meme" if rng.random() < 0.6 else "screenshot",
            "top": uniform(rng, 0.08, 0.25), "bottom": uniform(rng, 0.0, 0.2), "border": uniform(rng, 0.0, 0.08),
            "text_top": _words(rng), "text_bottom": _words(rng),
            "bar_color": [0, 0, 0] if dark else [255, 255, 255],
            "text_color": [255, 255, 255] if dark else [0, 0, 0], "resample": "bilinear"}
    return spec, 1.0


def _text(rng, cfg):
    size, txt = uniform(rng, 0.06, 0.2), _words(rng)
    spec = {"op": "text", "text": txt, "x": uniform(rng, 0, 0.6), "y": uniform(rng, 0, 0.85), "size": size,
            "color": _color(rng), "opacity": uniform(rng, 0.4, 1.0)}
    return spec, 1.0 - min(0.4, 0.4 * size * size * len(txt))


def _sticker(rng, cfg):
    size = uniform(rng, 0.1, 0.35)
    spec = {"op": "sticker", "kind": one_of(rng, ("circle", "face", "star", "heart")),
            "x": uniform(rng, 0.05, 0.95), "y": uniform(rng, 0.05, 0.95), "size": size,
            "degrees": uniform(rng, -45, 45), "color": _color(rng), "opacity": uniform(rng, 0.5, 1.0)}
    return spec, 1.0 - 0.8 * size * size


def _stripes(rng, cfg):
    thick, opacity = uniform(rng, 0.05, 0.3), uniform(rng, 0.2, 0.9)
    spec = {"op": "stripes", "count": int(rng.integers(4, 21)), "thickness": thick,
            "degrees": uniform(rng, -90, 90), "phase": uniform(rng, 0, 1), "color": _color(rng), "opacity": opacity}
    return spec, 1.0 - thick * min(1.0, opacity / cfg.occlusion_threshold)


_SHUFFLES = ("rbg", "grb", "gbr", "brg", "bgr")
SAMPLERS = {
    # geometric
    "crop": _crop,
    "random_resized_crop": _rrc,
    "scale": lambda rng, cfg: ({"op": "scale", "factor": uniform(rng, *cfg.scale_range), "resample": "bilinear"}, 1.0),
    "aspect": lambda rng, cfg: ({"op": "aspect", "ratio": math.exp(uniform(rng, -0.7, 0.7)),
                                 "resample": "bilinear"}, 1.0),
    "hflip": lambda rng, cfg: ({"op": "hflip"}, 1.0),
    "vflip": lambda rng, cfg: ({"op": "vflip"}, 1.0),
    "rotate": _rotate,
    "affine": _affine,
    "perspective": _perspective,
    "pad": _pad,
    "pad_square": lambda rng, cfg: ({"op": "pad_square", "position": uniform(rng, 0, 1), "color": _color(rng)}, 1.0),
    # composite
    "paste_onto": _paste_onto,
    "paste_over": lambda rng, cfg: _covering(rng, cfg, "paste_over"),
    "paste_object": _paste_object,
    "collage": _collage,
    "frame": _frame,
    # overlay
    "text": _text,
    "sticker": _sticker,
    "stripes": _stripes,
    "overlay_image": lambda rng, cfg: _covering(
        rng, cfg, "overlay_image", math.pi / 4, shape=one_of(rng, ("rect", "ellipse"))),
    "erase": _erase,
    # photometric (keep everything)
    "color_jitter": lambda rng, cfg: ({"op": "color_jitter", "brightness": uniform(rng, 0.6, 1.4),
                                       "contrast": uniform(rng, 0.6, 1.4), "saturation": uniform(rng, 0.5, 1.5),
                                       "hue": uniform(rng, -0.1, 0.1)}, 1.0),
    "brightness_contrast": lambda rng, cfg: ({"op": "brightness_contrast", "brightness": uniform(rng, 0.6, 1.4),
                                              "contrast": uniform(rng, 0.6, 1.4)}, 1.0),
    "grayscale": lambda rng, cfg: ({"op": "grayscale"}, 1.0),
    "invert": lambda rng, cfg: ({"op": "invert"}, 1.0),
    "blur": lambda rng, cfg: ({"op": "blur", "radius": uniform(rng, 0.003, 0.02)}, 1.0),
    "sharpen": lambda rng, cfg: ({"op": "sharpen", "amount": uniform(rng, 1.5, 4.0)}, 1.0),
    "edge_enhance": lambda rng, cfg: ({"op": "edge_enhance"}, 1.0),
    "noise": lambda rng, cfg: ({"op": "noise", "sigma": uniform(rng, 3, 25), "seed": draw_seed(rng)}, 1.0),
    "jpeg": lambda rng, cfg: ({"op": "jpeg", "quality": one_of(rng, (10, 20, 30, 50, 75))}, 1.0),
    "posterize": lambda rng, cfg: ({"op": "posterize", "bits": int(rng.integers(3, 7))}, 1.0),
    "solarize": lambda rng, cfg: ({"op": "solarize", "threshold": int(rng.integers(96, 225))}, 1.0),
    "pixelize": lambda rng, cfg: ({"op": "pixelize", "block": uniform(rng, 0.01, 0.04)}, 1.0),
    "channel_shuffle": lambda rng, cfg: ({"op": "channel_shuffle", "order": str(one_of(rng, _SHUFFLES))}, 1.0),
    "sepia": lambda rng, cfg: ({"op": "sepia"}, 1.0),
}
