"""Per-frame image-quality metrics of star stamps: the EEF and the test houses' variants.

* ``"2x2"`` -- the definition (docs/facts.md), :func:`plato_sim.truth.eef.eef`: best 2x2 box
  anywhere, over the 10x10 box concentric with it;
* ``"3x3"`` -- best 3x3 box inside that same 10x10 box (the one concentric with the best
  2x2 box), over the 10x10 sum;
* ``"8x8"`` -- the test houses' variant around the brightest pixel: the best of the four 2x2
  boxes that contain the brightest pixel, over the 8x8 box concentric with it.

Stamps must be background-subtracted (any unit: the ratio is unit-free).  A box crossing the
stamp border is clipped; a non-positive outer sum gives NaN.
"""

from __future__ import annotations

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.truth.eef import best_box, eef

__all__ = ["EEF_VARIANTS", "eef_2x2", "eef_3x3", "eef_8x8_brightest", "frame_eef", "box_sum"]

EEF_VARIANTS = ("2x2", "3x3", "8x8")


def _integral(a: np.ndarray) -> np.ndarray:
    c = np.cumsum(np.cumsum(a, axis=-1), axis=-2)
    return np.pad(c, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])


def box_sum(
    image: np.ndarray, row0: np.ndarray, col0: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Sum of each image ``(N, H, W)`` over the box starting at ``(row0, col0)`` (clipped)."""
    a = np.asarray(image, dtype=float)
    n, h, w = a.shape
    cs = _integral(a).reshape(n, -1)
    r0 = np.clip(row0, 0, h)
    r1 = np.clip(row0 + height, 0, h)
    c0 = np.clip(col0, 0, w)
    c1 = np.clip(col0 + width, 0, w)

    def at(rr, cc):
        return np.take_along_axis(cs, (rr * (w + 1) + cc)[:, None], axis=1)[:, 0]

    return at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)


def eef_2x2(stamps: np.ndarray) -> np.ndarray:
    """The EEF of docs/facts.md for each stamp in ``(N, H, W)`` (or one ``(H, W)``)."""
    return eef(stamps, 2, 10)


def eef_3x3(stamps: np.ndarray) -> np.ndarray:
    """Best 3x3 box within the 10x10 box concentric with the best 2x2 box, over the 10x10."""
    a = np.asarray(stamps, dtype=float)
    single = a.ndim == 2
    a = a[None] if single else a.reshape((-1,) + a.shape[-2:])
    _, r, c = best_box(a, 2)
    r0, c0 = r - 4, c - 4
    outer = box_sum(a, r0, c0, 10, 10)
    # every 3x3 box inside the 10x10 one: first pixels r0..r0+7, c0..c0+7 (clipped)
    cs = _integral(a)
    s3 = cs[:, 3:, 3:] - cs[:, :-3, 3:] - cs[:, 3:, :-3] + cs[:, :-3, :-3]
    rr = np.arange(s3.shape[1])[None, :, None]
    cc = np.arange(s3.shape[2])[None, None, :]
    inside = (rr >= r0[:, None, None]) & (rr <= r0[:, None, None] + 7)
    inside = inside & (cc >= c0[:, None, None]) & (cc <= c0[:, None, None] + 7)
    best = np.max(np.where(inside, s3, -np.inf), axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(outer > 0, best / outer, np.nan)
    shape = np.shape(stamps)[:-2]
    return out[0] if single else out.reshape(shape)


def eef_8x8_brightest(stamps: np.ndarray) -> np.ndarray:
    """Best 2x2 box containing the brightest pixel, over the 8x8 box concentric with it."""
    a = np.asarray(stamps, dtype=float)
    single = a.ndim == 2
    a = a[None] if single else a.reshape((-1,) + a.shape[-2:])
    n, h, w = a.shape
    k = np.argmax(a.reshape(n, -1), axis=1)
    pr, pc = np.divmod(k, w)
    best = np.full(n, -np.inf)
    br, bc = pr.copy(), pc.copy()
    for dr in (-1, 0):
        for dc in (-1, 0):
            s = box_sum(a, pr + dr, pc + dc, 2, 2)
            better = s > best
            best = np.where(better, s, best)
            br = np.where(better, pr + dr, br)
            bc = np.where(better, pc + dc, bc)
    outer = box_sum(a, br - 3, bc - 3, 8, 8)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(outer > 0, best / outer, np.nan)
    shape = np.shape(stamps)[:-2]
    return out[0] if single else out.reshape(shape)


def frame_eef(stamps: np.ndarray, variant: str = "2x2") -> np.ndarray:
    """EEF of each stamp with the named variant (``"2x2"``, ``"3x3"`` or ``"8x8"``)."""
    if variant == "2x2":
        return eef_2x2(stamps)
    if variant == "3x3":
        return eef_3x3(stamps)
    if variant == "8x8":
        return eef_8x8_brightest(stamps)
    raise ParameterError(f"unknown EEF variant {variant!r}; choose one of {EEF_VARIANTS}")
