"""Physics forward-model fit of a whole campaign: ``T_BF`` from a fitted camera wavefront.

Every usable frame of every chosen plateau is modelled at once, pixel by pixel, through the
project's differentiable fast engine (:class:`plato_sim.psf.fast.FastEngine`) and the
detector response; the plateaux are *phase diversity*: the same field-dependent wavefront
seen through several known-spacing defocus steps.

Model of one frame ``i`` (field ``f``, plateau ``k``), electrons, focal-plane pixel axes::

    stamp_i = flux_i * PSF(u_fk; dx_i, dy_i, sigma_d) + bg_i

* ``u_fk`` the local optical state (:data:`LOCAL_TERMS`): total focal offset ``dz`` (um),
  Noll Z5..Z22 (nm RMS, :mod:`plato_sim.optics.wavefront`), chromatic shift (a scale of the
  design's quadratic shape and a linear term);
* ``dz = dz_th(T_k) + fo(x, y) + r_f``, ``dz_th = b + s (T - T_ref) + q (T - T_ref)^2``
  (``q`` with the prior :data:`Q_PRIOR_UM_PER_DEGC2`),
  ``fo`` = focal-plane tilt ``tx x + ty y`` + field curvature ``c2 h^2 + c4 h^4``;
* astigmatism ``Z5 = a5 + a5x x + a5y y + A 2xy``, ``Z6 = a6 + a6x x + a6y y + A (x^2 - y^2)``
  (``h^2`` with orientation ``2 phi`` plus constant and linear misalignment terms);
  coma ``Z7 = k7 + C y``, ``Z8 = k8 + C x`` (``h`` with orientation ``phi``); trefoil Z9, Z10
  constant; spherical ``Z11 = p0 + p2 h^2``;  ``(x, y) = h (cos phi, sin phi)``,
  ``h = theta / 18.89 deg``;
* per field position ``f`` a free residual (:data:`FIELD_TERMS`): its own focal offset
  ``r_f`` and Z5..Z22 added to the smooth model (CCD height steps, misalignment terms of
  any field order, secondary aberrations), with the prior :data:`FIELD_PRIOR_SIGMA`.
  Every coefficient is **free**; the design
  (:class:`plato_sim.optics.wavefront.FieldAberrations`) is only the starting point and the
  centre of a wide, weak prior (:data:`PRIOR_SIGMA`) that keeps degenerate directions finite;
* ``PSF``: the fast engine's polychromatic OTF (OGSE spectrum) times the pixel box and a
  Gaussian charge diffusion of free width ``sigma_d`` (one per camera), evaluated by an exact
  DFT at the frame's sub-pixel offset;
* per frame: flux, background, offset ``(dx, dy)`` free.

Noise: ``var = max(model, 0) + (f_prnu model)^2 + read^2 (1 + 1/n_bg)`` (Poisson, the 1 %
pixel-response non-uniformity that follows the star across the window, read noise of the
frame and of the subtracted closed-shutter mean); a Cauchy loss on the normalised residuals
down-weights cosmic rays, hot pixels and stray light that the reader did not flag.

Fit: Levenberg-Marquardt on all parameters (least squares first, then a Cauchy scale that
anneals to :data:`CAUCHY_C`); per iteration one OTF and its analytic forward-mode Jacobian
per *distinct optical state* (field x plateau), the stamps of every frame of that state and
their derivatives by the DFT (exact), and the per-frame nuisances eliminated by a Schur
complement (bundle adjustment) in each state's local space.  A coarse scan of the thermal
offset on a subset of fields starts it.

``T_BF`` is the exact definition (docs/facts.md, :mod:`plato_sim.truth.bestfocus`): the
argmax over TRP1 of the field-averaged expected EEF (uniform sub-pixel positions, an
``n_sub x n_sub`` grid, noise-free, OGSE spectrum) of the *fitted* model, over every field
position of the campaign.  Its sigma: the Laplace covariance of the parameters (scaled by
the reduced chi^2 when above 1) propagated through the implicit-function derivative of that
argmax, plus an optional calibrated systematic term (:data:`SYSTEMATIC_SIGMA_DEGC`, empty
until calibrated on in-family cameras).

What one plateau gives and does not give
----------------------------------------
One plateau still measures the wavefront of every field (the aberrations and the field
dependence of focus are seen in each defocused image; the sign of defocus is fixed by the
other aberrations, which is weaker near focus) and hence the *focal shift* separating the
plateau from best focus, in um.  It does not measure the thermal sensitivity ``s``: the
shift is turned into degC with the prior ``s = 10 +- 3 um/degC`` (:data:`S_PRIOR_ONE_PLATEAU`),
so the answer is ``T_plateau + shift / s`` with a sigma that grows with the distance from
best focus (30 % of it).  Two plateaux measure ``s``; three measure ``q``, whose prior
otherwise enters the sigma.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from plato_sim.errors import InsufficientPlateaux, ParameterError, warn
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.optics.thermal import S_PRIOR_UM_PER_DEGC
from plato_sim.optics.wavefront import FieldAberrations, dz_to_z4_nm
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX
from plato_sim.psf.fast import FastEngine, phasor
from plato_sim.stamps import ccd_to_focal_plane_orientation
from plato_sim.truth.bestfocus import TRUTH_N_SUB, subpixel_grid

__all__ = [
    "forward_bft",
    "physics_labels",
    "thermal_shift_um",
    "thermal_slope_um_per_degC",
    "ForwardModel",
    "PARAM_NAMES",
    "LOCAL_TERMS",
    "SYSTEMATIC_SIGMA_DEGC",
    "MISFIT_SIGMA_DEGC",
    "systematic_term_degC",
    "beyond_calibration",
    "CHI2_WARN",
    "FIT_VERSION",
    "same_fit_as_current",
    "earlier_kept",
    "field_distance_deg",
    "solve_thermal",
]

log = logging.getLogger(__name__)

#: Version of the fit's procedure (start, restarts, Jacobian, T_BF numerics), with
#: :data:`MODEL_TAG` in the names of cached results: a change that moves answers bumps it.
#: 2: restarts from b +-10 um, T_BF on the 24 x 24 grid, the Jacobian on a 12-px period;
#: 3: the T_BF maximum refined by a parabola through 5 points 0.5 um apart;
#: 4: a wide starting scan (+-200 um) when the restarts end above the chi^2 warning;
#: 5: runs from the wide scan's other basins when the fit still ends beyond the calibrated
#: chi^2 range (:data:`MISFIT_CHI2_CALIBRATED`, part of the procedure: changing it bumps this);
#: 6: with exactly two plateaux ``q`` is held at 0 and its prior enters sigma analytically
#: (:data:`TWO_PLATEAU_FIT_SINCE`; fits of other plateau counts are those of 5).
FIT_VERSION = 6
#: The version since which two-plateau fits are made as now (``q`` not fitted): an earlier
#: two-plateau fit is never reused (:func:`same_fit_as_current`).
TWO_PLATEAU_FIT_SINCE = 6
#: Earliest procedure version whose fits ending at a reduced chi^2 <= :data:`CHI2_WARN` are
#: those of the current one bit for bit (version 4 changed only what follows a fit that ends
#: above it): kept results of such fits may be reused (:func:`same_fit_as_current`).
SAME_WITHIN_MODEL_SINCE = 3
#: Earliest procedure version whose fits ending within the calibrated chi^2 range
#: (not :func:`beyond_calibration`) are those of the current one (version 5 changed only what
#: follows a fit that ends beyond it).
SAME_WITHIN_CALIBRATION_SINCE = 4
#: Names the fitted model (basis and fit schedule): calibration results of another are stale.
MODEL_TAG = "z22-field-q"
#: Noll terms of the fitted wavefront: every term through radial order 6 (Z22, secondary
#: spherical).  The design model stops at Z11; real refractive cameras carry secondary
#: astigmatism, coma, trefoil, quadrafoil and spherical at the tens of nm (docs/forward.md).
N_FIT_ZERNIKE = 22
#: Local optical state of one (field, plateau): the OTF's free directions.
LOCAL_TERMS = (
    ("dz_um",) + tuple(f"Z{j}" for j in range(5, N_FIT_ZERNIKE + 1)) + ("chrom_scale", "chrom_lin")
)
_N_DIRECT = 1 + N_FIT_ZERNIKE - 4  # dz and the Zernike terms: derivatives through the pupil
#: Global parameters (``q`` free with its prior unless ``quadratic=False``); the smooth field
#: model of the module docstring.  They come first in the parameter vector.
PARAM_NAMES = (
    "b_um", "s_um_per_degC", "q_um_per_degC2",
    "tilt_x_um", "tilt_y_um", "curv_c2_um", "curv_c4_um",
    "astig_A_nm", "Z5_0_nm", "Z6_0_nm", "Z5_x_nm", "Z5_y_nm", "Z6_x_nm", "Z6_y_nm",
    "coma_C_nm", "Z7_0_nm", "Z8_0_nm",
    "Z9_0_nm", "Z10_0_nm",
    "sph_0_nm", "sph_2_nm",
    "chrom_scale", "chrom_lin_um", "diffusion_sigma_px",
)  # fmt: skip
_IX = {n: i for i, n in enumerate(PARAM_NAMES)}
#: Per-field residual terms, added to the smooth model at one field position: its own focal
#: offset (CCD height steps, local flatness of the focal plane) and its own Z5..Z22.  They
#: follow the global parameters, field by field.
FIELD_TERMS = ("dz_um",) + tuple(f"Z{j}_nm" for j in range(5, N_FIT_ZERNIKE + 1))
#: Prior sigma of the thermal curvature ``q`` (um/degC^2, ASSUMED): the non-linear expansion
#: of the titanium and glass stack over the tens of degC between ambient and the plateaux;
#: 0.05 um/degC^2 bends focus by 1.25 um (0.12 degC) 5 degC from ``T_ref``.  With three or
#: more plateaux the data measure ``q``; with fewer, its prior enters the sigma of T_BF.
Q_PRIOR_UM_PER_DEGC2 = 0.05
#: Weak Gaussian prior sigmas around the design (starting) values: wide against anything the
#: data measure (ASSUMED; they only keep unmeasured directions finite) but ``q``'s.
PRIOR_SIGMA = {
    "b_um": 1e4, "s_um_per_degC": 1e3, "q_um_per_degC2": Q_PRIOR_UM_PER_DEGC2,
    "tilt_x_um": 100.0, "tilt_y_um": 100.0, "curv_c2_um": 200.0, "curv_c4_um": 200.0,
    "astig_A_nm": 1000.0, "Z5_0_nm": 300.0, "Z6_0_nm": 300.0, "Z5_x_nm": 300.0,
    "Z5_y_nm": 300.0, "Z6_x_nm": 300.0, "Z6_y_nm": 300.0,
    "coma_C_nm": 1000.0, "Z7_0_nm": 300.0, "Z8_0_nm": 300.0,
    "Z9_0_nm": 300.0, "Z10_0_nm": 300.0,
    "sph_0_nm": 1000.0, "sph_2_nm": 500.0,
    "chrom_scale": 2.0, "chrom_lin_um": 10.0, "diffusion_sigma_px": 0.2,
    "chrom_cub_um": 5.0,
}  # fmt: skip
#: The optional cubic chromatic term (``forward_bft(chromatic_cubic=True)``): focal shift
#: ``chrom_cub_um * ((lambda - chrom_ref) / 100 nm)^3`` on top of the design-shaped and linear
#: ones, a global parameter after :data:`PARAM_NAMES`.  A refractive camera's secondary
#: spectrum need not have the design's shape; a cubic left out biases the EEF peak, which few
#: plateaux far from focus see only through the model (docs/forward.md, "Two plateaux").
#: Its prior sigma (in :data:`PRIOR_SIGMA`, ASSUMED) is weak: 5 um per (100 nm)^3 is 30 um at
#: the band edges, several times the design's secondary spectrum there.
CUBIC_CHROM_PARAM = "chrom_cub_um"
#: Prior sigmas of the per-field residuals (ASSUMED): a focal offset of 20 um (twice the CCD
#: flatness and height tolerances of order 10 um), 100 nm for each Zernike term (several
#: times the secondary aberrations expected of a refractive design): wide against what a
#: field's frames measure over two or more plateaux, they carry a one-plateau fit, where one
#: defocused image constrains a field's wavefront less, towards the smooth model.
FIELD_PRIOR_SIGMA = {"dz_um": 20.0, "Z_nm": 100.0}
#: Thermal sensitivity prior used when one plateau cannot measure ``s`` (um/degC).
S_PRIOR_ONE_PLATEAU = S_PRIOR_UM_PER_DEGC
#: Calibrated systematic sigma (degC) by number of plateaux, added in quadrature to the sigma of
#: a fit *within* its model (chi^2 test passed): the 68.27th percentile of
#: ``sqrt(max(0, error^2 - sigma_stat^2))`` over the unflagged fits of the calibration families
#: (12 design-family cameras with random test designs like real campaigns, 10-40 fields, 5-25
#: dithers, 1-4 frames, where the fit's own sigma is small enough to show the floor; 2 of 12
#: high-order cameras at strength 0.05-0.3 that passed the chi^2 test; their own seed streams,
#: never a benchmark camera, never the nodal family).  ``python -m
#: plato_cnn.pipelines.calibrate_forward --family design-random highorder-mild highorder`` on
#: 2026-12-03/04 (FIT_VERSION 4, TRUTH_VERSION 2; stopped after 12 + 12 + 0 cameras of fit 4,
#: tables rebuilt from the kept results; results/measured/forward_calibration_families.json):
#: RMS 0.0048 / 0.0085 degC with 5 / 3 plateaux (14 fits), coverage 57 % without the term and
#: 64 % with it.  With 2 and 1 plateaux the q and s priors make sigma wider than the errors.
SYSTEMATIC_SIGMA_DEGC: dict[str, float] = {"5": 0.0013, "3": 0.0029, "2": 0.0, "1": 0.0}
#: For fits flagged ``outside_model`` (chi^2 test failed: aberrations outside the basis) the
#: systematic term grows with the misfit: ``MISFIT_SIGMA_DEGC[n] * sqrt(chi2_red - 1)``
#: (:func:`systematic_term_degC`), the coefficient being the 68.27th percentile of
#: ``sqrt(max(0, error^2 - sigma_stat^2)) / sqrt(chi2_red - 1)`` over the flagged fits of the
#: same run: 10 mild high-order cameras (chi^2_red 1.6-2.7) and 4 high-order cameras at
#: strength 1 (chi^2_red 5-24; fit 3, whose wide scan fit 4 adds only for a new basin); 9-14
#: fits per plateau count.  RMS 0.053 / 0.055 / 0.16 / 3.3 degC, coverage with the term 64 /
#: 64 / 69 / 78 % (5 / 3 / 2 / 1).  A constant term from the same fits covered 90 % of the
#: mild and none of the strength-1 fits with 5 plateaux (3: 80 / 25 %), this one 70 / 50 %
#: (3: 60 / 75 %): the error grows with the misfit the chi^2 sees.
MISFIT_SIGMA_DEGC: dict[str, float] = {"5": 0.0122, "3": 0.023, "2": 0.0026, "1": 0.0}
#: The largest reduced chi^2 among the flagged fits that calibrated :data:`MISFIT_SIGMA_DEGC`
#: (same run, ``chi2_reduced_range`` in results/measured/forward_calibration_families.json),
#: by plateau count.  Beyond it the misfit term would be extrapolated: the fit ended in a
#: model that does not describe the images (another basin of the thermal offset, or optics
#: far outside the basis), whose T_BF error no calibration has measured (an out-of-family
#: 3-plateau fit of procedure 4 at chi^2_red 303 was 29 degC off with a term of 0.4), so its sigma
#: becomes :data:`UNCALIBRATED_SIGMA_DEGC` (:func:`beyond_calibration`).
MISFIT_CHI2_CALIBRATED: dict[str, float] = {"5": 21.1, "3": 23.6, "2": 18.0, "1": 104.0}
#: Reduced chi^2 (whole fit, or any single field) above which the model is declared
#: inadequate (an aberration outside the fitted basis): warning and ``outside_model``.
CHI2_WARN = 1.5
CHI2_WARN_FIELD = 2.5


def beyond_calibration(n_plateaux: int, chi2_reduced: float) -> bool:
    """Whether a fit's reduced chi^2 lies beyond the range over which the misfit term of its
    plateau count was calibrated (:data:`MISFIT_CHI2_CALIBRATED`; for a count without a range,
    the narrowest of them)."""
    top = MISFIT_CHI2_CALIBRATED.get(str(n_plateaux), min(MISFIT_CHI2_CALIBRATED.values()))
    return chi2_reduced > top


def systematic_term_degC(n_plateaux: int, chi2_reduced: float, outside: bool) -> float | None:
    """The calibrated systematic sigma (degC) of a fit with ``n_plateaux`` plateaux: the
    constant of :data:`SYSTEMATIC_SIGMA_DEGC` within the model, the misfit term
    ``MISFIT_SIGMA_DEGC * sqrt(chi2_reduced - 1)`` for a fit flagged outside it,
    :data:`UNCALIBRATED_SIGMA_DEGC` for one beyond the calibrated chi^2 range
    (:func:`beyond_calibration`); None when that plateau count is not calibrated."""
    key = str(n_plateaux)
    if outside and beyond_calibration(n_plateaux, chi2_reduced):
        return UNCALIBRATED_SIGMA_DEGC
    if outside:
        if key not in MISFIT_SIGMA_DEGC:
            return None
        return MISFIT_SIGMA_DEGC[key] * math.sqrt(max(chi2_reduced - 1.0, 0.0))
    return SYSTEMATIC_SIGMA_DEGC.get(key)


def same_fit_as_current(
    fit_version: int, chi2_reduced: float, n_plateaux: int | None = None
) -> bool:
    """Whether a fit made by procedure ``fit_version`` with ``n_plateaux`` plateaux that ended
    at ``chi2_reduced`` is the one the current procedure would make (so that a result kept
    from it may be reused); without ``n_plateaux`` only fits within the model count, and none
    made before :data:`TWO_PLATEAU_FIT_SINCE` (it may be a two-plateau fit)."""
    if fit_version == FIT_VERSION:
        return True
    if fit_version >= FIT_VERSION:
        return False
    if fit_version < TWO_PLATEAU_FIT_SINCE and n_plateaux in (None, 2):
        return False
    if SAME_WITHIN_MODEL_SINCE <= fit_version and chi2_reduced <= CHI2_WARN:
        return True
    return (
        SAME_WITHIN_CALIBRATION_SINCE <= fit_version
        and n_plateaux is not None
        and not beyond_calibration(n_plateaux, chi2_reduced)
    )


def earlier_kept(path_of: Callable[[int], str | Path]) -> Iterator[tuple[int, dict]]:
    """``(version, content)`` of the results that earlier fit procedures kept, newest first:
    ``path_of(version)`` names each one's JSON file (absent ones are skipped).  Whether a fit
    in them may be reused is :func:`same_fit_as_current`'s to say, fit by fit."""
    for v in range(FIT_VERSION - 1, 0, -1):
        path = Path(path_of(v))
        if path.is_file():
            yield v, json.loads(path.read_text())


