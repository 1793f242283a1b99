"""Image moments of PSF stamps: what the field head reads beside the network's features.

Why.  The frozen FocusNet summarises a stamp in features learnt on one family's images; a
camera unlike it can change the image in ways those features do not separate from focus
(docs/cnn.md section 7).  A few model-free measurements of the same stamp -- how much light a
2x2 or 3x3 pixel box holds (the ensquared energy that the test houses fit), the stamp's size,
its elongation and asymmetry in the field's own radial frame -- are defined for any optics,
so the field head can read a through-focus series through both.

Definitions (per stamp; stamps in electrons, arrays ``[row, column] = [y, x]`` in focal-plane
orientation, the network's input contract; ``phi`` the field azimuth from the focal plane's
+x axis towards +y, docs/facts.md):

* background: the median of the stamp's outer ring of :data:`RING_PX` pixels, subtracted;
* the central ``crop`` x ``crop`` pixels, divided by their sum (the flux ``F``);
* a Gaussian weight of :data:`WEIGHT_SIGMA_PX` centred on the weighted centroid (three
  iterations from the crop's centre) gives the centroid and the weighted second moments
  ``Ixx, Iyy, Ixy`` (px^2), the fourth radial moment and the third moments along the field's
  radial direction ``u_r = dx cos(phi) + dy sin(phi)`` and across it;
* the columns of :data:`MOMENT_NAMES`: ``ee2``, ``ee3`` the largest 2x2 and 3x3 pixel box sums
  over ``F``; ``peak`` the brightest pixel over ``F``; ``log_size`` ``ln(Ixx + Iyy)`` (px^2);
  ``e_radial``, ``e_cross`` the ellipticity ``((Ixx - Iyy) / (Ixx + Iyy), 2 Ixy / (Ixx + Iyy))``
  turned by ``-2 phi`` (``e_radial > 0``: elongated along the radius); ``kurtosis`` the
  fourth radial moment over ``(Ixx + Iyy)^2``; ``skew_radial``, ``skew_cross`` the third
  moments over ``(Ixx + Iyy)^1.5``.  Each is clipped to :data:`MOMENT_RANGES` so that a faint
  or hit stamp cannot dominate a plateau's mean.

Set 2 (``version=2``, the one the shipped head reads) appends :data:`EXTRA_NAMES`: the
fraction of ``F`` in the pixels whose centres lie within 1, 1.5, 2 and 3 px of the weighted
centroid (``ee_r1`` ... ``ee_r3``); the log size and the radial and cross ellipticity under a
wider Gaussian weight of :data:`WIDE_SIGMA_PX` (the wings); the trefoil moments
``<r^3 cos 3(theta - phi)>`` and ``<r^3 sin 3(theta - phi)>`` under the first weight, over
``<r^2>^1.5`` (``theta`` the pixel's azimuth about the centroid).
"""

from __future__ import annotations

import numpy as np

from plato_sim.errors import ParameterError

__all__ = [
    "EXTRA_NAMES",
    "MOMENT_NAMES",
    "MOMENT_RANGES",
    "N_MOMENTS",
    "moment_count",
    "stamp_moments",
]

