"""In-orbit focus check by forward modelling: the ground fit's optics render every imagette.

The network check (:mod:`plato_cnn.focuscheck`) reads each star's focal offset with a
network trained on the design family; on a camera unlike that family it may barely respond
to focus (docs/inorbit.md, section 6).  Where the camera's ground campaign has been fitted
by the forward method (docs/forward.md), its images have already determined its optics: the
smooth field model of the wavefront, each ground position's own focal offset and Z5..Z22,
the chromatic terms, the charge diffusion and the thermal curve.  In orbit the same optics
image the stars; what launch, gravity release and the orbit's thermal state move is the
common thermal focal shift.  So this check fits that one number to the imagettes:

1. the imagettes are checked as the network check does (saturated, no detectable star,
   star more than 2 px from the window centre: dropped and counted;
   :func:`plato_cnn.focuscheck.usable_imagettes`); each window, less its border median,
   is in electrons (``GAIN``), in its CCD's pixel axes;
2. the fitted optics at each star's field position (:class:`FittedOptics`): the smooth
   field model of the fit evaluated there, plus the per-position residual terms of the
   :data:`IDW_NEIGHBOURS` nearest ground positions on the same CCD (inverse squared
   focal-plane distance; a CCD's height step is a residual focal offset), at the common
   thermal shift ``dz_th(T_BF) + g``;
3. each star's window is rendered from those optics, its catalogue blackbody (``TEFF``) and
   the fitted diffusion, with the in-orbit pointing jitter, sampled exactly as the emulator
   samples (:func:`plato_sim.scenes.inorbit.windows_from_otf`) plus its own readout smear;
   per star the flux, a background and the position on the CCD are fitted (Gauss-Newton
   on the position, linear least squares for flux and background) at every trial ``g``;
4. ``g`` minimises the total chi^2 (pixel variance: the window's border noise plus the
   model's photon noise and pixel response non-uniformity; pixels beyond
   :data:`CLIP_SIGMAS` after the first pass, cosmic rays, masked): a scan of
   +-:data:`SCAN_HALF_WIDTH_UM` around the shift the ground thermal curve predicts at ``T``
   (the :data:`SCAN_STARS` brightest stars), then a parabola through five
   points around the scan's best, every star fitted; its statistical sigma is the
   curvature's, inflated by sqrt(chi^2_red) where that exceeds 1, and a systematic term
   that grows with the misfit, :data:`FORWARD_MISFIT_UM` ``sqrt(chi2_red - 1)`` (calibrated
   on other cameras), is added in quadrature;
5. ``T_BF`` solves ``dz_th(T_BF) = dz_th(T) - g`` on the ground curve moved to pass through
   the present focus (as the ground-corrected network check, docs/inorbit.md section 6);
6. a chi^2_red beyond what the calibration cameras reached (:data:`FORWARD_CHI2_CALIBRATED`)
   flags the camera outside what the model knows (warning, ``outside_model``) and sigma
   becomes that of a shift known only to lie in the scan.

Not modelled (each below the noise of a 10 x 10 window, docs/inorbit.md section 7): the
0.05" drift over an exposure (0.004 px), the QE shape and vignetting of the camera, the
smear of other stars.  A fit flagged ``outside_model`` on the ground is carried as a warning
and a flag: its optics describe the camera less well than its chi^2 test allows.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from plato_cnn.forward import (
    FIELD_TERMS,
    PARAM_NAMES,
    ForwardModel,
    solve_thermal,
    thermal_shift_um,
    thermal_slope_um_per_degC,
)

# the focal-plane coordinates in which the ground calibration interpolates, shared
from plato_cnn.ground_calibration import _focal_xy_deg
from plato_sim.detector import DetectorModel
from plato_sim.errors import ParameterError, warn
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, ccd_of_field
from plato_sim.optics.spectra import Spectrum, blackbody_spectrum
from plato_sim.optics.wavefront import FieldAberrations
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.inorbit import JITTER_RMS_ARCSEC, smear_of, windows_from_otf

log = logging.getLogger(__name__)

__all__ = [
    "CLIP_SIGMAS",
    "FORWARD_CHI2_CALIBRATED",
    "FORWARD_MISFIT_UM",
    "UNCALIBRATED_SHIFT_SIGMA_UM",
    "IDW_NEIGHBOURS",
    "SCAN_HALF_WIDTH_UM",
    "SCAN_STARS",
    "FittedOptics",
    "ForwardFocusCheck",
    "forward_focus_check",
    "forward_focus_check_file",
]

#: Ground positions whose residual terms a star takes (inverse squared distance).
IDW_NEIGHBOURS = 3
#: Half-width (um) of the scan of the common shift around the ground curve's prediction at
#: ``T``: launch shifts of a few degC at ~10 um/degC, and the network check's own scan
#: (docs/inorbit.md section 6, step 2).
SCAN_HALF_WIDTH_UM = 40.0
#: Step (um) of that scan: a 10 x 10 window's chi^2 varies smoothly over a few um of focus.
SCAN_STEP_UM = 5.0
#: The scan fits the brightest this many stars (the OTFs are the cost); the refinement all.
SCAN_STARS = 24
#: Pixels further than this many sigma from the first pass's model are masked (cosmic rays).
CLIP_SIGMAS = 6.0
#: Systematic sigma of the common shift per unit of misfit (um): ``FORWARD_MISFIT_UM *
#: sqrt(max(chi2_red - 1, 0))`` is added in quadrature to the statistical sigma (the forward
#: fit's misfit rule, :data:`plato_cnn.forward.MISFIT_SIGMA_DEGC`): the fitted optics read
#: between the ground positions and outside the fit's basis leave both a larger error and a
#: larger chi^2.  The 68.27th percentile of ``sqrt(max(0, e^2 - sigma_stat^2)) / sqrt(chi2_red
#: - 1)`` over 80 sets of 100 stars of 16 calibration cameras (8 design, 8 milder high-order;
#: seeds 1000-1007, never a benchmark camera, never the nodal family): ``python -m
#: benchmarks.inorbit_ground --family design,highorder-mild --calibrate --n-stars 100,500
#: --max-subsets 5`` on 2026-12-06 (results/measured/inorbit_forward_calibration.json).  It
#: covers 70 % of the design sets and 65 % of the milder high-order ones (68 % with the one
#: set beyond :data:`FORWARD_CHI2_CALIBRATED` widened); the constant term first calibrated
#: on the same sets (0.742 um, the 68th percentile of the excess alone) covered 85 % and 50 %
#: (docs/inorbit.md section 7).
FORWARD_MISFIT_UM = 1.411
#: The largest reduced chi^2 of the calibration sets of 100 stars, to two decimals (same run
#: as :data:`FORWARD_MISFIT_UM`; 1.05-1.38 design, 1.25-1.803 milder high-order: that one set
#: lies just beyond it).  Beyond it the
#: fitted optics do not describe the imagettes as well as calibration saw (optics changed since
#: the ground test, terms outside the fit's basis): the check is flagged and its sigma is not
#: calibrated, so it becomes :data:`UNCALIBRATED_SHIFT_SIGMA_UM`.  With optics changed at launch
#: by ~30 nm in Z5..Z8 (a diagnostic, docs/inorbit.md section 7) the chi^2_red of 100 stars rose
#: from 1.1-1.2 to 1.6-2.1 and the shift erred by up to 3 um.
FORWARD_CHI2_CALIBRATED = 1.80
#: Shift sigma (um) of a check beyond :data:`FORWARD_CHI2_CALIBRATED`: a shift known only to lie
#: in the scan, uniform over +-:data:`SCAN_HALF_WIDTH_UM` (the forward fit's rule beyond its
#: calibrated chi^2, :data:`plato_cnn.forward.UNCALIBRATED_SIGMA_DEGC`).
UNCALIBRATED_SHIFT_SIGMA_UM = 2.0 * SCAN_HALF_WIDTH_UM / math.sqrt(12.0)
#: Relative pixel response non-uniformity in the pixel variance: the nominal CCD270's
#: (:class:`plato_sim.detector.DetectorModel`, ASSUMED 1 %); a window that is not
#: flat-fielded carries it on every bright pixel, where it exceeds the photon noise.
PRNU_SIGMA = DetectorModel().prnu_sigma
#: Gauss-Newton iterations of each star's position at each trial shift.
POSITION_ITERATIONS = 4
#: Finite-difference step (px) of the position derivatives.
_POS_STEP_PX = 0.02
#: Largest position step (px) of one Gauss-Newton iteration.
_MAX_POS_STEP_PX = 0.5
#: Stars rendered per batch (memory of the OTFs: (2K+1)(K+1) complex per star).
_BATCH = 256


@dataclass(frozen=True)
class FittedOptics:
    """A camera's optics as its ground forward fit measured them (docs/forward.md).

    Attributes:
        global_names: names of the fit's global parameters (:data:`plato_cnn.forward.
            PARAM_NAMES`, and the cubic chromatic term where fitted).
        global_values: their fitted values (units in the names).
        t_ref_degC: the fit's reference temperature (mean of the plateaux).
        theta_deg, phi_deg: ``(F,)`` ground field positions.
        ccd: ``(F,)`` their CCD (0 between CCDs).
        residuals: ``(F, 19)`` each position's own focal offset (um) and Z5..Z22 (nm) on top
            of the smooth field model (:data:`plato_cnn.forward.FIELD_TERMS`).
        thermal: the fitted thermal curve (``t_ref_degC``, ``b_um``, ``s_um_per_degC``,
            ``q_um_per_degC2``).
        bft_degC: the ground fit's T_BF.
        outside_model: the ground fit failed its chi^2 test.
    """

    global_names: tuple[str, ...]
    global_values: np.ndarray
    t_ref_degC: float
    theta_deg: np.ndarray
    phi_deg: np.ndarray
    ccd: np.ndarray
    residuals: np.ndarray
    thermal: dict
    bft_degC: float
    outside_model: bool

    @classmethod
    def from_report(cls, report: dict) -> FittedOptics:
        """From a forward report made with ``field_focus`` (``plato-cnn bft --method forward
        --field-focus``): its global parameters, wavefront table and thermal curve.

        Raises:
            ParameterError: the report is not a forward fit, or lacks the wavefront table
                or the ``field_focus`` block.
        """
        if report.get("fit") != "forward-model":
            raise ParameterError("not a forward-model report (its 'fit' is not forward-model)")
        for key in ("params", "wavefront", "field_focus", "plateaux_degC"):
            if not report.get(key):
                raise ParameterError(f"the forward report lacks '{key}' (fit with --field-focus)")
        params = report["params"]
        names = PARAM_NAMES + (("chrom_cub_um",) if "chrom_cub_um" in params else ())
        missing = [n for n in names if n not in params]
        if missing:
            raise ParameterError(f"the forward report lacks the parameters {missing}")
        g = np.array([float(params[n]) for n in names])
        t_ref = float(np.mean(report["plateaux_degC"]))
        wf = report["wavefront"]
        th = np.array([float(w["theta_deg"]) for w in wf])
        ph = np.array([float(w["phi_deg"]) for w in wf])
        smooth = _smooth_terms(names, g, t_ref, th, ph)
        res = np.zeros((len(wf), len(FIELD_TERMS)))
        b = g[names.index("b_um")]
        # the table holds smooth + residual (the focal offset without b, at t_ref)
        res[:, 0] = np.array([float(w["focal_offset_um"]) for w in wf]) - (smooth[:, 0] - b)
        for j in range(5, 5 + len(FIELD_TERMS) - 1):
            res[:, j - 4] = np.array([float(w[f"Z{j}_nm"]) for w in wf]) - smooth[:, j - 4]
        if report.get("field_residuals") is False:
            res[:] = 0.0
        ccd = np.atleast_1d(ccd_of_field(PLATO_NORMAL_CAMERA, th, ph)[0]).astype(int)
        return cls(names, g, t_ref, th, ph, ccd, res, dict(report["field_focus"]["thermal"]),
                   float(report["bft_degC"]), bool(report.get("outside_model", False)))  # fmt: skip

    @property
    def diffusion_sigma_px(self) -> float:
        """Fitted charge diffusion (px)."""
        return float(self.global_values[self.global_names.index("diffusion_sigma_px")])

    def shift_at_temperature_um(self, t_degC: float) -> float:
        """The ground curve's common shift at TRP1 ``t_degC``: ``dz_th(T) - dz_th(T_BF)`` (um)."""
        ff = {"thermal": self.thermal}
        return float(thermal_shift_um(ff, t_degC) - thermal_shift_um(ff, self.bft_degC))

    def residuals_at(self, theta_deg, phi_deg, ccd) -> np.ndarray:
        """``(N, 19)`` residual terms at field positions: the :data:`IDW_NEIGHBOURS` nearest
        ground positions on the same CCD (all positions where it holds fewer), weighted by
        inverse squared focal-plane distance (deg)."""
        gx, gy = _focal_xy_deg(self.theta_deg, self.phi_deg)
        x, y = _focal_xy_deg(theta_deg, phi_deg)
        d = np.hypot(x[:, None] - gx[None, :], y[:, None] - gy[None, :])
        ccd = np.asarray(ccd, int)
        same = ccd[:, None] == self.ccd[None, :]
        enough = same.sum(axis=1) >= IDW_NEIGHBOURS
        d = np.where(same | ~enough[:, None], d, np.inf)
        k = min(IDW_NEIGHBOURS, len(gx))
        idx = np.argsort(d, axis=1)[:, :k]
        w = 1.0 / np.maximum(np.take_along_axis(d, idx, axis=1), 1e-6) ** 2
        w = w / w.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkt->nt", w, self.residuals[idx])

    def local_terms(self, theta_deg, phi_deg, ccd) -> np.ndarray:
        """``(N, T)`` local terms (:data:`plato_cnn.forward.LOCAL_TERMS`) at field positions
        with the thermal focal shift left out: the focal offset (um) of the focal surface and
        residual, Z5..Z22 (nm), the chromatic terms.  Add ``dz_th`` to column 0."""
        th = np.asarray(theta_deg, float)
        ph = np.asarray(phi_deg, float)
        u = _smooth_terms(self.global_names, self.global_values, self.t_ref_degC, th, ph)
        u[:, 0] -= self.global_values[self.global_names.index("b_um")]
        u[:, : len(FIELD_TERMS)] += self.residuals_at(th, ph, ccd)
        return u


def _model(names, theta_deg, phi_deg, t_ref, spectrum=None, engine=None) -> ForwardModel:
    eng = engine or FastEngine()
    sp = spectrum or blackbody_spectrum(eng.camera, 5800.0, 10)
    return ForwardModel(theta_deg, phi_deg, sp, eng, FieldAberrations(), t_ref, True, False,
                        "chrom_cub_um" in names)  # fmt: skip


def _smooth_terms(names, values, t_ref, theta_deg, phi_deg, chunk: int = 64) -> np.ndarray:
    """``(N, T)`` the smooth field model's local terms at ``t_ref`` (b included, no residual)
    by the forward model's own :meth:`~plato_cnn.forward.ForwardModel.local_matrix`."""
    th = np.atleast_1d(np.asarray(theta_deg, float))
    ph = np.atleast_1d(np.asarray(phi_deg, float))
    out = []
    for s in range(0, len(th), chunk):
        m = _model(names, th[s : s + chunk], ph[s : s + chunk], t_ref)
        n = len(m.fx)
        a = m.local_matrix(np.arange(n), np.full(n, t_ref))[:, :, : m.n_g]
        out.append(a @ values)
    return np.concatenate(out) if out else np.zeros((0, len(FIELD_TERMS) + 2))


@dataclass
class ForwardFocusCheck:
    """Result of :func:`forward_focus_check` (um of thermal focal shift, degC of TRP1).

    Attributes:
        temperature_degC: TRP1 temperature of the imagettes.
        shift_um, shift_sigma_um: the common shift ``dz_th(T) - dz_th(T_BF)`` (> 0: the
            detector lies behind best focus) and its 1-sigma.
        shift_sigma_stat_um: its statistical part (chi^2 curvature, Birge-inflated); the
            rest is the misfit term (:data:`FORWARD_MISFIT_UM`).
        shift_prior_um: what the ground thermal curve predicts at ``T`` (the scan's centre).
        delta_t_degC, delta_t_sigma_degC: recommended TRP1 change ``T_BF - T`` and 1-sigma.
        target_degC: ``T + delta_t``.
        slope_um_per_degC: the ground curve's slope at the estimated T_BF.
        chi2_reduced: chi^2 per degree of freedom at the estimate.
        n_stars, n_used: imagettes read and fitted.
        n_clipped_pixels: pixels masked as outliers (cosmic rays).
        drops: imagettes dropped before the fit, by reason.
        scan_um, scan_chi2: the scan of the common shift (chi^2 less its minimum).
        outside_model: the ground fit failed its chi^2 test, or this check's chi^2_red lies
            beyond :data:`FORWARD_CHI2_CALIBRATED` (its optics describe the imagettes less
            well than calibrated).
        sigma_calibrated: False beyond :data:`FORWARD_CHI2_CALIBRATED`, where sigma is
            :data:`UNCALIBRATED_SHIFT_SIGMA_UM`.
        star_flux_e, star_row, star_col: per imagette, fitted (NaN where dropped).
        warnings: human-readable notes.
    """

    temperature_degC: float
    shift_um: float
    shift_sigma_um: float
    shift_sigma_stat_um: float
    shift_prior_um: float
    delta_t_degC: float
    delta_t_sigma_degC: float
    target_degC: float
    slope_um_per_degC: float
    chi2_reduced: float
    n_stars: int
    n_used: int
    n_clipped_pixels: int
    drops: dict
    scan_um: list
    scan_chi2: list
    outside_model: bool
    sigma_calibrated: bool
    star_flux_e: np.ndarray = field(repr=False)
    star_row: np.ndarray = field(repr=False)
    star_col: np.ndarray = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def direction_significant(self) -> bool:
        """The recommended change differs from zero by more than 2 sigma."""
        return abs(self.delta_t_degC) > 2.0 * self.delta_t_sigma_degC

    def to_dict(self) -> dict:
        """JSON-ready summary (per-star arrays left out)."""
        d = {k: v for k, v in asdict(self).items() if not k.startswith("star_")}
        d["method"] = "forward"
        d["direction_significant"] = self.direction_significant
        return d


class _Stars:
    """The usable stars' windows, their model and the per-star nuisance fit."""

    def __init__(self, optics: FittedOptics, field_, sel: np.ndarray, n_wavelengths: int):
        from plato_sim.scenes.inorbit import imagette_background_adu, imagette_noise_adu

        cam = PLATO_NORMAL_CAMERA
        st = field_.stars[sel]
        raw = np.asarray(field_.imagettes)[sel]
        gain = float(field_.header["gain_e_per_adu"])
        self.exptime_s = float(field_.header.get("exptime_s", 21.0))
        self.size = raw.shape[-1]
        bg = imagette_background_adu(raw)
        self.data = (raw.astype(float) - bg[:, None, None]) * gain
        self.var_bg = (np.maximum(imagette_noise_adu(raw), 1.0) * gain) ** 2
        self.mask = np.ones(self.data.shape, bool)
        self.ccd = np.asarray(st["ccd"], int)
        self.row0, self.col0 = np.asarray(st["row0"], int), np.asarray(st["col0"], int)
        self.row, self.col = np.asarray(st["row"], float), np.asarray(st["col"], float)
        self.eng = FastEngine(
            camera=cam,
            diffusion_sigma_px=max(optics.diffusion_sigma_px, 0.01),
            jitter_sigma_px=JITTER_RMS_ARCSEC / cam.pixel_arcsec,
        )
        sps = [blackbody_spectrum(cam, float(t), n_wavelengths) for t in st["teff_K"]]
        lam = np.asarray(sps[0].wavelengths_nm)
        self.weights = np.array([s.weights for s in sps])
        self.ref = Spectrum(tuple(lam), tuple(np.full(lam.size, 1.0 / lam.size)), "ref")
        m = _model(optics.global_names, [0.0], [0.0], optics.t_ref_degC, self.ref, self.eng)
        self.dirs = m.dirs.to(torch.float64)
        self.u0 = optics.local_terms(st["theta_deg"], st["phi_deg"], self.ccd)
        self.dz_bf = float(thermal_shift_um({"thermal": optics.thermal}, optics.bft_degC))
        self.var = self._variance(self.data)
        self.model_e = np.zeros_like(self.data)  # the last fitted model of each window (e)
        self.flux = np.clip(self.data.sum(axis=(1, 2)), 1.0, None)
        self.bg = np.zeros(len(sel))

    def _variance(self, signal_e: np.ndarray) -> np.ndarray:
        """Pixel variance (e^2): border noise, photon noise and the PRNU's share of the
        signal (:data:`PRNU_SIGMA`)."""
        s = np.maximum(signal_e, 0.0)
        return self.var_bg[:, None, None] + s + (PRNU_SIGMA * s) ** 2

    def otf(self, g_um: float, idx: np.ndarray) -> torch.Tensor:
        u = torch.as_tensor(self.u0[idx], dtype=torch.float64).clone()
        u[:, 0] += self.dz_bf + g_um
        z = torch.einsum("bt,tlj->blj", u, self.dirs)
        with torch.no_grad():
            return self.eng.otf(z, self.ref, weights=self.weights[idx])

    def windows(self, otf, idx, rows, cols) -> np.ndarray:
        w = windows_from_otf(self.eng, otf, self.ref, PLATO_NORMAL_CAMERA, self.ccd[idx], rows,
                             cols, self.row0[idx], self.col0[idx], self.size)  # fmt: skip
        return w + smear_of(w, PLATO_NORMAL_CAMERA, self.exptime_s)

    def fit_at(self, g_um: float, stars: np.ndarray | None = None, update: bool = True):
        """Per-star chi^2 at the common shift ``g_um`` with flux, background and position
        fitted (of ``stars``, default all); ``update`` keeps the fitted nuisances as the
        next start."""
        which = np.arange(len(self.data)) if stars is None else np.asarray(stars, int)
        chi2 = np.zeros(len(which))
        for s in range(0, len(which), _BATCH):
            chi2[s : s + _BATCH] = self._fit_batch(g_um, which[s : s + _BATCH], update)
        return chi2

    def _fit_batch(self, g_um, idx, update) -> np.ndarray:
        otf = self.otf(g_um, idx)
        r, c = self.row[idx].copy(), self.col[idx].copy()
        d, wgt = self.data[idx], self.mask[idx] / self.var[idx]
        lim_r = self.row0[idx] + self.size // 2
        lim_c = self.col0[idx] + self.size // 2
        h = _POS_STEP_PX
        for _ in range(POSITION_ITERATIONS):
            w = self.windows(otf, idx, np.stack([r, r + h, r], 1), np.stack([c, c, c + h], 1))
            m0 = w[:, 0]
            cols = [m0, np.ones_like(m0), (w[:, 1] - m0) / h, (w[:, 2] - m0) / h]
            x = _weighted_lstsq(cols, d, wgt)
            f = np.where(np.abs(x[:, 0]) > 1e-9, x[:, 0], 1e-9)
            r = r + np.clip(x[:, 2] / f, -_MAX_POS_STEP_PX, _MAX_POS_STEP_PX)
            c = c + np.clip(x[:, 3] / f, -_MAX_POS_STEP_PX, _MAX_POS_STEP_PX)
            # the window must hold the star (the network check's centring rule)
            r = np.clip(r, lim_r - 2.0, lim_r + 2.0)
            c = np.clip(c, lim_c - 2.0, lim_c + 2.0)
        m0 = self.windows(otf, idx, r[:, None], c[:, None])[:, 0]
        x = _weighted_lstsq([m0, np.ones_like(m0)], d, wgt)
        model = x[:, 0, None, None] * m0 + x[:, 1, None, None]
        if update:
            self.row[idx], self.col[idx] = r, c
            self.flux[idx], self.bg[idx] = x[:, 0], x[:, 1]
            self.model_e[idx] = model
        return np.sum(wgt * (d - model) ** 2, axis=(1, 2))

    def reweight(self) -> int:
        """Pixel variances from the last fitted model; mask pixels beyond :data:`CLIP_SIGMAS`.
        Returns the number of masked pixels."""
        model = self.model_e
        self.var = self._variance(model)
        self.mask = np.abs(self.data - model) <= CLIP_SIGMAS * np.sqrt(self.var)
        return int((~self.mask).sum())


def _weighted_lstsq(cols: list[np.ndarray], d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per star, the weighted least-squares coefficients of ``d ~ sum_k x_k cols[k]``."""
    a = np.stack([c.reshape(len(d), -1) for c in cols], axis=2)  # (B, P, K)
    wf = w.reshape(len(d), -1)
    ata = np.einsum("bpk,bp,bpl->bkl", a, wf, a)
    atd = np.einsum("bpk,bp,bp->bk", a, wf, d.reshape(len(d), -1))
    ata = ata + 1e-12 * np.eye(a.shape[2])[None] * np.trace(ata, axis1=1, axis2=2)[:, None, None]
    return np.linalg.solve(ata, atd[..., None])[..., 0]


def _parabola(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Vertex and curvature ``A`` of ``y ~ A (x - x0)^2 + c`` (least squares)."""
    c2, c1, _ = np.polyfit(x, y, 2)
    if c2 <= 0:
        return float(x[np.argmin(y)]), 0.0
    return float(-c1 / (2 * c2)), float(c2)


# Long because: the check's steps in order (drops, scan, reweighting, refinement, sigma,
# temperature), each a few lines over the shared star state.
def forward_focus_check(
    field_,
    temperature_degC: float,
    report: dict,
    n_wavelengths: int = 10,
) -> ForwardFocusCheck:
    """Common focal shift and recommended TRP1 change from imagettes, by forward modelling
    them with the optics that the camera's ground forward fit measured (module docstring).

    Args:
        field_: :class:`plato_sim.scenes.inorbit.ImagetteField` (e.g. from
            :func:`plato_sim.io.imagette_format.read_imagettes`); its truth is never used.
        temperature_degC: TRP1 temperature of the exposure (degC).
        report: the camera's ground forward report, fitted with ``field_focus``.
        n_wavelengths: blackbody wavelength samples of each star.

    Raises:
        ParameterError: a non-finite temperature, a report that is no forward fit with
            ``field_focus``, or no usable imagette.
    """
    from plato_cnn.focuscheck import usable_imagettes

    if not np.isfinite(temperature_degC):
        raise ParameterError(f"temperature_degC must be finite, got {temperature_degC}")
    optics = FittedOptics.from_report(report)
    warnings: list[str] = []
    if optics.outside_model:
        warnings.append(warn("the ground forward fit is flagged outside its model: the "
                             "optics it measured describe this camera less well than its "
                             "chi^2 test allows"))  # fmt: skip
    use, drops = usable_imagettes(field_)
    sel = np.flatnonzero(use)
    stars = _Stars(optics, field_, sel, n_wavelengths)
    g0 = optics.shift_at_temperature_um(temperature_degC)
    grid = g0 + np.arange(-SCAN_HALF_WIDTH_UM, SCAN_HALF_WIDTH_UM + 1e-9, SCAN_STEP_UM)
    # first pass: data-based variances, the scan from the centre outwards (positions carry)
    order = np.argsort(np.abs(grid - g0), kind="stable")
    chi = np.full(len(grid), np.nan)
    bright = np.argsort(-stars.flux, kind="stable")[:SCAN_STARS]
    for i in order:
        chi[i] = stars.fit_at(float(grid[i]), bright).sum()
    g1 = float(grid[int(np.nanargmin(chi))])
    stars.fit_at(g1)
    n_clip = stars.reweight()
    # second pass: model variances, outliers masked, a parabola through the points near g1
    step = SCAN_STEP_UM / 2.0
    fine = g1 + step * np.arange(-2, 3)
    chi_f = np.array([stars.fit_at(float(g), update=False).sum() for g in fine])
    g_hat, curv = _parabola(fine, chi_f)
    if not fine[0] <= g_hat <= fine[-1]:
        warnings.append(warn(f"the chi^2 minimum ({g_hat:.1f} um) lies outside the refined "
                             "interval: kept at its best point"))  # fmt: skip
        g_hat = float(fine[int(np.argmin(chi_f))])
    chi_star = stars.fit_at(g_hat)
    dof = max(int(stars.mask.sum()) - 4 * len(sel) - 1, 1)
    chi2_red = float(chi_star.sum() / dof)
    sig_stat = 1.0 / math.sqrt(curv) if curv > 0 else SCAN_HALF_WIDTH_UM
    sig_stat *= math.sqrt(max(chi2_red, 1.0))
    sig = math.hypot(sig_stat, FORWARD_MISFIT_UM * math.sqrt(max(chi2_red - 1.0, 0.0)))
    beyond = chi2_red > FORWARD_CHI2_CALIBRATED
    if beyond:
        sig = max(sig, UNCALIBRATED_SHIFT_SIGMA_UM)
        warnings.append(warn(f"chi^2_red {chi2_red:.2f} beyond the {FORWARD_CHI2_CALIBRATED:.2f} "
                             "of the calibration cameras: the ground fit's optics do not describe "
                             "these imagettes as calibrated (optics changed since the ground test, "
                             "or terms outside its basis); the camera is outside what the model "
                             f"knows and sigma is not calibrated ({sig:.1f} um)"))  # fmt: skip
    if curv <= 0:
        warnings.append(warn("the chi^2 has no minimum near the scan's best point: sigma set "
                             "to the scan's half-width"))  # fmt: skip
    if abs(g_hat - g0) > SCAN_HALF_WIDTH_UM - SCAN_STEP_UM:
        warnings.append(warn(f"the fitted shift lies {g_hat - g0:+.1f} um from the ground "
                             "curve's prediction, at the edge of the scan"))  # fmt: skip
    ff = {"thermal": optics.thermal}
    target = float(thermal_shift_um(ff, temperature_degC)) - g_hat
    t_bf = float(solve_thermal(optics.thermal, target, temperature_degC))
    slope = thermal_slope_um_per_degC(ff, t_bf)
    dt = t_bf - temperature_degC
    dt_sig = sig / max(abs(slope), 1e-6)
    log.info("forward focus check: shift %.2f +- %.2f um, dT %.3f +- %.3f degC, %d stars",
             g_hat, sig_stat, dt, dt_sig, len(sel))  # fmt: skip
    n = len(field_.imagettes)

    def per_star(v):
        out = np.full(n, np.nan)
        out[sel] = v
        return out

    return ForwardFocusCheck(
        temperature_degC=float(temperature_degC),
        shift_um=g_hat,
        shift_sigma_um=sig,
        shift_sigma_stat_um=sig_stat,
        shift_prior_um=g0,
        delta_t_degC=dt,
        delta_t_sigma_degC=dt_sig,
        target_degC=float(temperature_degC + dt),
        slope_um_per_degC=slope,
        chi2_reduced=chi2_red,
        n_stars=n,
        n_used=len(sel),
        n_clipped_pixels=n_clip,
        drops=drops,
        scan_um=[float(v) for v in grid],
        scan_chi2=[float(v - np.nanmin(chi)) for v in chi],
        outside_model=optics.outside_model or beyond,
        sigma_calibrated=not beyond,
        star_flux_e=per_star(stars.flux),
        star_row=per_star(stars.row),
        star_col=per_star(stars.col),
        warnings=warnings,
    )


def forward_focus_check_file(
    path: str | Path, temperature_degC: float, forward_json: str | Path
) -> dict:
    """The ``plato-cnn focus-check --forward-json`` report of one imagette file (JSON-ready):
    :func:`forward_focus_check` with the camera's ground forward report read from
    ``forward_json``.

    Raises:
        ParameterError: an unreadable forward report, or any error of the check.
    """
    from plato_sim.io.imagette_format import read_imagettes

    try:
        report = json.loads(Path(forward_json).read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{forward_json}: not a readable forward report ({exc})") from exc
    if not isinstance(report, dict):
        raise ParameterError(f"{forward_json}: not a forward report (a JSON object expected)")
    field_ = read_imagettes(path, with_truth=False)
    fc = forward_focus_check(field_, temperature_degC, report)
    return {
        "file": str(Path(path).resolve()),
        "camera": field_.header.get("camera"),
        "date_obs": field_.header.get("date_obs"),
        "file_trp1_degC": field_.header.get("trp1_degC"),
        **fc.to_dict(),
        "forward_report": str(Path(forward_json).resolve()),
        "model_reliance": {
            "optics": "the ground forward fit's wavefront (smooth field model plus the nearest "
            "ground positions' own terms), chromatic terms and diffusion, unchanged since the "
            "ground test but for the common focal shift",
            "thermal_sensitivity": f"the ground forward fit's thermal curve, slope "
            f"{fc.slope_um_per_degC:.3f} um/degC at the estimated T_BF, moved to pass through "
            "the present focus",
            "sigma": "statistical (chi^2 curvature, inflated by sqrt(chi^2_red)) plus "
            "FORWARD_MISFIT_UM sqrt(chi^2_red - 1); coverage in and out of family in "
            "docs/inorbit.md, section 7",
        },
    }