#: The OTF derivatives (the costly part: ~6 OTFs' worth per state) are recomputed after a
#: step that lowered the cost by more than this fraction; smaller steps reuse them (exact
#: residuals, approximate Jacobian: slower convergence near the end, same fixed point).
JACOBIAN_REFRESH = 0.25
#: Image period (px) of the Jacobian's engine (at least the stamp + 1): the OTF derivatives
#: on a 12-px period cost ~0.55 of those on the model's 16 px (smaller FFTs), and differ
#: only by the wrap-around of the far wings (a Levenberg-Marquardt path change; the
#: loss cannot change because the residuals always come from the full model).
JACOBIAN_FOV_PX = 12
#: Sub-pixel grid (n x n) of the per-field best focus (``field_focus``): the grid of the
#: synthetic datasets' ``dz_field_best_um`` labels (docs/datasets.md), which physics labels
#: for fine-tuning must match.
FIELD_FOCUS_N_SUB = 4
#: Shifts (um) of the starting thermal offset ``b`` for a restart when a converged fit's
#: reduced chi^2 exceeds :data:`CHI2_WARN` (a local minimum: on a nodal camera the scanned
#: start ended at chi^2 40, starts 10 um either side at 1.03, errors 0.41 vs 0.01 degC).
RESTART_SHIFTS_UM = (10.0, -10.0)
#: Half-range (um) of the starting scan of ``b`` around the focus expected at the plateaux'
#: mean temperature: best focus within ~10 degC of it.
START_SCAN_HALF_RANGE_UM = 100.0
#: When the restarts still end above :data:`CHI2_WARN`, the scan is repeated over this
#: half-range (~20 degC at 10 um/degC: a test's best focus may lie 16 degC from the mean of
#: its plateaux) and, if its best ``b`` lies more than :data:`NEW_BASIN_UM` from the first
#: start, the fit runs again from there (a design camera with T_BF 12 degC from the
#: plateaux' mean ended at chi^2_red 1240 and 5 degC off from the first scan).
WIDE_SCAN_HALF_RANGE_UM = 200.0
NEW_BASIN_UM = 20.0
#: At most this many further runs from the wide scan's other local minima for a fit still
#: beyond the calibrated chi^2 range (:func:`_other_basins`).
OTHER_BASINS = 2
#: Sigma (degC) of a fit beyond the calibrated chi^2 range (:func:`beyond_calibration`): that
#: of a T_BF known only to lie within the fit's widest search, uniform over
#: +-:data:`WIDE_SCAN_HALF_RANGE_UM` at the nominal sensitivity (docs/facts.md), 11.5 degC:
#: the fit says where it ended, not how far that is from the truth.
UNCALIBRATED_SIGMA_DEGC = WIDE_SCAN_HALF_RANGE_UM / S_PRIOR_UM_PER_DEGC[0] / math.sqrt(3.0)
#: Frames per optical state (the first ones) in the starting scan of the thermal offset.
START_FRAMES_PER_STATE = 8
#: Spectrum samples and sub-pixel grid (n x n) of the coarse grid that brackets the maximum
#: of the expected EEF (and of the plot's curve over the plateaux); the maximum itself is
#: placed by the full model with the exact ``n_sub x n_sub`` definition.
COARSE_SEARCH = {"n_wavelengths": 3, "n_sub": 4}
#: Pixel-response non-uniformity (fraction) in the variance (detector default, ASSUMED 1 %).
PRNU_FRACTION = 0.01
#: Cauchy scale of the robust loss (in sigmas of the normalised residual) at the solution.
CAUCHY_C = 5.0
#: Far from the solution the Cauchy scale grows with the measured spread of the normalised
#: residuals (``CAUCHY_C sqrt(Q95(e^2) / 3.841)``, 3.841 the 95 % point of chi^2 with one
#: degree of freedom: the value when the model fits).  A fixed 5-sigma scale there would
#: down-weight the star's core, the few pixels that carry the wavefront, and leave the fit in
#: a local minimum; the 95 % point follows the core (a tenth of the box) and not the rare
#: cosmic ray or hot pixel; the scale reaches ``CAUCHY_C`` as the model converges.
E2_QUANTILE = (0.95, 3.841)
#: The first iterations are plain least squares (the fastest descent from a far start); they
#: end when an accepted step lowers the cost by less than this fraction, and from then on
#: each such step halves the Cauchy scale until it reaches ``CAUCHY_C``.
L2_PHASE_END = 0.1
#: Total read noise (e-) per frame (docs/facts.md: 38.7 and 32 e- in quadrature).
READ_NOISE_E = math.hypot(38.7, 32.0)


