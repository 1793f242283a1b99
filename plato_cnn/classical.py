"""Classical best-focus temperature from the EEF of the frames of a campaign.

The test houses' method (CGSE ``CAM_TVPT_010``, docs/facts.md)
-----------------------------------------------------------------
1. EEF of every frame (:mod:`plato_cnn.metrics`);
2. per plateau (observation) and field position, the **maximum** EEF over its dither frames;
3. per plateau, mean and standard deviation over the field positions;
4. a weighted polynomial fit of the mean against the plateau's TRP1 (weights 1/sigma with
   sigma = std / sqrt(n_fields), the standard error of the mean): cubic by default,
   quartic (zero degrees of freedom on 5 plateaux) and quadratic variants;
5. BFT = the temperature of the polynomial's maximum within the sampled range.
   Its sigma propagates the fit covariance (Monte Carlo over the coefficients).

Improved estimator (``fit="gauss"``), this module's design
----------------------------------------------------------
The best-focus temperature is defined (docs/facts.md) on the *sub-pixel-averaged* EEF, not
on the best dither: random dithers sample the sub-pixel phase uniformly, so the **mean** EEF
over a field's frames is an unbiased estimate of exactly that quantity, while the maximum
over a few tens of frames is a noisy extreme whose bias changes with focus.  Per plateau the
field average of those means is the definition's curve itself, measured to ~0.1 %.

Its shape: near focus the EEF of a blurred star falls off like a Gaussian in the focal shift
(linear in TRP1), and spherical aberration and the chromatic focal shift make it skewed; so
``log EEF`` is fitted with a polynomial in T: quadratic (a Gaussian) on 3 plateaux, cubic (a
skewed Gaussian) on 4 or more, weighted least squares with the propagated standard errors.
BFT = the maximum of the fitted curve, allowed up to 2 degC beyond the sampled range (the
shape extrapolates where a polynomial in EEF cannot).  Sigma: bootstrap over field
positions (resampled together on all plateaux) and frames (Poisson weights), with half the
difference between the skewed and the symmetric shape added in quadrature as a model term
when there are 4 or more plateaux.  ``benchmarks/classical_bft.py`` measures both the error
and the calibration of that sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plato_cnn.metrics import frame_eef
from plato_cnn.reader import CampaignFrames
from plato_sim.errors import InsufficientPlateaux, ParameterError, warn

__all__ = [
    "POLY_FITS",
    "IMPROVED_FITS",
    "FITS",
    "THREE_PLATEAU_SHAPE_SIGMA_DEGC",
    "min_plateaux",
    "InsufficientPlateaux",
    "EEFTable",
    "eef_table",
    "poly_max",
    "BFTResult",
    "test_house_bft",
    "improved_bft",
    "estimate_bft",
]

#: Polynomial fits of the test houses: name -> degree.
POLY_FITS = {"quadratic": 2, "cubic": 3, "quartic": 4}
#: Improved estimators: name -> minimum plateaux.
IMPROVED_FITS = {"gauss": 3}
FITS = tuple(POLY_FITS) + tuple(IMPROVED_FITS)
#: How far beyond the sampled range the shaped curve's maximum may lie (degC).  ASSUMED:
#: about half a plateau step, where a curve fitted on the neighbouring plateaux is still
#: constrained.
EXTRAPOLATE_DEGC = 2.0
#: Shape term (degC) of the improved fit with exactly 3 plateaux, added in quadrature to its
#: bootstrap sigma.  The symmetric shape then passes through the three plateau means, so
#: neither the bootstrap nor the comparison with the skewed shape (which needs 4) sees the
#: asymmetry of the EEF curve, which biases the estimate.  Calibrated as the other terms of the
#: project: the 68.27th percentile of ``sqrt(max(0, error^2 - sigma_boot^2))`` over the 38
#: calibration cameras (16 highorder-mild, 10 highorder, 12 design; random test designs;
#: plateaux -90 / -80 / -70 degC; their own seed streams, never a benchmark camera):
#: ``python -m plato_cnn.pipelines.calibrate_classical`` on the 2-core AMD EPYC machine, RMS
#: 0.94 degC, bias +0.86 degC, term 1.06 degC (per family 1.00 / 1.05 / 1.16).  Measured on
#: plateaux 10 degC apart; others are covered by the same term only as an approximation.
THREE_PLATEAU_SHAPE_SIGMA_DEGC = 1.06


def min_plateaux(fit: str) -> int:
    """Plateaux a fit needs: degree + 1 for the polynomials, 3 for the shaped curve."""
    if fit in POLY_FITS:
        return POLY_FITS[fit] + 1
    if fit in IMPROVED_FITS:
        return IMPROVED_FITS[fit]
    raise ParameterError(f"unknown fit {fit!r}; choose one of {FITS}")


@dataclass(frozen=True)
class EEFTable:
    """Per plateau and field position, a reduced EEF.

    Attributes:
        obsid: ``(P,)`` observations, in OBSID order.
        temperature_degC: ``(P,)`` mean TRP1 of the frames used.
        values: ``(P, F)`` reduced EEF (NaN where a field has no usable frame).
        counts: ``(P, F)`` usable frames.
        field_ids: ``(F,)``.
    """

    obsid: np.ndarray
    temperature_degC: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    field_ids: np.ndarray

    def field_mean(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per plateau: mean and std over the field positions, and their number."""
        n = np.sum(np.isfinite(self.values), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nanmean(self.values, axis=1)
            std = np.nanstd(self.values, axis=1, ddof=1)
        return mean, std, n


def _usable(frames: CampaignFrames, eef_values: np.ndarray) -> np.ndarray:
    return frames.usable & np.isfinite(eef_values) & np.isfinite(frames.temperature_degC)


def eef_table(frames: CampaignFrames, eef_values: np.ndarray, reducer: str = "max") -> EEFTable:
    """Reduce per-frame EEF to a (plateau, field) table with ``"max"`` or ``"mean"``."""
    ok = _usable(frames, eef_values)
    obs = np.unique(frames.obsid[ok])
    fids = np.unique(frames.field_id[ok])
    vals = np.full((obs.size, fids.size), np.nan)
    counts = np.zeros((obs.size, fids.size), dtype=int)
    temps = np.empty(obs.size)
    pi = np.searchsorted(obs, frames.obsid[ok])
    fi = np.searchsorted(fids, frames.field_id[ok])
    e = eef_values[ok]
    flat = pi * fids.size + fi
    np.add.at(counts.ravel(), flat, 1)
    if reducer == "max":
        v = np.full(vals.size, -np.inf)
        np.maximum.at(v, flat, e)
    elif reducer == "mean":
        v = np.bincount(flat, weights=e, minlength=vals.size) / np.maximum(counts.ravel(), 1)
    else:
        raise ParameterError(f"reducer must be 'max' or 'mean', got {reducer!r}")
    vals = np.where(counts > 0, v.reshape(vals.shape), np.nan)
    t_ok = frames.temperature_degC[ok]
    for i in range(obs.size):
        temps[i] = float(np.mean(t_ok[pi == i]))
    return EEFTable(obs, temps, vals, counts, fids)


def poly_max(coeffs: np.ndarray, lo: float, hi: float) -> tuple[float, bool]:
    """Argmax of ``polyval(coeffs)`` on ``[lo, hi]``, and whether it sits on an edge."""
    c = np.asarray(coeffs, dtype=float)
    cand = [lo, hi]
    if c.size > 2:
        for r in np.roots(np.polyder(c)):
            if abs(r.imag) < 1e-9 and lo < r.real < hi:
                cand.append(float(r.real))
    cand = np.asarray(cand)
    k = int(np.argmax(np.polyval(c, cand)))
    return float(cand[k]), k < 2


def _poly_fit(t: np.ndarray, y: np.ndarray, sig: np.ndarray, degree: int):
    """Weighted least squares ``y ~ poly(t - t_mid)``; returns (coeffs in t, cov, t_mid)."""
    tm = float(np.mean(t))
    x = t - tm
    a = np.vander(x, degree + 1)
    w = 1.0 / sig
    aw = a * w[:, None]
    coef, *_ = np.linalg.lstsq(aw, y * w, rcond=None)
    cov = np.linalg.pinv(aw.T @ aw)
    return coef, cov, tm


@dataclass
class BFTResult:
    """A best-focus temperature estimate.

    Attributes:
        bft_degC, sigma_degC: estimate and its 1-sigma uncertainty (degC).
        method, fit, variant: ``"eef"``, the fit name and the EEF variant.
        obsids, temperatures_degC: plateaux used.
        mean_eef, std_eef, n_fields: per plateau, the field statistics that were fitted.
        curve_t_degC, curve_eef: the fitted curve, sampled (for plots).
        at_edge: the maximum lies on the edge of the allowed range.
        frames_used: usable frames that entered the statistics.
        warnings: human-readable warnings.
        extra: method-specific details.
    """

    bft_degC: float
    sigma_degC: float
    method: str
    fit: str
    variant: str
    obsids: list
    temperatures_degC: list
    mean_eef: list
    std_eef: list
    n_fields: list
    curve_t_degC: list
    curve_eef: list
    at_edge: bool
    frames_used: int
    warnings: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _check_plateaux(table: EEFTable, fit: str) -> None:
    need = min_plateaux(fit)
    good = np.sum(np.isfinite(table.values), axis=1) >= 2
    if int(np.sum(good)) < need:
        raise InsufficientPlateaux(
            f"fit {fit!r} needs at least {need} plateaux with usable frames, got "
            f"{int(np.sum(good))} (OBSIDs {table.obsid[good].tolist()})"
        )


def test_house_bft(
    frames: CampaignFrames,
    fit: str = "cubic",
    variant: str = "2x2",
    eef_values: np.ndarray | None = None,
    n_mc: int = 2000,
    seed: int = 0,
) -> BFTResult:
    """The test houses' BFT: max EEF over dithers, field mean, weighted polynomial fit.

    Args:
        frames: the campaign's frames (flagged frames are not used).
        fit: ``"quadratic"``, ``"cubic"`` (default, the test houses') or ``"quartic"``.
        variant: EEF variant (``"2x2"``, ``"3x3"``, ``"8x8"``).
        eef_values: precomputed per-frame EEF (computed when None).
        n_mc: Monte Carlo draws of the coefficients for sigma.
        seed: seed of those draws.

    Raises:
        InsufficientPlateaux: fewer usable plateaux than the fit needs.
    """
    if fit not in POLY_FITS:
        raise ParameterError(f"test-house fit must be one of {tuple(POLY_FITS)}, got {fit!r}")
    e = frame_eef(frames.stamps, variant) if eef_values is None else eef_values
    table = eef_table(frames, e, "max")
    _check_plateaux(table, fit)
    mean, std, n = table.field_mean()
    keep = n >= 2
    t, y = table.temperature_degC[keep], mean[keep]
    sem = std[keep] / np.sqrt(n[keep])
    sem = np.where(sem > 0, sem, np.nanmax(sem[sem > 0]) if np.any(sem > 0) else 1e-3)
    deg = POLY_FITS[fit]
    coef, cov, tm = _poly_fit(t, y, sem, deg)
    lo, hi = float(t.min()) - tm, float(t.max()) - tm
    x_best, edge = poly_max(coef, lo, hi)
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_normal(coef, cov, size=n_mc, method="svd")
    grid = np.linspace(lo, hi, 801)
    pv = np.vander(grid, deg + 1) @ draws.T  # (grid, draws)
    xs = grid[np.argmax(pv, axis=0)]
    sigma = float(np.std(xs))
    warnings = []
    if edge:
        warnings.append(
            warn(
                f"{fit} maximum at the edge of the sampled range ({x_best + tm:.2f} degC): "
                "the best focus may lie outside the plateaux"
            )
        )
    cg = np.linspace(lo, hi, 121)
    used = int(np.sum(table.counts[keep]))
    return BFTResult(
        bft_degC=float(x_best + tm),
        sigma_degC=sigma,
        method="eef",
        fit=fit,
        variant=variant,
        obsids=[int(o) for o in table.obsid[keep]],
        temperatures_degC=t.tolist(),
        mean_eef=y.tolist(),
        std_eef=std[keep].tolist(),
        n_fields=[int(v) for v in n[keep]],
        curve_t_degC=(cg + tm).tolist(),
        curve_eef=np.polyval(coef, cg).tolist(),
        at_edge=edge,
        frames_used=used,
        warnings=warnings,
        extra={"reducer": "max", "coefficients_centred": coef.tolist(), "t_centre_degC": tm},
    )


# ----------------------------------------------------------------------------- improved
def _shape_fit(t: np.ndarray, y: np.ndarray, sig: np.ndarray, lo: float, hi: float, deg: int):
    """Fit ``log y`` with a polynomial of degree ``deg``; argmax of the curve in [lo, hi].

    Returns ``(t_max_degC, at_edge, centred coefficients, centre_degC)``.
    """
    coef, _, tm = _poly_fit(t, np.log(y), sig / y, deg)
    x, edge = poly_max(coef, lo - tm, hi - tm)
    return x + tm, edge, coef, tm


def _field_means(
    pi: np.ndarray, fi: np.ndarray, e: np.ndarray, wf: np.ndarray, n_p: int, n_f: int
) -> np.ndarray:
    """Field-averaged mean EEF per plateau with frame weights ``wf`` (P,)."""
    flat = pi * n_f + fi
    s = np.bincount(flat, weights=wf * e, minlength=n_p * n_f).reshape(n_p, n_f)
    c = np.bincount(flat, weights=wf, minlength=n_p * n_f).reshape(n_p, n_f)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(c > 0, s / c, np.nan)
    return m


# Long because: one estimator read top to bottom (table, shape fit, bootstrap, sigma,
# result); its intermediate arrays feed both the bootstrap and the report.
def improved_bft(
    frames: CampaignFrames,
    fit: str = "gauss",
    variant: str = "2x2",
    eef_values: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    shape_term: bool = True,
) -> BFTResult:
    """This module's improved estimator (see the module docstring), bootstrap sigma.

    With 4 plateaux or more sigma also holds half the difference between the symmetric and
    the skewed shape fits; with 3 (``shape_term``) the calibrated
    :data:`THREE_PLATEAU_SHAPE_SIGMA_DEGC` instead.

    Raises:
        InsufficientPlateaux: fewer than 3 usable plateaux.
    """
    if fit not in IMPROVED_FITS:
        raise ParameterError(f"improved fit must be one of {tuple(IMPROVED_FITS)}, got {fit!r}")
    e_all = frame_eef(frames.stamps, variant) if eef_values is None else eef_values
    table = eef_table(frames, e_all, "mean")
    _check_plateaux(table, fit)
    ok = _usable(frames, e_all)
    good_p = np.sum(np.isfinite(table.values), axis=1) >= 2
    obs = table.obsid[good_p]
    ok &= np.isin(frames.obsid, obs)
    pi = np.searchsorted(obs, frames.obsid[ok])
    fids = table.field_ids
    fi = np.searchsorted(fids, frames.field_id[ok])
    e = e_all[ok]
    t = table.temperature_degC[good_p]
    n_p, n_f = obs.size, fids.size
    lo, hi = float(t.min()) - EXTRAPOLATE_DEGC, float(t.max()) + EXTRAPOLATE_DEGC

    def estimate_curve(wf: np.ndarray, wfield: np.ndarray):
        m = _field_means(pi, fi, e, wf, n_p, n_f)
        w = np.where(np.isfinite(m), wfield[None, :], 0.0)
        y = np.nansum(np.where(np.isfinite(m), m, 0.0) * w, axis=1) / np.sum(w, axis=1)
        # per-plateau standard error: spread of the per-field means over fields
        var = np.nansum(w * (np.where(np.isfinite(m), m, y[:, None]) - y[:, None]) ** 2, axis=1)
        nf = np.sum(w, axis=1)
        sem = np.sqrt(var / np.maximum(nf - 1, 1) / np.maximum(nf, 1))
        sem = np.where(sem > 0, sem, 1e-4)
        return m, y, sem

    def estimate(wf: np.ndarray, wfield: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        _, y, sem = estimate_curve(wf, wfield)
        out = {2: _shape_fit(t, y, sem, lo, hi, 2)}
        if n_p >= 4:
            out[3] = _shape_fit(t, y, sem, lo, hi, 3)
        return out, y, sem

    fits0, y0, sem0 = estimate(np.ones(e.size), np.ones(n_f))
    main_deg = 3 if 3 in fits0 else 2
    bft, edge, coef, tm = fits0[main_deg]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        wfield = rng.multinomial(n_f, np.full(n_f, 1.0 / n_f)).astype(float)
        wf = rng.poisson(1.0, e.size).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            _, yb, _ = estimate_curve(wf, wfield)
        if not np.all(np.isfinite(yb) & (yb > 0)):
            continue  # a replicate that lost every frame of a plateau
        fb, _, _ = estimate(wf, wfield)
        boots.append(fb[main_deg][0])
    warnings = []
    if len(boots) < max(10, n_boot // 2):
        warnings.append(
            warn(
                f"only {len(boots)} of {n_boot} bootstrap replicates usable: too few frames per "
                "field and plateau for a bootstrap sigma"
            )
        )
    sigma_boot = float(np.std(boots)) if len(boots) >= 2 else float("nan")
    if 3 in fits0:
        model_term = abs(fits0[3][0] - fits0[2][0]) / 2.0
    else:  # three plateaux: the curve's asymmetry is unseen (THREE_PLATEAU_SHAPE_SIGMA_DEGC)
        model_term = THREE_PLATEAU_SHAPE_SIGMA_DEGC if shape_term else 0.0
        if shape_term:
            warnings.append(
                warn(
                    f"{n_p} plateaux: the EEF curve's asymmetry is not measured (the shape fit "
                    f"passes through every point); sigma includes the calibrated shape term "
                    f"{model_term:.2f} degC (on emulated cameras this fit is biased by about "
                    "+0.9 degC with plateaux 10 degC apart)"
                )
            )
    sigma = float(np.hypot(sigma_boot, model_term))
    if edge:
        warnings.append(
            warn(f"{fit} maximum at the edge of the allowed range [{lo:.1f}, {hi:.1f}] degC")
        )
    cg = np.linspace(lo - tm, hi - tm, 121)
    curve = np.exp(np.polyval(coef, cg))
    return BFTResult(
        bft_degC=bft,
        sigma_degC=sigma,
        method="eef",
        fit=fit,
        variant=variant,
        obsids=[int(o) for o in obs],
        temperatures_degC=t.tolist(),
        mean_eef=y0.tolist(),
        std_eef=(sem0 * np.sqrt(np.sum(np.isfinite(table.values[good_p]), axis=1))).tolist(),
        n_fields=[int(v) for v in np.sum(np.isfinite(table.values[good_p]), axis=1)],
        curve_t_degC=(cg + tm).tolist(),
        curve_eef=curve.tolist(),
        at_edge=edge,
        frames_used=int(e.size),
        warnings=warnings,
        extra={
            "reducer": "mean",
            "shape_degree_of_log_eef": main_deg,
            "sigma_bootstrap_degC": sigma_boot,
            "sigma_model_degC": model_term,
            "bft_symmetric_degC": fits0[2][0],
            "n_boot": n_boot,
        },
    )


def estimate_bft(
    frames: CampaignFrames,
    fit: str = "cubic",
    variant: str = "2x2",
    eef_values: np.ndarray | None = None,
    seed: int = 0,
    n_boot: int = 200,
) -> BFTResult:
    """BFT with the named fit: a test-house polynomial or the improved estimator."""
    if fit in POLY_FITS:
        return test_house_bft(frames, fit, variant, eef_values, seed=seed)
    if fit in IMPROVED_FITS:
        return improved_bft(frames, fit, variant, eef_values, n_boot=n_boot, seed=seed)
    raise ParameterError(f"unknown fit {fit!r}; choose one of {FITS}")