#: the columns of :func:`stamp_moments`
MOMENT_NAMES = (
    "ee2",
    "ee3",
    "peak",
    "log_size",
    "e_radial",
    "e_cross",
    "kurtosis",
    "skew_radial",
    "skew_cross",
)
N_MOMENTS = len(MOMENT_NAMES)
#: clip range of each column (same order); ``log_size`` is left free
MOMENT_RANGES = (
    (0.0, 1.2),
    (0.0, 1.2),
    (0.0, 1.2),
    (-np.inf, np.inf),
    (-1.0, 1.0),
    (-1.0, 1.0),
    (0.0, 10.0),
    (-3.0, 3.0),
    (-3.0, 3.0),
)
#: the columns set 2 appends (module docstring)
EXTRA_NAMES = (
    "ee_r1",
    "ee_r1.5",
    "ee_r2",
    "ee_r3",
    "log_size_wide",
    "e_radial_wide",
    "e_cross_wide",
    "trefoil_cos",
    "trefoil_sin",
)
EXTRA_RANGES = (
    ((0.0, 1.2),) * 4 + ((-np.inf, np.inf), (-1.0, 1.0), (-1.0, 1.0)) + ((-3.0, 3.0),) * 2
)
# The weights and radii below are design choices fixed before any head read them (not tuned,
# no external source): 2.5 px spans an in-focus core of ~1-2 pixels (docs/facts.md: 18 um
# pixels) and the few-pixel blur of the +-200 um training foci while damping noisy wings;
# 4 px reaches those wings; the radii step through the same range.
#: radii of set 2's encircled energies (px)
EE_RADII_PX = (1.0, 1.5, 2.0, 3.0)
#: sigma of set 2's wide Gaussian weight (px)
WIDE_SIGMA_PX = 4.0
#: width of the outer ring whose median is the background (px)
RING_PX = 2
#: sigma of the Gaussian weight of the centroid and moments (px)
WEIGHT_SIGMA_PX = 2.5
CENTROID_ITERATIONS = 3


def _background(stamps: np.ndarray) -> np.ndarray:
    r = RING_PX
    n = len(stamps)
    ring = np.concatenate(
        [
            stamps[:, :r].reshape(n, -1),
            stamps[:, -r:].reshape(n, -1),
            stamps[:, r:-r, :r].reshape(n, -1),
            stamps[:, r:-r, -r:].reshape(n, -1),
        ],
        axis=1,
    )
    return np.median(ring, axis=1)


def _box_max(f: np.ndarray, k: int) -> np.ndarray:
    """The largest ``k`` x ``k`` box sum of each image of ``f``."""
    cs = np.cumsum(np.cumsum(np.pad(f, ((0, 0), (1, 0), (1, 0))), 1), 2)
    box = cs[:, k:, k:] - cs[:, :-k, k:] - cs[:, k:, :-k] + cs[:, :-k, :-k]
    return box.reshape(len(f), -1).max(axis=1)


def moment_count(version: int) -> int:
    """Columns of :func:`stamp_moments` for moment set ``version`` (0: none).

    Raises:
        ParameterError: a set other than 0, 1 or 2 (the one check of a set's number)."""
    counts = {0: 0, 1: N_MOMENTS, 2: N_MOMENTS + len(EXTRA_NAMES)}
    if int(version) not in counts:
        raise ParameterError(f"moment set {version}: 0 (none), 1 or 2")
    return counts[int(version)]


def _extra(f, fw, sw, dx, dy, phi_rad) -> np.ndarray:
    """Set 2's columns (module docstring) from the normalised crops ``f``, the weighted ones
    ``fw`` and their sums ``sw``, the offsets from the centroid."""
    rr2 = dx * dx + dy * dy
    ee = [(f * (rr2 <= r * r)).sum(axis=(1, 2)) for r in EE_RADII_PX]
    fw4 = f * np.exp(-rr2 / (2.0 * WIDE_SIGMA_PX**2))
    s4 = np.clip(fw4.sum(axis=(1, 2)), 1e-9, None)
    m4 = lambda a: (fw4 * a).sum(axis=(1, 2)) / s4  # noqa: E731
    ixx, iyy, ixy = m4(dx * dx), m4(dy * dy), m4(dx * dy)
    size = np.clip(ixx + iyy, 1e-3, None)
    e1, e2 = (ixx - iyy) / size, 2.0 * ixy / size
    c2, s2 = np.cos(2 * phi_rad), np.sin(2 * phi_rad)
    r2 = np.clip((fw * rr2).sum(axis=(1, 2)) / sw, 1e-3, None)
    th = np.arctan2(dy, dx) - phi_rad[:, None, None]
    r3 = rr2**1.5
    t3c = (fw * r3 * np.cos(3 * th)).sum(axis=(1, 2)) / sw / r2**1.5
    t3s = (fw * r3 * np.sin(3 * th)).sum(axis=(1, 2)) / sw / r2**1.5
    return np.stack(ee + [np.log(size), e1 * c2 + e2 * s2, -e1 * s2 + e2 * c2, t3c, t3s], axis=1)