# ------------------------------------------------------------------------------ model
class ForwardModel:
    """The differentiable forward model of one camera's campaign (see the module docstring).

    Args:
        theta_deg, phi_deg: ``(F,)`` field positions.
        spectrum: the source spectrum (OGSE).
        engine: the fast engine (its camera gives pixel, f-number, design field radius).
        design: the design aberrations (starting point, chromatic shape).
        t_ref_degC: reference temperature of the thermal model.
        quadratic: fit ``q`` (with its prior :data:`Q_PRIOR_UM_PER_DEGC2`); ``False``: q = 0.
        field_residuals: fit the per-field residual terms (:data:`FIELD_TERMS`); without
            them the wavefront is the smooth field model alone.
        chromatic_cubic: add the cubic chromatic term (:data:`CUBIC_CHROM_PARAM`).
    """

    def __init__(
        self,
        theta_deg,
        phi_deg,
        spectrum,
        engine: FastEngine,
        design: FieldAberrations,
        t_ref_degC: float,
        quadratic: bool = True,
        field_residuals: bool = True,
        chromatic_cubic: bool = False,
    ) -> None:
        self.eng = engine
        self.cubic = bool(chromatic_cubic)
        # the cubic term, when fitted, is one more local direction and one more global
        # parameter after the others; without it the layout is PARAM_NAMES / LOCAL_TERMS
        self.global_names = PARAM_NAMES + ((CUBIC_CHROM_PARAM,) if self.cubic else ())
        self.n_g = len(self.global_names)
        self.local_terms = LOCAL_TERMS + (("chrom_cub",) if self.cubic else ())
        self.sp = spectrum
        self.design = design
        self.t_ref = float(t_ref_degC)
        self.quadratic = bool(quadratic)
        h = np.asarray(theta_deg, float) / design.field_radius_deg
        ph = np.radians(np.asarray(phi_deg, float))
        self.fx, self.fy, self.fh2 = h * np.cos(ph), h * np.sin(ph), h * h
        self.kz4 = float(dz_to_z4_nm(1.0, engine.camera.f_number))
        self.dtype = engine.dtype
        self.dev = engine.device
        self.dirs = self._directions(spectrum)
        self.k = engine.n_freq(spectrum)
        self.eng_jac, self.k_jac = engine, self.k
        self.set_jacobian_spectrum(spectrum)
        n_f = len(self.fx)
        self.param_names = self.global_names + tuple(
            f"field{f}_{t}" for f in range(n_f) for t in FIELD_TERMS
        )
        self.n_par = len(self.param_names)
        self.free = np.ones(self.n_par, bool)
        if not self.quadratic:
            self.free[_IX["q_um_per_degC2"]] = False
        self.field_residuals = bool(field_residuals)
        if not self.field_residuals:
            self.free[self.n_g :] = False

    def _chrom_factors(self, lam_nm) -> np.ndarray:
        """``(C, L)``: focal shift (um) per unit of ``chrom_scale``, of ``chrom_lin_um`` and,
        with the cubic term, of ``chrom_cub_um``."""
        lam = np.asarray(lam_nm, float)
        x = (lam - self.design.chrom_ref_nm) / 100.0
        rows = [np.asarray(self.design.chromatic_shift_um(lam), float), x]
        if self.cubic:
            rows.append(x**3)
        return np.stack(rows)

    def _directions(self, spectrum) -> torch.Tensor:
        """Direction ``(T, L, J)`` of each local term in Noll space (nm per unit)."""
        e = np.zeros((len(self.local_terms), spectrum.n, N_FIT_ZERNIKE))
        e[0, :, 3] = self.kz4
        for j in range(_N_DIRECT - 1):
            e[1 + j, :, 4 + j] = 1.0
        e[_N_DIRECT:, :, 3] = self.kz4 * self._chrom_factors(spectrum.wavelengths_array_nm)
        return torch.as_tensor(e, dtype=self.dtype, device=self.dev)

    def prior_sigma(self) -> np.ndarray:
        """Prior sigma of every parameter (:data:`PRIOR_SIGMA`, :data:`FIELD_PRIOR_SIGMA`)."""
        sig = np.array([PRIOR_SIGMA[n] for n in self.global_names], float)
        per_field = np.array(
            [FIELD_PRIOR_SIGMA["dz_um"]] + [FIELD_PRIOR_SIGMA["Z_nm"]] * (len(FIELD_TERMS) - 1)
        )
        return np.concatenate([sig, np.tile(per_field, len(self.fx))])

    def coarse(self, n_wavelengths: int) -> ForwardModel:
        """The same model with a coarser OGSE spectrum (starting scans, coarse searches)."""
        sp = ogse_spectrum(self.eng.camera, n_wavelengths, rule=self.sp.rule)
        if sp.n >= self.sp.n:
            return self
        m = ForwardModel.__new__(ForwardModel)
        m.__dict__.update(self.__dict__)
        m.sp = sp
        m.dirs = self._directions(sp)
        return m

    def set_jacobian_spectrum(self, spectrum) -> None:
        """Spectrum (same band) used for the Jacobian only."""
        self.sp_jac = spectrum
        self.dirs_jac = self._directions(spectrum)

    def set_jacobian_period(self, fov_px: int) -> None:
        """Image period (px) of the Jacobian's engine.

        A shorter period than the model's samples the pupil more coarsely (FFTs of about
        ``(fov_px / model's)^2`` the size); the derivative images differ only by the
        wrap-around of the star's far wings, which changes the Levenberg-Marquardt path and
        not its fixed point (the residuals are always those of the full model).
        """
        if fov_px >= self.eng.fov_px:
            self.eng_jac, self.k_jac = self.eng, self.k
            return
        self.eng_jac = self.eng.replace(fov_px=fov_px)
        self.k_jac = self.eng_jac.n_freq(self.sp)

    # ---- parameters
    def initial_params(self, b_um: float, s: float = 10.0) -> np.ndarray:
        """Design values as the starting point (per-field residuals zero)."""
        d = self.design
        p = np.zeros(self.n_par)
        p[_IX["b_um"]] = b_um
        p[_IX["s_um_per_degC"]] = s
        p[_IX["curv_c2_um"]] = d.curvature_c2_um
        p[_IX["curv_c4_um"]] = d.curvature_c4_um
        p[_IX["astig_A_nm"]] = d.astig_nm
        p[_IX["coma_C_nm"]] = d.coma_nm
        p[_IX["sph_0_nm"]] = d.spherical0_nm
        p[_IX["sph_2_nm"]] = d.spherical2_nm
        p[_IX["chrom_scale"]] = 1.0
        p[_IX["diffusion_sigma_px"]] = DEFAULT_DIFFUSION_SIGMA_PX
        return p

    def local_matrix(self, field_idx: np.ndarray, t_degC: np.ndarray) -> np.ndarray:
        """``A (B, T, P)``: the local states ``u = A p`` (:data:`LOCAL_TERMS`) of fields
        ``field_idx`` at TRP1 temperatures ``t_degC``."""
        f = np.asarray(field_idx, int)
        tc = np.asarray(t_degC, float) - self.t_ref
        x, y, h2 = self.fx[f], self.fy[f], self.fh2[f]
        a = np.zeros((len(f), len(self.local_terms), self.n_par))
        ix = _IX
        a[:, 0, ix["b_um"]] = 1.0
        a[:, 0, ix["s_um_per_degC"]] = tc
        a[:, 0, ix["q_um_per_degC2"]] = tc * tc
        a[:, 0, ix["tilt_x_um"]] = x
        a[:, 0, ix["tilt_y_um"]] = y
        a[:, 0, ix["curv_c2_um"]] = h2
        a[:, 0, ix["curv_c4_um"]] = h2 * h2
        a[:, 1, ix["astig_A_nm"]] = 2 * x * y
        a[:, 1, ix["Z5_0_nm"]] = 1.0
        a[:, 1, ix["Z5_x_nm"]] = x
        a[:, 1, ix["Z5_y_nm"]] = y
        a[:, 2, ix["astig_A_nm"]] = x * x - y * y
        a[:, 2, ix["Z6_0_nm"]] = 1.0
        a[:, 2, ix["Z6_x_nm"]] = x
        a[:, 2, ix["Z6_y_nm"]] = y
        a[:, 3, ix["coma_C_nm"]] = y
        a[:, 3, ix["Z7_0_nm"]] = 1.0
        a[:, 4, ix["coma_C_nm"]] = x
        a[:, 4, ix["Z8_0_nm"]] = 1.0
        a[:, 5, ix["Z9_0_nm"]] = 1.0
        a[:, 6, ix["Z10_0_nm"]] = 1.0
        a[:, 7, ix["sph_0_nm"]] = 1.0
        a[:, 7, ix["sph_2_nm"]] = h2
        a[:, _N_DIRECT, ix["chrom_scale"]] = 1.0
        a[:, _N_DIRECT + 1, ix["chrom_lin_um"]] = 1.0
        if self.cubic:
            a[:, _N_DIRECT + 2, self.n_g - 1] = 1.0
        rows = np.arange(len(f))
        for t in range(_N_DIRECT):  # per-field residuals: dz and Z5..Z22
            a[rows, t, self.n_g + f * len(FIELD_TERMS) + t] = 1.0
        return a

    def field_columns(self, field_idx) -> np.ndarray:
        """``(B, C)``: the parameters that a state of field ``field_idx`` depends on (the
        globals and that field's residuals): the sparsity of :meth:`local_matrix`."""
        f = np.asarray(field_idx, int)
        g = self.n_g
        own = g + f[:, None] * len(FIELD_TERMS) + np.arange(len(FIELD_TERMS))[None]
        return np.concatenate([np.broadcast_to(np.arange(g), (len(f), g)), own], axis=1)

    def zernikes(self, u: torch.Tensor) -> torch.Tensor:
        """Local states ``(B, T)`` -> Noll coefficients ``(B, L, J)`` (nm)."""
        return torch.einsum("bt,tlj->blj", u, self.dirs)

    # ---- OTF
    def otf(self, u: np.ndarray | torch.Tensor, with_jac: bool = False, chunk: int = 4):
        """OTF ``(B, 2K+1, K+1)`` of local states ``u (B, T)`` and, optionally, its
        derivatives ``(B, T, 2K+1, K+1)``.

        The derivatives are analytic forward-mode (``dP = i 2 pi/lambda dW P``, ``dI = 2
        Re(E* dE)``, normalisation included), computed with the coarser spectrum
        ``self.sp_jac``: an approximate Jacobian only changes the Levenberg-Marquardt path,
        not the fixed point, whose residuals are those of the full model.
        """
        u = torch.as_tensor(u, dtype=self.dtype, device=self.dev)
        outs, jacs = [], []
        with torch.no_grad():
            for s in range(0, u.shape[0], chunk):
                z0 = self.zernikes(u[s : s + chunk])
                outs.append(self.eng.otf(z0, self.sp))
                if with_jac:
                    jacs.append(self._jac(u[s : s + chunk]))
        o = torch.cat(outs)
        return (o, torch.cat(jacs)) if with_jac else o

    def jac(self, u: np.ndarray | torch.Tensor, chunk: int = 4) -> torch.Tensor:
        """The derivatives of :meth:`otf` alone (its OTF already known at ``u``)."""
        u = torch.as_tensor(u, dtype=self.dtype, device=self.dev)
        with torch.no_grad():
            return torch.cat([self._jac(u[s : s + chunk]) for s in range(0, u.shape[0], chunk)])

    def _jac(self, u: torch.Tensor) -> torch.Tensor:
        eng, sp, k = self.eng_jac, self.sp_jac, self.k_jac
        z = torch.einsum("bt,tlj->blj", u, self.dirs_jac)
        b = u.shape[0]
        n_t = _N_DIRECT  # the chromatic directions are chrom(lambda) x the dz one
        chrom = self._chrom_factors(sp.wavelengths_array_nm)
        total = None
        for li, (lam, w) in enumerate(zip(sp.wavelengths_nm, sp.weights, strict=True)):
            g = eng._grid(lam, N_FIT_ZERNIKE, k)
            m = g["m"]
            kk = 2.0 * math.pi / lam
            phase = (z[:, li, :] @ g["basis"]) * kk
            vals = phasor(phase, g["amp"])  # (b, npx)
            dw = (self.dirs_jac[:n_t, li, :] @ g["basis"]) * kk  # (T, npx)
            allv = torch.empty((b, 1 + n_t, vals.shape[1]), dtype=eng.cdtype, device=self.dev)
            allv[:, 0] = vals
            torch.mul(vals[:, None], 1j * dw[None], out=allv[:, 1:])
            pupil = torch.zeros((b * (1 + n_t), m * m), dtype=eng.cdtype, device=self.dev)
            pupil.index_copy_(1, g["idx_m"], allv.reshape(b * (1 + n_t), -1))
            field = torch.fft.ifft2(pupil.reshape(-1, m, m)).reshape(b, 1 + n_t, m, m)
            e0 = field[:, :1]
            inten = torch.cat(
                [e0.real**2 + e0.imag**2, 2.0 * (e0.conj() * field[:, 1:]).real], dim=1
            )
            # rfft2 pruned to the K+1 columns kept (the same numbers, ~1/3 fewer FFTs)
            o = torch.fft.fft(torch.fft.rfft(inten, dim=-1)[..., : k + 1], dim=-2)
            o = torch.cat([o[..., m - k :, :], o[..., : k + 1, :]], dim=-2)
            nrm = o[:, :1, k : k + 1, 0:1].real
            dn = o[:, 1:, k : k + 1, 0:1].real
            d = o[:, 1:] / nrm - o[:, :1] * dn / nrm**2
            d = torch.cat([d] + [d[:, :1] * float(c) for c in chrom[:, li]], dim=1)
            total = d * w if total is None else total + d * w
        return total

    def transfer(self, sigma_px: float, jac: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel box x diffusion ``(2K+1, K+1)`` with the Hermitian weights, and its
        derivative with respect to the diffusion sigma (px); on the Jacobian's grid with
        ``jac``."""
        eng, k = (self.eng_jac, self.k_jac) if jac else (self.eng, self.k)
        q = torch.arange(-k, k + 1, dtype=self.dtype, device=self.dev)
        qx = torch.arange(0, k + 1, dtype=self.dtype, device=self.dev)
        p = eng.camera.pixel_um
        fy = q[:, None] / eng.fov_um
        fx = qx[None, :] / eng.fov_um
        f2 = (fx**2 + fy**2) * p * p
        box = torch.sinc(fy * p) * torch.sinc(fx * p)
        t = box * torch.exp(-2.0 * math.pi**2 * sigma_px**2 * f2)
        wq = torch.full((k + 1,), 2.0, dtype=self.dtype, device=self.dev)
        wq[0] = 1.0
        t = t * wq
        return t, t * (-4.0 * math.pi**2 * sigma_px * f2)

    def stamps(
        self, h: torch.Tensor, off: torch.Tensor, size: int, deriv: bool = False, jac: bool = False
    ):
        """Stamps ``(B, F, C, S, S)`` of transfer-multiplied OTF channels ``h (B, C, ...)`` at
        offsets ``off (B, F, 2)``; with ``deriv`` also d/d(dx), d/d(dy) of channel 0; ``h`` on
        the Jacobian's grid with ``jac``."""
        k, n_l = (self.k_jac, self.eng_jac.fov_px) if jac else (self.k, self.eng.fov_px)
        w = 2.0 * math.pi / n_l
        pos = torch.arange(size, dtype=self.dtype, device=self.dev) - size // 2
        xs = pos - off[..., 0:1]
        ys = pos - off[..., 1:2]
        q = torch.arange(-k, k + 1, dtype=self.dtype, device=self.dev)
        qx = torch.arange(0, k + 1, dtype=self.dtype, device=self.dev)
        ey = phasor(ys[..., None] * q * w)
        ex = phasor(xs[..., None] * qx * w)
        tmp = torch.einsum("bfiy,bcyx->bfcix", ey, h)
        st = torch.einsum("bfcix,bfjx->bfcij", tmp, ex).real / n_l**2
        if not deriv:
            return st
        dqx = (-1j * w) * qx.to(ex.dtype)
        dq = (-1j * w) * q.to(ey.dtype)
        sdx = torch.einsum("bfix,bfjx->bfij", tmp[:, :, 0], ex * dqx).real / n_l**2
        tmpy = torch.einsum("bfiy,byx->bfix", ey * dq, h[:, 0])
        sdy = torch.einsum("bfix,bfjx->bfij", tmpy, ex).real / n_l**2
        return st, sdx, sdy


# ------------------------------------------------------------------------------ data
def _prepare(frames, plateaux, size: int, include_unstable: bool):
    from plato_cnn.reader import FLAG_UNSTABLE

    ignore = FLAG_UNSTABLE if include_unstable else 0
    use = (frames.flags & ~np.uint16(ignore)) == 0
    if plateaux is not None:
        use &= frames.plateau_mask(list(plateaux))
    if not np.any(use):
        raise InsufficientPlateaux(
            "forward fit: no usable frame in the chosen plateaux "
            f"({plateaux if plateaux is not None else 'all'}); need >= 1 plateau with frames"
        )
    sel = frames.select(use)
    st = ccd_to_focal_plane_orientation(
        sel.stamps, sel.ccd, PLATO_NORMAL_CAMERA.ccd_orientation_deg
    )
    c, r = st.shape[-1] // 2, size // 2
    if st.shape[-1] < size + 2:
        raise ParameterError(f"stamp_px={size}: must be <= {st.shape[-1] - 2} for these stamps")
    crop = st[:, c - r : c - r + size, c - r : c - r + size].astype(np.float64)
    return sel, crop


def _centroids(crop: np.ndarray) -> np.ndarray:
    s = crop.shape[-1]
    pos = np.arange(s) - s // 2
    a = np.clip(crop, 0, None)
    tot = a.sum(axis=(1, 2)) + 1e-9
    dx = (a.sum(axis=1) * pos).sum(axis=1) / tot
    dy = (a.sum(axis=2) * pos).sum(axis=1) / tot
    return np.clip(np.stack([dx, dy], axis=1), -0.8, 0.8)


# ------------------------------------------------------------------------------ fitter
class _Fit:
    """State of one campaign fit (states padded to the same frame count)."""

    def __init__(self, model: ForwardModel, data, state_field, state_temp, frame_state, size):
        self.m = model
        dev, dt = model.dev, model.dtype
        n_states = len(state_field)
        counts = np.bincount(frame_state, minlength=n_states)
        fm = int(counts.max())
        slot = np.zeros(len(frame_state), int)
        for s in range(n_states):
            slot[frame_state == s] = np.arange(counts[s])
        self.frame_state, self.slot = frame_state, slot
        d = np.zeros((n_states, fm, size, size))
        d[frame_state, slot] = data
        valid = np.zeros((n_states, fm), bool)
        valid[frame_state, slot] = True
        self.data = torch.as_tensor(d, dtype=dt, device=dev)
        self.valid = torch.as_tensor(valid, dtype=dt, device=dev)
        self.size = size
        a = model.local_matrix(state_field, state_temp)
        self.a = torch.as_tensor(a, dtype=torch.float64, device=dev)
        # the normal equations live in local-state space (T + 1: the diffusion sigma last)
        # and reach the parameters through each state's few columns (sparse A)
        cols = model.field_columns(state_field)
        a_red = np.take_along_axis(a, cols[:, None, :], axis=2)
        diff = np.zeros((len(cols), 1, cols.shape[1]))
        diff[:, 0, _IX["diffusion_sigma_px"]] = 1.0
        self.cols = torch.as_tensor(cols, device=dev)
        self.a_red = torch.as_tensor(
            np.concatenate([a_red, diff], axis=1), dtype=torch.float64, device=dev
        )
        self.n_par = model.n_par
        self.cauchy_c = CAUCHY_C
        self.last_e2_q = E2_QUANTILE[1]
        self.state_field, self.state_temp = state_field, state_temp
        self.var_floor = READ_NOISE_E**2 * 1.5
        self.n_obs = int(valid.sum()) * size * size

    def local(self, p: np.ndarray) -> np.ndarray:
        return (self.a.cpu().numpy() @ p).astype(float)

    def _model_chunk(self, o, j, n, sig, sl, deriv):
        """Model stamps (channel 0) and, with ``j``, the derivative stamps of the local terms
        (from the Jacobian's grid) and of the diffusion sigma (last channel)."""
        tr, dtr = self.m.transfer(sig)
        off = n[sl, :, 2:4]
        if j is None:
            return self.m.stamps((o * tr)[:, None], off, self.size, deriv=deriv)
        res = self.m.stamps(torch.stack([o * tr, o * dtr], dim=1), off, self.size, deriv=deriv)
        st = res[0] if deriv else res
        tr_j, _ = self.m.transfer(sig, jac=True)
        st_j = self.m.stamps(j * tr_j, off, self.size, jac=True)
        st = torch.cat([st[:, :, :1], st_j, st[:, :, 1:]], dim=2)
        return (st, *res[1:]) if deriv else st

    def evaluate(self, p, n, o, jac=None, var=None, chunk=8):
        """Cost, and with ``jac`` the Schur-ready normal-equation blocks."""
        sig = float(p[_IX["diffusion_sigma_px"]])
        b_all = self.data.shape[0]
        cost = 0.0
        chi2_state = np.zeros(b_all)
        nn_list, nl_list, gn_list, uu_list, gu_list = [], [], [], [], []
        var_out, e2_q = [], []
        for s in range(0, b_all, chunk):
            sl = slice(s, s + chunk)
            deriv = jac is not None
            out = self._model_chunk(o[sl], jac[sl] if deriv else None, n, sig, sl, deriv)
            st = out[0] if deriv else out
            flux = n[sl, :, 0, None, None]
            bg = n[sl, :, 1, None, None]
            mod = flux * st[:, :, 0] + bg
            r = self.data[sl] - mod
            v = (
                var[sl]
                if var is not None
                else (mod.clamp(min=0) + (PRNU_FRACTION * mod) ** 2 + self.var_floor)
            )
            var_out.append(v)
            e2 = r * r / v * self.valid[sl, :, None, None]
            cc = self.cauchy_c
            rho = 0.5 * e2 if math.isinf(cc) else 0.5 * cc**2 * torch.log1p(e2 / cc**2)
            e2_q.append(e2[self.valid[sl].bool()].flatten())
            cost += float(rho.sum())
            chi2_state[sl] = e2.sum(dim=(1, 2, 3)).double().cpu().numpy()
            if not deriv:
                continue
            _, sdx, sdy = out
            wgt = self.valid[sl, :, None, None] / v / (1.0 + e2 / cc**2)
            jn = torch.stack(
                [st[:, :, 0], torch.ones_like(mod), flux * sdx, flux * sdy], dim=2
            ).double()
            ju = (flux[:, :, None] * st[:, :, 1:]).double()  # (b, f, T + 1, S, S)
            wd, rd = wgt.double(), r.double()
            jw = ju * wd[:, :, None]
            uu_list.append(torch.einsum("bfkij,bflij->bkl", jw, ju))
            gu_list.append(torch.einsum("bfkij,bfij->bk", jw, rd))
            jnw = jn * wd[:, :, None]
            nn_list.append(torch.einsum("bfkij,bflij->bfkl", jnw, jn))
            nl_list.append(torch.einsum("bfkij,bflij->bfkl", jnw, ju))
            gn_list.append(torch.einsum("bfkij,bfij->bfk", jnw, rd))
        self.last_var = torch.cat(var_out)
        self.last_e2_q = float(np.quantile(torch.cat(e2_q).double().cpu().numpy(), E2_QUANTILE[0]))
        if jac is None:
            return cost, chi2_state
        m_uu, g_u = torch.cat(uu_list), torch.cat(gu_list)
        hpp = self.scatter_pp(m_uu)
        gp = self.scatter_p(g_u)
        return (
            cost,
            chi2_state,
            (hpp, gp, torch.cat(nn_list), torch.cat(nl_list), torch.cat(gn_list)),
        )

    def scatter_pp(self, m_loc: torch.Tensor) -> torch.Tensor:
        """``sum_b A_b^T M_b A_b`` for local-space matrices ``M (B, T+1, T+1)``: ``(P, P)``."""
        small = torch.einsum("bkc,bkl,bld->bcd", self.a_red, m_loc, self.a_red)
        out = torch.zeros((self.n_par, self.n_par), dtype=torch.float64, device=small.device)
        rows = self.cols[:, :, None].expand_as(small)
        cols = self.cols[:, None, :].expand_as(small)
        return out.index_put_((rows.reshape(-1), cols.reshape(-1)), small.reshape(-1), True)

    def scatter_p(self, g_loc: torch.Tensor) -> torch.Tensor:
        """``sum_b A_b^T g_b`` for local-space vectors ``g (B, T+1)``: ``(P,)``."""
        small = torch.einsum("bkc,bk->bc", self.a_red, g_loc)
        out = torch.zeros(self.n_par, dtype=torch.float64, device=small.device)
        return out.index_put_((self.cols.reshape(-1),), small.reshape(-1), True)

    def gather_u(self, dp: torch.Tensor) -> torch.Tensor:
        """Local-space change ``A_b dp`` of every state: ``(B, T+1)``."""
        return torch.einsum("bkc,bc->bk", self.a_red, dp[self.cols])


def _prior(model: ForwardModel, p0: np.ndarray, s_prior):
    mean = p0.copy()
    sig = model.prior_sigma()
    if s_prior is not None:
        mean[_IX["s_um_per_degC"]], sig[_IX["s_um_per_degC"]] = s_prior
    return mean, sig


def _solve(fit, blocks, p, lam, free, prior_mean, prior_sig):
    """One damped Gauss-Newton step: the per-frame nuisances eliminated by the Schur
    complement, state by state in local space (bundle adjustment).  Returns ``dp, dn``, the
    Laplace precision of ``p`` (nuisances marginalised, undamped) and the predicted cost
    decrease."""
    hpp, gp, hnn, hnl, gn = blocks
    valid = fit.valid
    dev = hpp.device
    pm = torch.as_tensor(prior_mean, dtype=torch.float64, device=dev)
    ps = torch.as_tensor(prior_sig, dtype=torch.float64, device=dev)
    pt = torch.as_tensor(p, dtype=torch.float64, device=dev)
    hpp = hpp + torch.diag(1.0 / ps**2)
    gp = gp - (pt - pm) / ps**2
    fr = torch.as_tensor(free, device=dev)
    # frozen parameters: identity rows
    hpp = torch.where(fr[:, None] & fr[None, :], hpp, torch.zeros_like(hpp))
    hpp = hpp + torch.diag((~fr).double())
    gp = torch.where(fr, gp, torch.zeros_like(gp))
    vm = valid.double()[..., None]
    eye4 = torch.eye(4, dtype=torch.float64, device=dev)
    hnn = hnn * vm[..., None] + eye4 * (1.0 - vm[..., None])
    hnl = hnl * vm[..., None]
    hnn_d = hnn + lam * torch.diag_embed(torch.diagonal(hnn, dim1=-2, dim2=-1)) + 1e-9 * eye4
    hpp_d = hpp + lam * torch.diag(torch.diagonal(hpp))
    inv = torch.linalg.inv(hnn_d)
    x = torch.einsum("bfkl,bflt->bfkt", inv, hnl)  # (B, F, 4, T+1)
    y = torch.einsum("bfkl,bfl->bfk", inv, gn)
    fm = fr.double()
    schur = hpp_d - fm[:, None] * fit.scatter_pp(torch.einsum("bfkt,bfku->btu", hnl, x)) * fm
    rhs = gp - fm * fit.scatter_p(torch.einsum("bfkt,bfk->bt", hnl, y))
    dp = torch.linalg.solve(schur, rhs) * fm
    dn = y - torch.einsum("bfkt,bt->bfk", x, fit.gather_u(dp))
    # undamped Schur complement: the Laplace precision of p (nuisances marginalised)
    inv0 = torch.linalg.inv(hnn + 1e-9 * eye4)
    s0 = torch.einsum("bfkt,bfkl,bflu->btu", hnl, inv0, hnl)
    prec = hpp - fm[:, None] * fit.scatter_pp(s0) * fm
    # predicted cost decrease of the (damped) Gauss-Newton step: 1/2 delta . gradient
    pred = 0.5 * float(dp @ gp + (dn * gn * vm).sum())
    return dp.cpu().numpy(), dn * vm, prec.cpu().numpy(), pred


# ------------------------------------------------------------------------------ T_BF
def _eef_torch(st: torch.Tensor) -> torch.Tensor:
    """EEF (definition) of stamps ``(..., H, W)``, differentiable with the boxes held fixed."""
    a = st.detach()
    c = torch.nn.functional.pad(a.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    s2 = c[..., 2:, 2:] - c[..., :-2, 2:] - c[..., 2:, :-2] + c[..., :-2, :-2]
    hh, ww = a.shape[-2:]
    flat = s2.reshape(s2.shape[:-2] + (-1,))
    k = flat.argmax(-1)
    r, cc = k // s2.shape[-1], k % s2.shape[-1]
    rows = torch.arange(hh, device=st.device)
    cols = torch.arange(ww, device=st.device)
    rr, cl = r[..., None], cc[..., None]
    in_r = (rows >= rr) & (rows < rr + 2)
    in_c = (cols >= cl) & (cols < cl + 2)
    out_r = (rows >= rr - 4) & (rows < rr + 6)
    out_c = (cols >= cl - 4) & (cols < cl + 6)
    mi = (in_r[..., :, None] & in_c[..., None, :]).to(st.dtype)
    mo = (out_r[..., :, None] & out_c[..., None, :]).to(st.dtype)
    return (st * mi).sum((-2, -1)) / (st * mo).sum((-2, -1))


def _field_curves(model, p, dz_th, n_sub, grad=False, chunk=4):
    """Expected EEF of every field at thermal shifts ``dz_th``, ``(D,)`` shared or ``(F, D)``
    per field: ``(F, D)``; with ``grad`` the gradient of the field mean summed over
    ``dz_th`` w.r.t. ``p`` too."""
    n_f = len(model.fx)
    dz_th = np.asarray(dz_th, float)
    n_d = dz_th.shape[-1]
    fields = np.repeat(np.arange(n_f), n_d)
    dzs = np.broadcast_to(dz_th, (n_f, n_d)).reshape(-1).copy()
    a = model.local_matrix(fields, np.full(len(fields), model.t_ref))
    # thermal part replaced by the given dz_th
    a[:, 0, _IX["b_um"]] = 0.0
    a[:, 0, _IX["s_um_per_degC"]] = 0.0
    a[:, 0, _IX["q_um_per_degC2"]] = 0.0
    offs = subpixel_grid(n_sub)
    size = model.eng.fov_px
    vals = np.empty(len(fields))
    g = np.zeros(model.n_par)
    pt = torch.tensor(p, dtype=model.dtype, device=model.dev, requires_grad=grad)
    for s in range(0, len(fields), chunk):
        sl = slice(s, s + chunk)
        at = torch.as_tensor(a[sl], dtype=model.dtype, device=model.dev)
        dzt = torch.as_tensor(dzs[sl], dtype=model.dtype, device=model.dev)
        with torch.set_grad_enabled(grad):
            u = torch.einsum("btp,p->bt", at, pt)
            u = u + torch.nn.functional.pad(dzt[:, None], (0, len(model.local_terms) - 1))
            o = model.eng.otf(model.zernikes(u), model.sp)
            sig = pt[_IX["diffusion_sigma_px"]]
            tr = _transfer_t(model, sig)
            off = torch.as_tensor(offs, dtype=model.dtype, device=model.dev)
            off = off[None].expand(o.shape[0], -1, -1)
            st = model.stamps((o * tr)[:, None], off, size)[:, :, 0]
            e = _eef_torch(st).mean(-1)
            if grad:
                (gg,) = torch.autograd.grad(e.sum() / n_f, pt)
                g += gg.double().cpu().numpy()
        vals[sl] = e.detach().double().cpu().numpy()
    v = vals.reshape(n_f, n_d)
    return (v, g) if grad else v


def _transfer_t(model, sig):
    """The transfer of :meth:`ForwardModel.transfer` with a tensor sigma (autograd)."""
    eng, k = model.eng, model.k
    q = torch.arange(-k, k + 1, dtype=model.dtype, device=model.dev)
    qx = torch.arange(0, k + 1, dtype=model.dtype, device=model.dev)
    p = eng.camera.pixel_um
    fy = q[:, None] / eng.fov_um
    fx = qx[None, :] / eng.fov_um
    f2 = (fx**2 + fy**2) * p * p
    t = torch.sinc(fy * p) * torch.sinc(fx * p) * torch.exp(-2.0 * math.pi**2 * sig**2 * f2)
    wq = torch.full((k + 1,), 2.0, dtype=model.dtype, device=model.dev)
    wq[0] = 1.0
    return t * wq


def _best_focus(
    model, p, n_sub, centre_um, step_um=8.0, fine_um=2.5, coarse_model=None, coarse_n_sub=None
):
    """Thermal shift maximising the field-averaged expected EEF; ``(dz*, F'', curve pts)``.

    A coarse grid (``coarse_model``'s spectrum and a ``coarse_n_sub`` sub-pixel grid, default
    the model's and ``n_sub``) brackets the maximum; a fine grid of the full model and the
    exact ``n_sub x n_sub`` definition around it, fitted by a parabola, places it.
    """
    centre = float(centre_um)
    pts_dz, pts_v = [], []
    cm = coarse_model or model
    for _ in range(6):
        grid = centre + step_um * np.arange(-3, 4)
        v = _field_curves(cm, p, grid, coarse_n_sub or n_sub).mean(0)
        pts_dz += list(grid)
        pts_v += list(v)
        k = int(np.argmax(v))
        if 0 < k < len(grid) - 1:
            break
        centre = float(grid[k])
    y0, y1, y2 = v[k - 1], v[k], v[k + 1]
    den = y0 - 2 * y1 + y2
    x1 = grid[k] + (0.5 * step_um * (y0 - y2) / den if den < 0 else 0.0)
    fine = x1 + fine_um * np.arange(-2, 3)
    # the two points next to the centre carry the gradient w.r.t. p too (for the sigma)
    v_out = _field_curves(model, p, fine[[0, 2, 4]], n_sub).mean(0)
    v_m, g_m = _field_curves(model, p, fine[1:2], n_sub, grad=True)
    v_p, g_p = _field_curves(model, p, fine[3:4], n_sub, grad=True)
    vf = np.array([v_out[0], v_m.mean(), v_out[1], v_p.mean(), v_out[2]])
    c2, c1, _ = np.polyfit(fine - x1, vf, 2)
    xs = x1 - c1 / (2 * c2) if c2 < 0 else fine[int(np.argmax(vf))]
    xs = float(np.clip(xs, fine[0] - fine_um, fine[-1] + fine_um))
    pts_dz += list(fine)
    pts_v += list(vf)
    # a parabola over +-5 um leaves the vertex of a skewed flat-topped curve up to ~0.03 um
    # off: placed again by one through 5 points 0.5 um apart around it
    near = xs + 0.25 * fine_um * np.arange(-2, 3)
    vn = _field_curves(model, p, near, n_sub).mean(0)
    n2, n1, _ = np.polyfit(near - xs, vn, 2)
    if n2 < 0:
        xs = float(xs + np.clip(-n1 / (2 * n2), near[0] - xs, near[-1] - xs))
    pts_dz += list(near)
    pts_v += list(vn)
    # d(field-mean EEF)/dp at dz* from the central difference of dF/dp around it
    dfdz_dp = (g_p - g_m) / (2 * fine_um)
    return xs, 2 * c2, (np.asarray(pts_dz), np.asarray(pts_v)), dfdz_dp


def _field_best_focus(model, p, centre_um, n_sub=FIELD_FOCUS_N_SUB):
    """Per field, the thermal shift (um) maximising its expected EEF (``n_sub`` grid): a
    coarse shared grid (3-wavelength spectrum) over +-60 um, then a fine grid of the full
    model around each field's maximum, placed by a parabola through its three best points."""
    cm = model.coarse(COARSE_SEARCH["n_wavelengths"])
    grid = centre_um + 6.0 * np.arange(-10, 11)
    v = _field_curves(cm, p, grid, n_sub)
    best = grid[np.argmax(v, axis=1)]
    h = 1.5
    fine = best[:, None] + h * np.arange(-4, 5)[None, :]
    v = _field_curves(model, p, fine, n_sub)
    k = np.clip(np.argmax(v, axis=1), 1, fine.shape[1] - 2)
    r = np.arange(len(k))
    y0, y1, y2 = v[r, k - 1], v[r, k], v[r, k + 1]
    den = y0 - 2 * y1 + y2
    shift = np.where(den < 0, 0.5 * h * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
    return fine[r, k] + np.clip(shift, -h, h)


def _thermal_t(p, model, dz):
    """TRP1 temperature where ``dz_th = dz`` (root nearest T_ref) and d(dz_th)/dT there."""
    b, s, q = (p[_IX[k]] for k in ("b_um", "s_um_per_degC", "q_um_per_degC2"))
    d = dz - b
    if abs(q) < 1e-12:
        tc = d / s
    else:
        disc = s * s + 4 * q * d
        tc = 2 * d / (s + np.sign(s) * math.sqrt(max(disc, 0.0)))
    return model.t_ref + tc, s + 2 * q * tc, tc


# ------------------------------------------------------------------------------ public
# Long because: the public signature and docstring document its 18 options; the body is the
# 30-line sequence of named, timed steps, each a function of its own.
def forward_bft(
    frames,
    *,
    plateaux=None,
    device: str = "cpu",
    seed: int = 0,
    max_iter: int = 40,
    stamp_px: int = 11,
    n_sub: int = TRUTH_N_SUB,
    n_wavelengths: int = 10,
    n_wavelengths_jacobian: int = 3,
    fov_px: int = 16,
    quadratic: bool = True,
    field_residuals: bool = True,
    s_prior: tuple[float, float] | None = None,
    include_unstable: bool = False,
    systematic: bool = True,
    min_frames: int = 8,
    chunk: int = 8,
    tol: float = 1e-4,
    field_focus: bool = False,
    chromatic_cubic: bool = False,
    spectrum_rule: str = "midpoint",
) -> dict:
    """Best-focus temperature of one camera by the physics forward-model fit.

    Args:
        frames: :class:`plato_cnn.reader.CampaignFrames` of the camera.
        plateaux: nominal TRP1 plateaux (degC) to use (each maps to its nearest observation,
            :meth:`CampaignFrames.plateau_mask`); ``None``: every observation.
        device: torch device (``"cpu"`` or ``"cuda"``).
        seed: seeds torch (the fit itself is deterministic).
        max_iter: Levenberg-Marquardt iterations.
        stamp_px: side of the fitted central box of each stamp (odd, pixels).
        n_sub: sub-pixel grid (n x n) of the expected EEF in ``T_BF`` (default
            :data:`~plato_sim.truth.bestfocus.TRUTH_N_SUB`: its discretisation, docs/forward.md).
        n_wavelengths: OGSE spectrum samples (the emulator uses 10).
        n_wavelengths_jacobian: samples of the (approximate) Jacobian's spectrum.
        fov_px: image period of the fast engine (16 = the emulator's and the truth's).
        quadratic: fit the thermal curvature ``q`` (prior :data:`Q_PRIOR_UM_PER_DEGC2`; the
            data measure it from three plateaux on); ``False``: a linear thermal response.
        field_residuals: fit each field's own focal offset and Z5..Z22 on top of the smooth
            field model (:data:`FIELD_TERMS`); ``False``: the smooth model alone.
        s_prior: ``(mean, sigma)`` um/degC; default none, or 10 +- 3 with one plateau.
        include_unstable: use observations flagged as not a plateau.
        systematic: add :data:`SYSTEMATIC_SIGMA_DEGC` (when calibrated) in quadrature.
        min_frames: fewest usable frames accepted.
        chunk: optical states per batch.
        tol: relative cost change that ends the iterations.
        field_focus: also each field position's EEF-optimal focus under the fitted optics
            (report key ``field_focus``; the physics labels of fine-tuning, ~10 s more).
        chromatic_cubic: also fit a cubic chromatic focal shift (:data:`CUBIC_CHROM_PARAM`;
            not calibrated: the systematic terms were measured without it).
        spectrum_rule: quadrature of the OGSE band for the model, the Jacobian and the
            coarse searches (:func:`plato_sim.optics.spectra.ogse_spectrum`): ``"midpoint"``
            (``n_wavelengths`` bins, the emulator's) or ``"gauss"`` (``n_wavelengths`` Gauss
            nodes: 4 give the band as well as 10 bins, docs/forward.md "Speed").

    Returns:
        The report dict: the keys of the CNN report (``fit``, ``bft_degC``, ``sigma_degC``,
        ``n_plateaux``, ``warnings``, ...) plus ``wavefront``, ``params``, ``chi2``,
        ``outside_model``, ``diagnostics`` and ``eef_curve`` (docs/forward.md, API).
    """
    t_start = time.perf_counter()
    _check_args(stamp_px, max_iter, n_sub, fov_px)
    torch.manual_seed(seed)
    timing: dict[str, float] = {}
    tick = _Ticker(timing)
    c = _setup(frames, plateaux, include_unstable, stamp_px, min_frames, quadratic, s_prior)
    # two plateaux pin dz_th at two temperatures: q is then only its prior, and fitted it
    # absorbs what the basis lacks (a chromatic shape: 0.3 um/degC^2, 6 prior sigmas, on a
    # nodal camera), moving T_BF; held at 0, its prior enters sigma (docs/forward.md)
    c.q_fixed = bool(quadratic and c.n_pl == 2)
    quadratic = quadratic and not c.q_fixed
    c.field_residuals = field_residuals
    c.chromatic_cubic = chromatic_cubic
    c.model, c.fit = _build_model(
        c, device, n_wavelengths, n_wavelengths_jacobian, fov_px, quadratic, stamp_px,
        spectrum_rule,
    )  # fmt: skip
    tick("setup")
    p, n_t, o, prior = _starting_point(c, chunk)
    tick("start")
    lm = _fit_with_restarts(c, p, n_t, prior, max_iter, tol, chunk, o)
    tick("levenberg_marquardt")
    cov, chi2_state, chi2_red, dof, n_par = _covariance(c, lm, prior, chunk)
    tick("covariance")
    warnings_out: list[str] = []
    chi2_tab = _chi2_tables(c, chi2_state, chi2_red, n_par, stamp_px)
    term = systematic_term_degC(c.n_pl, chi2_red, chi2_tab["outside"]) if systematic else 0.0
    bf = _bft_and_sigma(c, lm.p, cov, n_sub, n_wavelengths_jacobian, term, warnings_out)
    tick("t_bf")
    _fit_warnings(c, chi2_tab, chi2_red, bf["t_bf"], warnings_out)
    _convergence_warning(c, lm, max_iter, warnings_out)
    cdz, cval = _eef_curve(c, lm.p, bf["curve"], n_sub, n_wavelengths_jacobian)
    wavefront = _wavefront_table(c.model, lm.p, c.all_theta, c.all_phi, bf["t_bf"])
    tick("report")
    report = _report(c, lm, cov, bf, chi2_tab, chi2_red, dof, wavefront, (cdz, cval), warnings_out)
    report["q_fixed"] = c.q_fixed
    report["sigma_q_prior_degC"] = bf["sigma_q"] if c.q_fixed else None
    if field_focus:
        report["field_focus"] = _field_focus_table(c, lm.p, bf["dz_star"])
        tick("field_focus")
    report["diagnostics"] = _diagnostics(c, lm, device, n_wavelengths, n_sub, stamp_px, timing)
    report["diagnostics"]["wall_s"] = wall = float(time.perf_counter() - t_start)
    log.info(
        "forward fit: T_BF %.3f +- %.3f degC, chi2_red %.3f, %.1f s",
        bf["t_bf"], bf["sigma"], chi2_red, wall,
    )  # fmt: skip
    return report


def _field_focus_table(c, p, dz_star: float) -> dict:
    """Per field position of the campaign: the EEF-optimal thermal shift (um) and its
    temperature under the fitted thermal model, with that model (report ``field_focus``)."""
    model = c.model
    dz_best = _field_best_focus(model, p, dz_star)
    return {
        "theta_deg": [float(x) for x in c.all_theta],
        "phi_deg": [float(x) for x in c.all_phi],
        "dz_th_best_um": [float(x) for x in dz_best],
        "t_best_degC": [float(_thermal_t(p, model, x)[0]) for x in dz_best],
        "n_sub": FIELD_FOCUS_N_SUB,
        "thermal": {
            "t_ref_degC": float(model.t_ref),
            "b_um": float(p[_IX["b_um"]]),
            "s_um_per_degC": float(p[_IX["s_um_per_degC"]]),
            "q_um_per_degC2": float(p[_IX["q_um_per_degC2"]]),
        },
    }


def thermal_shift_um(field_focus: dict, t_degC) -> np.ndarray:
    """Thermal focal shift ``dz_th`` (um) at TRP1 temperatures ``t_degC`` under the fitted
    thermal model of a report's ``field_focus`` block: ``b + s dT + q dT^2``, ``dT = T -
    t_ref``."""
    th = field_focus["thermal"]
    d = np.asarray(t_degC, float) - th["t_ref_degC"]
    return th["b_um"] + th["s_um_per_degC"] * d + th["q_um_per_degC2"] * d * d


def thermal_slope_um_per_degC(field_focus: dict, t_degC: float) -> float:
    """``d dz_th / dT`` (um/degC) at ``t_degC`` under the fitted thermal model of a report's
    ``field_focus`` block (:func:`thermal_shift_um`): ``s + 2 q dT``."""
    th = field_focus["thermal"]
    return float(th["s_um_per_degC"] + 2 * th["q_um_per_degC2"] * (t_degC - th["t_ref_degC"]))


def solve_thermal(th: dict, target_um, near_degC):
    """The TRP1 temperature (degC) nearest ``near_degC`` where ``b + s d + q d^2`` equals
    ``target_um`` (``d = T - t_ref``); the linear solution where the curve has no root.
    Scalars or arrays of one shape (element by element)."""
    b, s, q, t_ref = th["b_um"], th["s_um_per_degC"], th["q_um_per_degC2"], th["t_ref_degC"]
    target, near = np.asarray(target_um, float), np.asarray(near_degC, float)
    lin = t_ref + (target - b) / s
    if abs(q) < 1e-12:
        out = lin
    else:
        disc = s * s - 4 * q * (b - target)
        root = np.sqrt(np.maximum(disc, 0.0))
        r1 = t_ref + (-s + root) / (2 * q)
        r2 = t_ref + (-s - root) / (2 * q)
        out = np.where(disc < 0, lin, np.where(np.abs(r1 - near) <= np.abs(r2 - near), r1, r2))
    return float(out) if out.ndim == 0 else out


def physics_labels(frames, report: dict) -> np.ndarray:
    """Per frame, its focal offset from its field's best focus (um), ``dz_th(T_i) -
    dz_th,best(field)``, from a forward report made with ``field_focus=True``: the quantity
    the network is trained on (``dz_from_best_um``, docs/datasets.md), for real frames.

    Frames whose field position is not in the report's table get NaN.
    """
    ff = report.get("field_focus")
    if not ff:
        raise ParameterError("the forward report has no field_focus block (fit with field_focus)")
    th_all, ph_all = np.asarray(ff["theta_deg"]), np.asarray(ff["phi_deg"])
    d = field_distance_deg(th_all, ph_all, frames.field_theta_deg, frames.field_phi_deg)
    k = np.argmin(d, axis=1)
    best = np.asarray(ff["dz_th_best_um"])[k]
    out = thermal_shift_um(ff, frames.temperature_degC) - best
    return np.where(d[np.arange(len(k)), k] < 1e-3, out, np.nan)


class _Ticker:
    """Wall time of the named steps of one fit (``diagnostics["timing_s"]``)."""

    def __init__(self, out: dict) -> None:
        self.out, self.t = out, time.perf_counter()

    def __call__(self, name: str) -> None:
        t = time.perf_counter()
        self.out[name] = round(t - self.t, 3)
        self.t = t


def _check_args(stamp_px, max_iter, n_sub, fov_px) -> None:
    if stamp_px % 2 == 0 or not 5 <= stamp_px <= 13:
        raise ParameterError(f"stamp_px={stamp_px}: must be odd, in [5, 13]")
    if max_iter < 1:
        raise ParameterError(f"max_iter={max_iter}: must be >= 1")
    if n_sub < 2:
        raise ParameterError(f"n_sub={n_sub}: must be >= 2")


def _setup(frames, plateaux, include_unstable, stamp_px, min_frames, quadratic, s_prior):
    """The frames used, their plateaux and temperatures (a namespace, ``c`` below)."""
    from types import SimpleNamespace

    c = SimpleNamespace()
    c.all_theta, c.all_phi = _field_table(frames)
    c.sel, c.crop = _prepare(frames, plateaux, stamp_px, include_unstable)
    c.n_frames = len(c.sel)
    c.obsids = np.unique(c.sel.obsid)
    c.n_pl = len(c.obsids)
    if c.n_frames < min_frames:
        raise InsufficientPlateaux(
            f"forward fit: {c.n_frames} usable frames; need at least {min_frames}"
        )
    if s_prior is None and c.n_pl == 1:
        s_prior = S_PRIOR_ONE_PLATEAU
    if s_prior is not None and not (np.isfinite(s_prior[0]) and s_prior[1] > 0):
        raise ParameterError(f"s_prior {s_prior}: need a finite mean and a sigma > 0")
    c.s_prior = s_prior
    c.t_pl = np.array([float(np.mean(c.sel.temperature_degC[c.sel.obsid == o])) for o in c.obsids])
    return c


def _build_model(
    c, device, n_wavelengths, n_wavelengths_jacobian, fov_px, quadratic, stamp_px, rule="midpoint"
):
    """The forward model and the fit state (optical states = field x plateau)."""
    if stamp_px > fov_px - 3:
        raise ParameterError(f"stamp_px={stamp_px}: must be <= fov_px - 3 = {fov_px - 3}")
    eng = FastEngine(fov_px=fov_px, device=device, dtype=torch.float32)
    sp = ogse_spectrum(eng.camera, n_wavelengths, rule=rule)
    t_ref = float(np.mean(c.t_pl))
    cubic = getattr(c, "chromatic_cubic", False)
    model = ForwardModel(
        c.all_theta, c.all_phi, sp, eng, FieldAberrations(), t_ref, quadratic, c.field_residuals,
        cubic,
    )  # fmt: skip
    if 3 <= n_wavelengths_jacobian < n_wavelengths:
        model.set_jacobian_spectrum(ogse_spectrum(eng.camera, n_wavelengths_jacobian, rule=rule))
    model.set_jacobian_period(max(JACOBIAN_FOV_PX, stamp_px + 1))
    fid = _field_index(c.all_theta, c.all_phi, c.sel.field_theta_deg, c.sel.field_phi_deg)
    pl_idx = np.searchsorted(c.obsids, c.sel.obsid)
    ukeys, c.frame_state = np.unique(fid * c.n_pl + pl_idx, return_inverse=True)
    c.state_field, c.state_pl = ukeys // c.n_pl, ukeys % c.n_pl
    fit = _Fit(model, c.crop, c.state_field, c.t_pl[c.state_pl], c.frame_state, stamp_px)
    return model, fit


def _initial_nuisances(c) -> torch.Tensor:
    """Per-frame nuisances: flux from the box sum, offsets from centroids, background 0."""
    fit, model = c.fit, c.model
    cen = _centroids(c.crop)
    nu = np.zeros((fit.data.shape[0], fit.data.shape[1], 4))
    nu[c.frame_state, fit.slot, 0] = np.maximum(c.crop.sum(axis=(1, 2)), 1.0) / 0.97
    nu[c.frame_state, fit.slot, 2:4] = cen
    return torch.as_tensor(nu, dtype=model.dtype, device=model.dev)


def _starting_point(c, chunk):
    """Design parameters, the scanned thermal offset and the per-frame nuisances; the prior
    (centred on the design, the scanned ``b`` and, unless given, ``s``)."""
    n_t = _initial_nuisances(c)
    p = c.model.initial_params(0.0)
    prior_mean, prior_sig = _prior(c.model, p, c.s_prior)
    p, n_t, o = _start(c.model, c.fit, p, n_t, c.t_pl, c.state_pl, chunk)
    prior_mean[_IX["b_um"]] = p[_IX["b_um"]]
    if c.s_prior is None:
        prior_mean[_IX["s_um_per_degC"]] = p[_IX["s_um_per_degC"]]
    return p, n_t, o, (prior_mean, prior_sig)


def _reduced_chi2(c, lm, chunk) -> float:
    """Reduced chi^2 of the fit at ``lm.p`` (one evaluation of the model)."""
    _, chi2_state = c.fit.evaluate(lm.p, lm.n_t, lm.o_last, chunk=chunk)
    n_par = int(c.model.free.sum()) + 4 * c.n_frames
    return float(chi2_state.sum() / max(c.fit.n_obs - n_par, 1))


def _fit_with_restarts(c, p, n_t, prior, max_iter, tol, chunk, o):
    """Levenberg-Marquardt from the scanned start; when it ends above :data:`CHI2_WARN`,
    again from the start's ``b`` shifted by each of :data:`RESTART_SHIFTS_UM` (nuisances
    refitted) until one ends below it, then, if still above, from the best ``b`` of a scan
    over +-:data:`WIDE_SCAN_HALF_RANGE_UM` when it lies in a new basin; the run with the
    lowest reduced chi^2 is kept.  The diagnostics list every run's start and chi^2
    (``lm.runs``)."""
    model, fit = c.model, c.fit
    runs: list[dict] = []

    def run(q, n_q, o_q, **tag):
        lm = _levenberg_marquardt(model, fit, q, n_q, o_q, prior, max_iter, tol, chunk)
        lm.chi2_red = _reduced_chi2(c, lm, chunk)
        runs.append({"start_b_um": float(q[_IX["b_um"]]), "chi2_reduced": lm.chi2_red, **tag})
        return lm

    best = run(p, n_t, o)
    for shift in RESTART_SHIFTS_UM:
        if best.chi2_red <= CHI2_WARN:
            break
        log.info(
            "forward fit: reduced chi^2 %.2f after convergence; restart with b shifted by %+.0f um",
            best.chi2_red, shift,
        )  # fmt: skip
        q, n_q, o_q = _start_at(model, fit, p, n_t, float(p[_IX["b_um"]]) + shift, chunk)
        best = min(best, run(q, n_q, o_q), key=lambda lm: lm.chi2_red)
    if best.chi2_red > CHI2_WARN:
        scan: list = []
        q, n_q, o_q = _start(model, fit, p, n_t, c.t_pl, c.state_pl, chunk,
                             WIDE_SCAN_HALF_RANGE_UM, scan=scan)  # fmt: skip
        if abs(q[_IX["b_um"]] - p[_IX["b_um"]]) > NEW_BASIN_UM:
            log.info(
                "forward fit: reduced chi^2 %.2f; the wide scan starts b at %.0f um (was %.0f)",
                best.chi2_red, q[_IX["b_um"]], p[_IX["b_um"]],
            )  # fmt: skip
            best = min(best, run(q, n_q, o_q, wide_scan=True), key=lambda lm: lm.chi2_red)
        best = _other_basins(c, best, scan, runs, run, p, n_t, chunk)
    best.runs = runs
    return best


def _other_basins(c, best, scan, runs, run, p, n_t, chunk):
    """While the best run still ends beyond the calibrated chi^2 range
    (:func:`beyond_calibration`), run again from the wide scan's other local minima
    (:func:`_scan_basins`; at most :data:`OTHER_BASINS`), lowest cost first: with few plateaux
    far apart the scan's lowest cost can be the mirror basin of the focus (a 3-plateau nodal
    camera started 60 um from its 5-plateau fit's basin, ended at chi^2_red 303 and 29 degC
    off; from the scan's second minimum it ends at 1.017 and 0.0003 degC)."""
    if not scan or not beyond_calibration(c.n_pl, best.chi2_red):
        return best
    bs, costs = scan[0]
    tried = [r["start_b_um"] for r in runs]
    for b in _scan_basins(bs, costs, tried, NEW_BASIN_UM)[:OTHER_BASINS]:
        log.info(
            "forward fit: reduced chi^2 %.1f beyond the calibrated range; start again from "
            "the scan's basin at b = %.0f um", best.chi2_red, b,
        )  # fmt: skip
        q, n_q, o_q = _start_at(c.model, c.fit, p, n_t, b, chunk)
        best = min(best, run(q, n_q, o_q, other_basin=True), key=lambda lm: lm.chi2_red)
        if not beyond_calibration(c.n_pl, best.chi2_red):
            break
    return best


def _levenberg_marquardt(model, fit, p, n_t, o, prior, max_iter, tol, chunk):
    """Levenberg-Marquardt on every parameter (nuisances by Schur complement), from ``p``
    whose OTFs ``o`` are known.

    Returns a namespace: ``p``, ``n_t``, ``blocks`` (the last normal equations), ``o_last``
    (the OTFs at ``p``), ``lam``, ``n_iter``, ``n_otf``, ``n_jac``, ``hist``.
    """
    from types import SimpleNamespace

    prior_mean, prior_sig = prior
    lm = SimpleNamespace(
        p=p, n_t=n_t, o_last=o, lam=1e-3, n_iter=0, n_otf=0, n_jac=0, hist=[], converged=False
    )
    jac, fresh, rel = None, True, 0.0
    fit.evaluate(lm.p, lm.n_t, lm.o_last, chunk=chunk)  # the residuals' scale at the start
    lm.e2_q = fit.last_e2_q
    fit.cauchy_c, least_squares = math.inf, True
    for it in range(max_iter):
        if not least_squares:
            fit.cauchy_c = min(fit.cauchy_c, _cauchy_scale(lm.e2_q))
        annealing = fit.cauchy_c > 1.01 * CAUCHY_C
        # the OTFs at p are those of the accepted step (or of the start): never recomputed;
        # near convergence the OTF derivatives barely move: kept
        if jac is None or fresh:
            jac = model.jac(fit.local(lm.p))
            lm.n_otf += len(jac) * _N_DIRECT
            lm.n_jac += 1
        cost, _, lm.blocks = fit.evaluate(lm.p, lm.n_t, lm.o_last, jac, chunk=chunk)
        cost += _prior_cost(lm.p, prior_mean, prior_sig, model.free)
        lm.hist.append(cost)
        accepted, converged, rel = _lm_step(model, fit, lm, cost, prior, tol, chunk)
        if accepted:
            fresh = rel > JACOBIAN_REFRESH
        lm.n_iter = it + 1
        log.info(
            "forward fit iteration %d: cost %.6g, lambda %.2g, Cauchy scale %.3g",
            it, cost, lm.lam, fit.cauchy_c,
        )  # fmt: skip
        if least_squares and (converged or not accepted or rel < L2_PHASE_END):
            least_squares = False  # near the basin: robust from here on
        elif annealing and (converged or not accepted or rel < L2_PHASE_END):
            fit.cauchy_c = max(CAUCHY_C, 0.5 * fit.cauchy_c)  # little progress at this scale
        elif not annealing and (converged or not accepted or rel < tol):
            lm.converged = True
            break
    return lm


def _cauchy_scale(e2_q: float) -> float:
    """Cauchy scale for residuals whose squared normalised 95 % point is ``e2_q``."""
    return CAUCHY_C * math.sqrt(max(1.0, e2_q / E2_QUANTILE[1]))


def _lm_step(model, fit, lm, cost, prior, tol, chunk):
    """One damped step (up to 5 damping increases); updates ``lm`` when accepted.

    Returns ``(accepted, converged, relative cost decrease)``.
    """
    prior_mean, prior_sig = prior
    var = fit.last_var
    for _ in range(5):
        dp, dn, _, pred = _solve(fit, lm.blocks, lm.p, lm.lam, model.free, prior_mean, prior_sig)
        if pred < max(0.05, tol * cost):  # nothing significant left to gain
            return False, True, 0.0
        p_new = lm.p + dp
        p_new[_IX["diffusion_sigma_px"]] = max(p_new[_IX["diffusion_sigma_px"]], 0.01)
        n_new = lm.n_t + dn.to(model.dtype)
        n_new[..., 2:4] = n_new[..., 2:4].clamp(-1.5, 1.5)
        o_new = model.otf(fit.local(p_new))
        lm.n_otf += len(o_new)
        c_new, _ = fit.evaluate(p_new, n_new, o_new, var=var, chunk=chunk)
        c_new += _prior_cost(p_new, prior_mean, prior_sig, model.free)
        if c_new < cost:
            rel = (cost - c_new) / max(cost, 1e-30)
            if cost - c_new < 0.05:  # cost is chi^2 / 2: an insignificant change
                rel = 0.0
            lm.p, lm.n_t, lm.lam = p_new, n_new, max(lm.lam / 5.0, 1e-7)
            lm.e2_q = fit.last_e2_q
            lm.o_last = o_new
            return True, False, rel
        lm.lam *= 8.0
    return False, False, 0.0


def _covariance(c, lm, prior, chunk):
    """Laplace covariance of the camera parameters (from the last Jacobian: one step before
    the solution; converged, the difference is negligible), scaled by ``max(1, chi2_red)``;
    chi^2 per state at the solution.  Returns ``cov, chi2_state, chi2_red, dof, n_par``."""
    model, fit, p = c.model, c.fit, lm.p
    _, chi2_state = fit.evaluate(p, lm.n_t, lm.o_last, chunk=chunk)
    _, _, prec, _ = _solve(fit, lm.blocks, p, 0.0, model.free, *prior)
    n_par = int(model.free.sum()) + 4 * c.n_frames
    dof = max(fit.n_obs - n_par, 1)
    chi2_red = float(chi2_state.sum() / dof)
    fr = model.free
    cov = np.zeros((len(p), len(p)))
    cov[np.ix_(fr, fr)] = np.linalg.pinv(prec[np.ix_(fr, fr)])
    cov *= max(1.0, chi2_red)
    return cov, chi2_state, chi2_red, dof, n_par


def _bft_and_sigma(c, p, cov, n_sub, n_wavelengths_jacobian, systematic_degC, warnings_out):
    """``T_BF`` by the definition and its sigma (implicit-function derivative of the argmax,
    the thermal parameters analytic; the systematic term ``systematic_degC`` in quadrature,
    None where it is not calibrated: a warning)."""
    model = c.model
    centre = _predicted_dz(model, p)
    dz_star, curv, curve, dfdz_dp = _best_focus(
        model, p, n_sub, centre, coarse_model=model.coarse(COARSE_SEARCH["n_wavelengths"]),
        coarse_n_sub=min(n_sub, COARSE_SEARCH["n_sub"]),
    )  # fmt: skip
    ddz_dp = -dfdz_dp / curv if curv < 0 else np.zeros(len(p))
    t_bf, slope, tc = _thermal_t(p, model, dz_star)
    grad_t = ddz_dp / slope
    grad_t[_IX["b_um"]] = -1.0 / slope
    grad_t[_IX["s_um_per_degC"]] = -tc / slope
    grad_t[_IX["q_um_per_degC2"]] = -tc * tc / slope
    sigma_stat = float(math.sqrt(max(grad_t @ cov @ grad_t, 0.0)))
    sigma_q = 0.0
    if c.q_fixed:
        # a curvature q through the two plateaux' pinned foci moves dz_th at T_BF by
        # q (tc - tc1)(tc - tc2)
        tc1, tc2 = np.asarray(c.t_pl, float) - model.t_ref
        sigma_q = float(Q_PRIOR_UM_PER_DEGC2 * abs((tc - tc1) * (tc - tc2) / slope))
        sigma_stat = float(math.hypot(sigma_stat, sigma_q))
        warnings_out.append(
            f"forward fit: two plateaux do not measure the thermal curvature q: fitted with "
            f"q = 0, its prior (+-{Q_PRIOR_UM_PER_DEGC2:g} um/degC^2) adds {sigma_q:.3f} degC "
            "to sigma"
        )
    sigma = sigma_stat
    if systematic_degC is not None:
        sigma = float(math.hypot(sigma, systematic_degC))
    else:
        warnings_out.append(
            "forward fit: no calibrated systematic sigma yet: sigma is the fit's own "
            "(Laplace, scaled by the reduced chi^2)"
        )
    s_hat = float(p[_IX["s_um_per_degC"]] + 2 * p[_IX["q_um_per_degC2"]] * tc)
    s_sig = float(math.sqrt(max(cov[_IX["s_um_per_degC"], _IX["s_um_per_degC"]], 0.0)))
    return dict(
        t_bf=t_bf, sigma=sigma, sigma_stat=sigma_stat, dz_star=dz_star, curve=curve,
        s_hat=s_hat, s_sig=s_sig, sigma_q=sigma_q,
    )  # fmt: skip


def _chi2_tables(c, chi2_state, chi2_red, n_par, stamp_px):
    """Reduced chi^2 per field and per plateau, and the outside-model verdict."""
    sfield = np.asarray(c.state_field)
    npx = stamp_px * stamp_px
    cnt_state = np.bincount(c.frame_state, minlength=len(c.state_field)) * npx
    dof_frac = max(1.0 - n_par / c.fit.n_obs, 0.05)
    chi2_field = {}
    for f in np.unique(sfield):
        m = sfield == f
        chi2_field[int(f)] = float(chi2_state[m].sum() / (cnt_state[m].sum() * dof_frac))
    chi2_plateau = {}
    for k, ob in enumerate(c.obsids):
        m = c.state_pl == k
        chi2_plateau[int(ob)] = float(chi2_state[m].sum() / (cnt_state[m].sum() * dof_frac))
    worst_f = max(chi2_field, key=chi2_field.get)
    outside = chi2_red > CHI2_WARN or chi2_field[worst_f] > CHI2_WARN_FIELD
    return dict(field=chi2_field, plateau=chi2_plateau, worst=worst_f, outside=outside)


#: Said by the warning of a fit flagged ``outside_model`` (read back by files that predate
#: the flag, e.g. :func:`plato_cnn.ground_calibration.load_ground_calibration`).
OUTSIDE_MODEL_PHRASE = "not described by the fitted wavefront basis"


def _fit_warnings(c, chi2_tab, chi2_red, t_bf, warnings_out) -> None:
    """Outside-model, one-plateau and extrapolation warnings (issued and collected)."""
    t_pl, s_prior = c.t_pl, c.s_prior
    if chi2_tab["outside"]:
        worst_f = chi2_tab["worst"]
        warnings_out.append(
            warn(
                f"forward fit: reduced chi^2 {chi2_red:.2f} (worst field {worst_f}: "
                f"{chi2_tab['field'][worst_f]:.2f}; thresholds {CHI2_WARN}, "
                f"{CHI2_WARN_FIELD}): the camera's images are {OUTSIDE_MODEL_PHRASE} (an "
                "aberration outside it?); T_BF may be biased beyond its sigma"
            )
        )
        if beyond_calibration(c.n_pl, chi2_red):
            warnings_out.append(
                warn(
                    f"forward fit: reduced chi^2 {chi2_red:.1f} lies beyond the range the "
                    f"misfit term was calibrated on (<= {MISFIT_CHI2_CALIBRATED[str(c.n_pl)]} "
                    f"with {c.n_pl} plateaux): the fit does not describe the images and its "
                    f"T_BF is not to be trusted; sigma set to {UNCALIBRATED_SIGMA_DEGC:.1f} degC"
                )
            )
    if c.n_pl == 1:
        warnings_out.append(
            warn(
                f"forward fit: one plateau: s is the prior {s_prior[0]:g} +- {s_prior[1]:g} "
                "um/degC; T_BF = plateau + focal shift / s"
            )
        )
    if not (min(t_pl) - 2.0 <= t_bf <= max(t_pl) + 2.0):
        warnings_out.append(
            warn(
                f"forward fit: T_BF {t_bf:.2f} degC lies outside the plateaux "
                f"[{min(t_pl):.2f}, {max(t_pl):.2f}] degC (extrapolated)"
            )
        )


def _convergence_warning(c, lm, max_iter, warnings_out) -> None:
    """A warning when the iterations ran out before the fit converged."""
    if lm.converged:
        return
    where = (
        "still in its least-squares phase"
        if math.isinf(c.fit.cauchy_c)
        else f"Cauchy scale {c.fit.cauchy_c:.3g}, final {CAUCHY_C:g}"
    )
    warnings_out.append(
        warn(
            f"forward fit: stopped at max_iter={max_iter} before convergence ({where}): "
            "T_BF and sigma may not be final"
        )
    )


def _eef_curve(c, p, curve, n_sub, n_wavelengths_jacobian):
    """The model's EEF curve over the plateaux (for the plot): the search points near the
    maximum (full model) and 7 points over the plateaux (coarse spectrum), sorted."""
    cdz, cval = curve
    t_pl, model = c.t_pl, c.model
    t_grid = np.linspace(min(t_pl) - 1.0, max(t_pl) + 1.0, 7)
    tcg = t_grid - model.t_ref
    dz_grid = p[_IX["b_um"]] + p[_IX["s_um_per_degC"]] * tcg + p[_IX["q_um_per_degC2"]] * tcg**2
    coarse = model.coarse(COARSE_SEARCH["n_wavelengths"])
    v_grid = _field_curves(coarse, p, dz_grid, min(n_sub, COARSE_SEARCH["n_sub"])).mean(0)
    cdz = np.concatenate([cdz, dz_grid])
    cval = np.concatenate([cval, v_grid])
    order = np.argsort(cdz)
    return cdz[order], cval[order]


def _wavefront_table(model, p, all_theta, all_phi, t_bf):
    """Per field: position, Z4..Z22 (nm) at ``T_BF`` and the focal offset (um)."""
    u_bf = model.local_matrix(np.arange(len(all_theta)), np.full(len(all_theta), t_bf)) @ p
    wavefront = []
    for f in range(len(all_theta)):
        d = {"theta_deg": float(all_theta[f]), "phi_deg": float(all_phi[f])}
        d["Z4_nm"] = float(model.kz4 * u_bf[f, 0])
        d["focal_offset_um"] = _focal_only(model, p, f)
        for j in range(5, N_FIT_ZERNIKE + 1):
            d[f"Z{j}_nm"] = float(u_bf[f, j - 4])
        wavefront.append(d)
    return wavefront


def _diagnostics(c, lm, device, n_wavelengths, n_sub, stamp_px, timing) -> dict:
    return {
        "iterations": int(lm.n_iter),
        "converged": bool(lm.converged),
        "cost_history": [float(x) for x in lm.hist],
        "otf_evaluations": int(lm.n_otf),
        "jacobian_evaluations": int(lm.n_jac),
        "wall_s": None,
        "device": str(device),
        "states": int(len(c.state_field)),
        "stamp_px": int(stamp_px),
        "n_wavelengths": int(n_wavelengths),
        "spectrum_rule": c.model.sp.rule,
        "n_sub": int(n_sub),
        "lm_lambda": float(lm.lam),
        "runs": getattr(lm, "runs", []),
        "timing_s": timing,
    }


def _report(c, lm, cov, bf, chi2_tab, chi2_red, dof, wavefront, curve, warnings_out):
    """The report dict (but ``diagnostics``)."""
    from plato_sim._version import __version__

    p, model, t_pl, s_prior = lm.p, c.model, c.t_pl, c.s_prior
    cdz, cval = curve
    sigma_p = np.sqrt(np.clip(np.diag(cov), 0, None))
    return {
        "fit": "forward-model",
        "bft_degC": float(bf["t_bf"]),
        "sigma_degC": float(bf["sigma"]),
        "obsids": [int(o) for o in c.obsids],
        "frames_used": int(c.n_frames),
        "sign_ambiguous": False,
        "s_um_per_degC": bf["s_hat"],
        "s_sigma_um_per_degC": bf["s_sig"],
        "s_measured": bool(c.n_pl >= 2),
        "s_prior_um_per_degC": list(s_prior) if s_prior is not None else None,
        "plateau_head_correction_um": None,
        "n_plateaux": int(c.n_pl),
        "template_shift_degC": 0.0,
        "p_behind_mean": None,  # no side-of-focus classifier: the fit sees the side directly
        "model": "forward (fast engine; smooth field model + per-field focal offset and Z5..Z22)",
        "model_version": __version__,
        "warnings": warnings_out,
        # own keys
        "sigma_stat_degC": bf["sigma_stat"],
        "t0_degC": float(_thermal_t(p, model, 0.0)[0]),
        "dz_th_at_bf_um": float(bf["dz_star"]),
        "plateaux_degC": [float(t) for t in t_pl],
        "params": {n: float(v) for n, v in zip(model.global_names, p[: model.n_g], strict=True)},
        "params_sigma": {
            n: float(v) for n, v in zip(model.global_names, sigma_p[: model.n_g], strict=True)
        },
        "field_residuals": bool(model.field_residuals),
        "wavefront": wavefront,
        "chi2": {
            "reduced": chi2_red,
            "dof": int(dof),
            "per_field": {str(k): v for k, v in chi2_tab["field"].items()},
            "per_plateau": {str(k): v for k, v in chi2_tab["plateau"].items()},
        },
        "outside_model": bool(chi2_tab["outside"]),
        "beyond_calibration": bool(chi2_tab["outside"] and beyond_calibration(c.n_pl, chi2_red)),
        "eef_curve": {
            "dz_th_um": [float(x) for x in cdz],
            "eef": [float(x) for x in cval],
            "temperature_degC": [float(_thermal_t(p, model, x)[0]) for x in cdz],
        },
        "examples": _examples(
            model,
            c.fit,
            p,
            lm.n_t,
            lm.o_last,
            c.state_field,
            c.state_pl,
            c.obsids,
            t_pl,
            bf["t_bf"],
        ),
    }


def _examples(model, fit, p, n_t, o, state_field, state_pl, obsids, t_pl, t_bf, n_show=3):
    """Data and model stamps (e-, focal-plane axes) of one frame of a few fields, on the
    plateau nearest T_BF: for the plot and for a reader of the JSON report."""
    k = int(np.argmin(np.abs(np.asarray(t_pl) - t_bf)))
    fields = np.unique(state_field[state_pl == k])
    pick = fields[
        np.unique(np.linspace(0, len(fields) - 1, min(n_show, len(fields))).round().astype(int))
    ]
    tr, _ = model.transfer(float(p[_IX["diffusion_sigma_px"]]))
    out = []
    for f in pick:
        s = int(np.flatnonzero((state_field == f) & (state_pl == k))[0])
        with torch.no_grad():
            st = model.stamps((o[s : s + 1] * tr)[:, None], n_t[s : s + 1, :1, 2:4], fit.size)
        mod = n_t[s, 0, 0] * st[0, 0, 0] + n_t[s, 0, 1]
        out.append(
            {
                "field_id": int(f),
                "obsid": int(obsids[k]),
                "data_e": fit.data[s, 0].double().cpu().numpy().round(1).tolist(),
                "model_e": mod.double().cpu().numpy().round(1).tolist(),
            }
        )
    return out


def _focal_only(model, p, f):
    u = model.local_matrix(np.array([f]), np.array([model.t_ref])) @ p
    return float(u[0, 0] - p[_IX["b_um"]])


def _prior_cost(p, mean, sig, free) -> float:
    return float(0.5 * np.sum(((p - mean) / sig)[free] ** 2))


def _field_table(frames):
    """Distinct field positions of the campaign (every frame, any flag), in field_id order."""
    ids = np.unique(frames.field_id)
    th = np.array([frames.field_theta_deg[frames.field_id == i][0] for i in ids])
    ph = np.array([frames.field_phi_deg[frames.field_id == i][0] for i in ids])
    return th, ph


def field_distance_deg(th_all, ph_all, th, ph):
    """``(N, F)`` distance (deg, |d theta| + |d phi|) of positions ``th, ph`` to the table
    ``th_all, ph_all``."""
    th_all, ph_all = np.asarray(th_all, float), np.asarray(ph_all, float)
    th, ph = np.asarray(th, float), np.asarray(ph, float)
    return np.abs(th[:, None] - th_all[None]) + np.abs(
        ((ph[:, None] - ph_all[None] + 180.0) % 360.0) - 180.0
    )


def _field_index(th_all, ph_all, th, ph):
    return np.argmin(field_distance_deg(th_all, ph_all, th, ph), axis=1)


def _start(
    model, fit, p, n_t, t_pl, state_pl, chunk, half_range_um=START_SCAN_HALF_RANGE_UM, scan=None
):
    """Scan the thermal offset ``b`` (s = 10, steps of 10 um over +-``half_range_um``) on a
    subset of states; flux/bg by linear LS; start at the lowest cost.  ``scan``, a list, gets
    the grid and its costs appended (``(b_um, cost)`` arrays) for :func:`_scan_basins`."""
    n_fields = len(model.fx)
    sub_fields = np.unique(np.linspace(0, n_fields - 1, min(n_fields, 8)).round().astype(int))
    sub = np.flatnonzero(np.isin(fit.state_field, sub_fields))
    foc = np.array([_focal_only(model, p, f) for f in range(n_fields)]).mean()
    t_mid = float(np.mean(t_pl))
    mc = model.coarse(3)
    grid = np.arange(-half_range_um, half_range_um + 0.1, 10.0)
    bs = grid - foc - 10.0 * (t_mid - model.t_ref)
    costs = np.empty(len(bs))
    for k, b in enumerate(bs):
        q = p.copy()
        q[_IX["b_um"]] = b
        o = mc.otf(fit.local(q)[sub])
        costs[k] = _profiled_cost(model, fit, q, n_t, o, sub, START_FRAMES_PER_STATE)
    if scan is not None:
        scan.append((bs, costs))
    return _start_at(model, fit, p, n_t, float(bs[int(np.argmin(costs))]), chunk)


def _start_at(model, fit, p, n_t, b_um: float, chunk):
    """``p`` with the thermal offset ``b_um``, its OTFs, and the per-frame nuisances refitted
    to it (nuisance-only Gauss-Newton on all states)."""
    p = p.copy()
    p[_IX["b_um"]] = b_um
    o = model.otf(fit.local(p))
    for _ in range(3):
        n_t = _nuisance_step(model, fit, p, n_t, o, chunk)
    return p, n_t, o


def _scan_basins(b_um, costs, tried_um, min_separation_um: float) -> list[float]:
    """The local minima of a starting scan (the ends included), lowest cost first, less those
    within ``min_separation_um`` of a start already tried: the scan's other basins."""
    costs = np.asarray(costs, dtype=float)
    left = np.r_[np.inf, costs[:-1]]
    right = np.r_[costs[1:], np.inf]
    minima = np.flatnonzero((costs <= left) & (costs <= right))
    minima = minima[np.argsort(costs[minima], kind="stable")]
    return [
        float(b_um[k])
        for k in minima
        if all(abs(float(b_um[k]) - t) > min_separation_um for t in tried_um)
    ]


def _profiled_cost(model, fit, p, n_t, o, sub, n_frames=None):
    """Robust cost of the states ``sub`` (their first ``n_frames`` frames), flux and
    background profiled out."""
    sig = float(p[_IX["diffusion_sigma_px"]])
    tr, _ = model.transfer(sig)
    fs = slice(0, n_frames)
    st = model.stamps((o * tr)[:, None], n_t[sub, fs, 2:4], fit.size)[:, :, 0]
    d = fit.data[sub, fs]
    v = fit.valid[sub, fs]
    # flux, bg by unweighted linear least squares per frame
    s1 = st.sum((-2, -1))
    s2 = (st * st).sum((-2, -1))
    npx = fit.size**2
    sd = (st * d).sum((-2, -1))
    dd = d.sum((-2, -1))
    det = s2 * npx - s1 * s1
    flux = (sd * npx - s1 * dd) / det
    bg = (s2 * dd - s1 * sd) / det
    mod = flux[..., None, None] * st + bg[..., None, None]
    var = mod.clamp(min=0) + (PRNU_FRACTION * mod) ** 2 + fit.var_floor
    e2 = (d - mod) ** 2 / var * v[..., None, None]
    return float((0.5 * CAUCHY_C**2 * torch.log1p(e2 / CAUCHY_C**2)).sum())


def _nuisance_step(model, fit, p, n_t, o, chunk):
    sig = float(p[_IX["diffusion_sigma_px"]])
    tr, _ = model.transfer(sig)
    out = []
    for s in range(0, o.shape[0], chunk):
        sl = slice(s, s + chunk)
        st, sdx, sdy = model.stamps((o[sl] * tr)[:, None], n_t[sl, :, 2:4], fit.size, deriv=True)
        st = st[:, :, 0]
        flux = n_t[sl, :, 0, None, None]
        mod = flux * st + n_t[sl, :, 1, None, None]
        r = fit.data[sl] - mod
        v = mod.clamp(min=0) + (PRNU_FRACTION * mod) ** 2 + fit.var_floor
        e2 = r * r / v
        w = (fit.valid[sl, :, None, None] / v / (1 + e2 / CAUCHY_C**2)).double()
        jn = torch.stack([st, torch.ones_like(st), flux * sdx, flux * sdy], dim=2).double()
        jw = jn * w[:, :, None]
        hnn = torch.einsum("bfkij,bflij->bfkl", jw, jn)
        gn = torch.einsum("bfkij,bfij->bfk", jw, r.double())
        eye = torch.eye(4, dtype=torch.float64, device=hnn.device)
        vm = fit.valid[sl].double()[..., None, None]
        hnn = hnn * vm + eye * (1 - vm) + 1e-9 * eye
        dn = torch.linalg.solve(hnn, gn[..., None])[..., 0]
        nn = n_t[sl] + dn.to(n_t.dtype)
        nn[..., 2:4] = nn[..., 2:4].clamp(-1.5, 1.5)
        out.append(nn)
    return torch.cat(out)


def _predicted_dz(model, p):
    """Starting centre of the T_BF search: minus the mean focal offset of the fields."""
    n_f = len(model.fx)
    return -float(np.mean([_focal_only(model, p, f) for f in range(n_f)]))


# ------------------------------------------------------------------------------ plot
