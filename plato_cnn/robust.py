"""Robust statistics, one of each: the robust scale, Huber weights, a robust weighted mean.

Residuals are in units of their stated sigmas throughout.  Used by the thermal-model fit
(:mod:`plato_cnn.fit`), fine-tuning and the in-orbit check (:mod:`plato_cnn.focuscheck`).
"""

from __future__ import annotations

import math

import numpy as np

from plato_sim.errors import ParameterError

__all__ = ["robust_scale", "huber_weights", "robust_mean"]


def robust_scale(res: np.ndarray) -> float:
    """Robust spread of residuals in units of their stated sigmas, never below 1.

    1.4826 x the median absolute residual (the normal distribution's sigma); 1 with three
    residuals or fewer.  Never below 1: residuals within their stated sigmas are never
    treated as outliers.
    """
    res = np.asarray(res, float)
    return max(1.0, 1.4826 * float(np.median(np.abs(res)))) if res.size > 3 else 1.0


def huber_weights(res: np.ndarray, huber_k: float = 2.0, scale: float | None = None) -> np.ndarray:
    """Huber weights of residuals given in units of their stated sigmas.

    ``scale`` defaults to :func:`robust_scale` of ``res``; weight 1 within ``huber_k * scale``,
    ``huber_k * scale / |res|`` beyond.
    """
    res = np.asarray(res, float)
    scale = robust_scale(res) if scale is None else scale
    u = np.abs(res) / (huber_k * scale)
    return np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))


def robust_mean(
    values: np.ndarray,
    sigma: np.ndarray,
    huber_k: float = 2.0,
    iterations: int = 10,
    outlier_sigmas: float = 5.0,
) -> tuple[float, float, np.ndarray, float]:
    """Robust inverse-variance mean of ``values`` with 1-sigma ``sigma``.

    Huber re-weighting on residuals scaled by the median absolute deviation (never below
    the stated sigmas), rejection beyond :data:`outlier_sigmas` scaled sigmas.

    Returns:
        ``(mean, sigma_of_mean, kept mask, birge_ratio)``; the sigma is the formal one
        multiplied by the Birge ratio when it exceeds one.
    """
    x = np.asarray(values, float)
    s = np.maximum(np.asarray(sigma, float), 1e-6)
    if x.size == 0:
        raise ParameterError("robust_mean: no values")
    keep = np.ones(x.size, bool)
    w_h = np.ones(x.size)
    mean = float(np.sum(x / s**2) / np.sum(1 / s**2))
    for _ in range(iterations):
        r = (x - mean) / s
        scale = robust_scale(r[keep])
        keep = np.abs(r) <= outlier_sigmas * scale
        if not keep.any():
            keep = np.abs(r) == np.min(np.abs(r))
        w_h = huber_weights(r, huber_k, scale) * keep
        w = w_h / s**2
        new = float(np.sum(w * x) / np.sum(w))
        if abs(new - mean) < 1e-9 * (1.0 + abs(mean)):
            mean = new
            break
        mean = new
    w = w_h / s**2
    formal = math.sqrt(1.0 / float(np.sum(w)))
    n = int(keep.sum())
    chi2 = float(np.sum(w * (x - mean) ** 2))
    birge = math.sqrt(chi2 / (n - 1)) if n > 1 else 1.0
    return mean, formal * max(1.0, birge), keep, birge
