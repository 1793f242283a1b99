"""Star stamps cut from detector windows: one procedure for simulated and real frames.

The campaign reader (:mod:`plato_cnn.reader`) and the dataset generator both call
:func:`extract_stamp`, so that pretraining sees exactly what inference sees:

1. the window is background-subtracted by the caller (ADU above the closed-shutter frame);
2. the star is found as the maximum of the 3x3 box-smoothed window;
3. its centroid is the first moment of the positive pixels in a ``(2r+1)^2`` box around it,
   iterated twice with the box re-centred on the rounded centroid;
4. the stamp is ``size x size`` pixels, with the pixel nearest the centroid at index
   ``size // 2`` (camera stamp convention); no resampling.  Pixels beyond the window are 0
   and flagged in the returned mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plato_sim.detector import ADC_MAX_ADU, FULL_WELL_E, saturation_signal_adu
from plato_sim.errors import ParameterError

__all__ = [
    "StampCut",
    "extract_stamp",
    "centroid",
    "background_adu",
    "saturation_level_adu",
    "ccd_to_focal_plane_orientation",
]


@dataclass(frozen=True)
class StampCut:
    """A stamp and where it came from.

    Attributes:
        stamp: ``(size, size)`` float32 image (same units as the input window).
        valid: ``(size, size)`` bool, False where the stamp lies outside the window.
        centre_row, centre_col: window pixel placed at the stamp centre.
        centroid_row, centroid_col: star centroid in window pixel coordinates.
        peak: maximum of the 3x3-smoothed window (per-pixel mean, input units).
    """

    stamp: np.ndarray
    valid: np.ndarray
    centre_row: int
    centre_col: int
    centroid_row: float
    centroid_col: float
    peak: float


def background_adu(closed_frames_adu: np.ndarray) -> np.ndarray:
    """Background of a window: mean of its closed-shutter frames (float64 sum, float32 result).

    Used by the campaign reader and the dataset generator alike, so that both subtract the
    same bits: ``raw.astype(float32) - background_adu(closed)``, then ``* float32(gain)``.
    """
    return np.asarray(closed_frames_adu, dtype=np.float64).mean(axis=0).astype(np.float32)


def saturation_level_adu(gain_e_per_adu: float, full_well_e: float = FULL_WELL_E) -> float:
    """Background-subtracted level (ADU) above which a star counts as saturated.

    docs/campaign-format.md (:func:`plato_sim.detector.saturation_signal_adu`), never above the
    ADC range (a raw value at 65535 ADU is saturated as well, whatever its background).
    """
    return min(float(ADC_MAX_ADU), saturation_signal_adu(gain_e_per_adu, full_well_e))


def centroid(image: np.ndarray, row: int, col: int, radius: int = 5) -> tuple[float, float]:
    """First moment of the positive pixels within ``radius`` of ``(row, col)``."""
    h, w = image.shape
    r0, r1 = max(0, row - radius), min(h, row + radius + 1)
    c0, c1 = max(0, col - radius), min(w, col + radius + 1)
    sub = np.clip(image[r0:r1, c0:c1], 0.0, None)
    tot = sub.sum()
    if not tot > 0:
        return float(row), float(col)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    return float((sub * rr).sum() / tot), float((sub * cc).sum() / tot)


def extract_stamp(window: np.ndarray, size: int = 32, radius: int = 5) -> StampCut:
    """Cut a ``size x size`` stamp centred on the star of a background-subtracted window."""
    img = np.asarray(window, dtype=np.float64)
    if img.ndim != 2:
        raise ParameterError(f"a window must be 2-D, got shape {img.shape}")
    h, w = img.shape
    pad = np.pad(img, 1, mode="edge")
    sm = sum(pad[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    pr, pc = np.unravel_index(int(np.argmax(sm)), sm.shape)
    cr, cc = float(pr), float(pc)
    for _ in range(2):
        cr, cc = centroid(img, int(round(cr)), int(round(cc)), radius)
    rr, rc = int(round(cr)), int(round(cc))
    c = size // 2
    stamp = np.zeros((size, size), dtype=np.float32)
    valid = np.zeros((size, size), dtype=bool)
    a0, b0 = rr - c, rc - c
    ra, rb = max(0, a0), min(h, a0 + size)
    ca, cb = max(0, b0), min(w, b0 + size)
    if ra < rb and ca < cb:
        stamp[ra - a0 : rb - a0, ca - b0 : cb - b0] = img[ra:rb, ca:cb]
        valid[ra - a0 : rb - a0, ca - b0 : cb - b0] = True
    return StampCut(stamp, valid, rr, rc, cr, cc, float(sm[pr, pc]))


def ccd_to_focal_plane_orientation(
    stamps: np.ndarray, ccd: np.ndarray | int, orientation_deg: tuple[float, ...]
) -> np.ndarray:
    """Re-orient stamps cut in CCD pixel axes to focal-plane axes (``[y, x]``).

    CCD ``k`` sees the focal plane rotated by its orientation ``gamma_k`` (a multiple of 90
    deg; :mod:`plato_sim.optics.camera`: ``(col, row) = R(-gamma) (x, y)``), so the same optical PSF
    looks rotated from one CCD to the next.  The focal-plane pixel at ``(dy, dx)`` from the
    central pixel ``c = size // 2`` takes the CCD pixel at ``(dr, dk) = R(-gamma) (dx, dy)``:
    an exact permutation about the central pixel, no resampling.  For an even size the one
    row and column that have no source become 0.

    Args:
        stamps: ``(N, S, S)`` stamps in CCD axes ``[row, col]``.
        ccd: ``(N,)`` or scalar CCD id (1-4).
        orientation_deg: the camera's CCD orientations (``Camera.ccd_orientation_deg``).
    """
    st = np.asarray(stamps)
    n, size = st.shape[0], st.shape[-1]
    ccds = np.broadcast_to(np.asarray(ccd), (n,))
    out = np.zeros_like(st)
    c = size // 2
    dy, dx = np.mgrid[0:size, 0:size] - c
    for k in np.unique(ccds):
        g = np.radians(orientation_deg[int(k) - 1])
        cg, sg = int(round(np.cos(g))), int(round(np.sin(g)))
        dk = cg * dx + sg * dy
        dr = -sg * dx + cg * dy
        ok = (np.abs(dk) <= c) & (np.abs(dr) <= c) & (dk + c < size) & (dr + c < size)
        sel = ccds == k
        out[np.ix_(sel, np.arange(size), np.arange(size))] = 0
        sub = out[sel]
        sub[:, ok] = st[sel][:, (dr + c)[ok], (dk + c)[ok]]
        out[sel] = sub
    return out
