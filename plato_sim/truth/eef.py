"""Ensquared-energy fraction (EEF): the image-quality metric of the focus tests.

Definition (docs/facts.md, "Ensquared-energy fraction (EEF)"): on a background-subtracted image of
one star, find the 2x2-pixel box with the largest sum anywhere in the image; take the 10x10
box concentric with it (centred on the corner shared by its four pixels);
``EEF = sum(2x2) / sum(10x10)``.  Where the 10x10 box crosses the image border it is clipped.
"""

from __future__ import annotations

import numpy as np

from plato_sim.errors import ParameterError

__all__ = ["eef", "best_box"]


def best_box(image: np.ndarray, box: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest ``box x box`` sum of each image and the (row, column) of its first pixel.

    Args:
        image: ``(..., H, W)`` array.
        box: box side (pixels).

    Returns:
        ``(sums, rows, cols)`` with the leading shape of ``image``.
    """
    a = np.asarray(image, dtype=float)
    c = np.cumsum(np.cumsum(a, axis=-1), axis=-2)
    c = np.pad(c, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
    s = c[..., box:, box:] - c[..., :-box, box:] - c[..., box:, :-box] + c[..., :-box, :-box]
    flat = s.reshape(s.shape[:-2] + (-1,))
    k = np.argmax(flat, axis=-1)
    rows, cols = np.divmod(k, s.shape[-1])
    return np.take_along_axis(flat, k[..., None], axis=-1)[..., 0], rows, cols


def eef(image: np.ndarray, inner: int = 2, outer: int = 10) -> np.ndarray:
    """Ensquared-energy fraction of each image in ``(..., H, W)``.

    ``inner`` and ``outer`` are the box sides (pixels); both even or both odd, so that the
    boxes are concentric on a pixel grid (2/10 is the definition; 3/9 or 3/11 are variants).
    Returns NaN where the outer sum is not positive.
    """
    if (outer - inner) % 2:
        raise ParameterError("inner and outer boxes must have the same parity to be concentric")
    a = np.asarray(image, dtype=float)
    s_in, r, c = best_box(a, inner)
    m = (outer - inner) // 2
    h, w = a.shape[-2:]
    r0 = np.clip(r - m, 0, h)
    r1 = np.clip(r + inner + m, 0, h)
    c0 = np.clip(c - m, 0, w)
    c1 = np.clip(c + inner + m, 0, w)
    cs = np.cumsum(np.cumsum(a, axis=-1), axis=-2)
    cs = np.pad(cs, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])

    def at(rr, cc):
        idx = rr * (w + 1) + cc
        return np.take_along_axis(cs.reshape(cs.shape[:-2] + (-1,)), idx[..., None], axis=-1)[
            ..., 0
        ]

    s_out = at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s_out > 0, s_in / s_out, np.nan)