def _moments(stamps: np.ndarray, phi_rad: np.ndarray, crop: int, version: int = 1) -> np.ndarray:
    h, w = stamps.shape[-2:]
    r0, c0 = h // 2 - crop // 2, w // 2 - crop // 2
    x = stamps[:, r0 : r0 + crop, c0 : c0 + crop] - _background(stamps)[:, None, None]
    f = x / np.clip(x.sum(axis=(1, 2)), 1e-6, None)[:, None, None]
    yy, xx = np.mgrid[0:crop, 0:crop].astype(np.float64)
    cy = np.full(len(f), crop // 2, dtype=np.float64)
    cx = cy.copy()
    for _ in range(CENTROID_ITERATIONS):
        r2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
        fw = f * np.exp(-r2 / (2.0 * WEIGHT_SIGMA_PX**2))
        sw = np.clip(fw.sum(axis=(1, 2)), 1e-9, None)
        cy = (fw * yy).sum(axis=(1, 2)) / sw
        cx = (fw * xx).sum(axis=(1, 2)) / sw
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    mom = lambda a: (fw * a).sum(axis=(1, 2)) / sw  # noqa: E731
    ixx, iyy, ixy = mom(dx * dx), mom(dy * dy), mom(dx * dy)
    size = np.clip(ixx + iyy, 1e-3, None)
    e1, e2 = (ixx - iyy) / size, 2.0 * ixy / size
    c, s = np.cos(phi_rad), np.sin(phi_rad)
    c2, s2 = np.cos(2 * phi_rad), np.sin(2 * phi_rad)
    u_r = dx * c[:, None, None] + dy * s[:, None, None]
    u_c = -dx * s[:, None, None] + dy * c[:, None, None]
    first = np.stack(
        [
            _box_max(f, 2),
            _box_max(f, 3),
            f.reshape(len(f), -1).max(axis=1),
            np.log(size),
            e1 * c2 + e2 * s2,
            -e1 * s2 + e2 * c2,
            mom((dx * dx + dy * dy) ** 2) / size**2,
            mom(u_r**3) / size**1.5,
            mom(u_c**3) / size**1.5,
        ],
        axis=1,
    )
    if version == 1:
        return first
    return np.concatenate([first, _extra(f, fw, sw, dx, dy, phi_rad)], axis=1)


def stamp_moments(
    stamps: np.ndarray, phi_deg: np.ndarray, crop: int = 20, chunk: int = 8192, version: int = 1
) -> np.ndarray:
    """The :data:`MOMENT_NAMES` of each stamp (and, with ``version=2``, the
    :data:`EXTRA_NAMES` after them), ``(N, moment_count(version))`` float32 (module docstring).

    Args:
        stamps: ``(N, H, W)`` electrons, focal-plane orientation, the star near the centre.
        phi_deg: ``(N,)`` field azimuth of each stamp (deg).
        crop: side of the central region measured (px), at most ``H - 2 RING_PX``.
        chunk: stamps per vectorised pass (memory).
        version: the moment set, 1 or 2.
    """
    st = np.asarray(stamps)
    phi = np.deg2rad(np.asarray(phi_deg, dtype=np.float64).reshape(-1))
    if st.ndim != 3 or len(phi) != len(st):
        raise ParameterError("stamp_moments: stamps (N, H, W) and one azimuth per stamp")
    if min(st.shape[1:]) < crop + 2 * RING_PX or crop < 3:
        raise ParameterError(f"stamp_moments: stamps of {st.shape[1:]} too small for crop {crop}")
    if moment_count(version) == 0:
        raise ParameterError("stamp_moments: moment set 0 has no columns; ask for 1 or 2")
    ranges = MOMENT_RANGES + (EXTRA_RANGES if int(version) == 2 else ())
    out = np.zeros((len(st), len(ranges)), np.float32)
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    for s in range(0, len(st), chunk):
        e = slice(s, s + chunk)
        out[e] = np.clip(_moments(st[e].astype(np.float64), phi[e], crop, int(version)), lo, hi)
    return out
