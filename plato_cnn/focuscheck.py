"""In-orbit focus check: the focal shift and the TRP1 change to best focus from star imagettes.

In orbit the camera sits at one TRP1 temperature ``T`` and sees stars, not a point source.
From one imagette file (:mod:`plato_sim.io.imagette_format`) this module estimates the
camera's focal shift from best focus and recommends the TRP1 change that reaches it:

1. every imagette is checked (saturated, no detectable star, star too far from the window
   centre: dropped and counted) and turned into a network stamp exactly as the training
   samples were (:func:`plato_sim.scenes.inorbit.imagette_stamps`);
2. FocusNet (the in-orbit model, ``plato_cnn/data/inorbit_model``: the same family as the
   ground-test model, trained on imagettes of blackbody stars) predicts each star's focal
   offset ``delta_i`` from *its own field position's* EEF-optimal focus, with ``sigma_i`` and
   a side-of-focus probability;
3. **the optical model** gives the offset of that per-field optimum from the camera's best
   focus, ``c(theta, phi) = dz_opt(theta, phi) - dz_bf`` (nominal design; ``dz_bf`` maximises
   the field-averaged expected EEF, docs/facts.md), so each star estimates the common shift
   ``g_i = delta_i + c_i = dz_th(T) - dz_th(T_BF)``;
4. the stars are combined by a robust inverse-variance mean (Huber weights, outliers beyond
   5 scaled sigma rejected); the statistical sigma is inflated by the observed scatter
   (Birge ratio) and a calibrated systematic sigma (``focus_check_systematic_um`` of the
   model, :func:`calibrate_focus_check`) is added in quadrature;
5. the thermal model ``dz_th = s (T - T0)`` turns the shift into the change
   ``Delta T = T_BF - T = -g / s``, with ``s`` from the prior 10 +- 3 um/degC
   (:data:`plato_cnn.fit.DEFAULT_S_PRIOR_UM_PER_DEGC`: one temperature cannot measure it),
   its uncertainty propagated: ``sigma_dT^2 = (sigma_g / s)^2 + (g sigma_s / s^2)^2``.

Sign: a single defocused image does not tell the side of pure defocus; the field-dependent
aberrations do, and the network's side-of-focus head reports it.  ``sign_ambiguous`` is set
when the stars' side-of-focus votes are split (mean probability between 0.2 and 0.8), as in
:mod:`plato_cnn.fit`.  Near best focus that is expected (each star lies within a few um of
its own optimum, on either side) and the recommended change is then within its sigma of
zero: the flag alone says it (logged, not warned).  Farther than 2 sigma from zero it
flags an estimate whose direction cannot be trusted, with a warning.

The report says what leans on the optical model (``model_reliance``).

The shipped model (``plato_cnn/data/inorbit_model``, 0.8 MB) was made by the commands of
:data:`REPRODUCE` (also in its ``model.json``): 98,304 imagette samples of 32 random cameras
(``plato_sim/data/inorbit_dataset.yaml``), 14 epochs of ``plato-cnn pretrain --crop 8``;
587 s of CPU in all on the project's shared 2-core machine.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from plato_cnn import ground_calibration as gcal
from plato_cnn.fit import SIGN_BOUNDS
from plato_cnn.ground_calibration import (
    corrected_shift,
    delta_t_sigma_degC,
    low_sensitivity,
)
from plato_cnn.ground_calibration import systematic_um as ground_systematic_um
from plato_cnn.nn.card import ModelCard, inorbit_model_dir, load_model, update_model_json
from plato_cnn.offset_correction import sensitivity_scale
from plato_cnn.robust import robust_mean
from plato_sim.errors import ParameterError, warn

__all__ = [
    "FocusCheck",
    "inorbit_model_dir",
    "focus_check",
    "focus_check_file",
    "attach_focus_map",
    "calibrate_focus_check",
]

log = logging.getLogger(__name__)

#: A star whose 3x3 peak is below this many noise sigmas is "no detectable star".
MIN_PEAK_SNR = 5.0
#: Stars whose centroid pixel lies farther than this from the window centre are dropped.
MAX_CENTRE_OFFSET_PX = 2
#: Residuals beyond this many scaled sigmas are rejected as outliers.
OUTLIER_SIGMAS = 5.0
#: Side-of-focus votes between these bounds are split (as plato_cnn.fit).


#: What the in-orbit model takes (stored in its ``model.json``).
INPUT_CONTRACT = (
    "10x10 raw imagettes (plato_sim.io.imagette_format): background = median of the border "
    "pixels, electrons via GAIN, plato_sim.stamps.extract_stamp to 10x10 (pixel nearest the "
    "centroid at (5, 5)), turned to focal-plane axes (plato_sim.scenes.inorbit."
    "imagette_stamps); the network sees the central 8x8 normalised by their sum; field "
    "position theta/phi in degrees"
)

#: The commands that made the shipped in-orbit model (2-core CPU, one torch thread):
#: 320 s of CPU for the dataset, 267 s for the training.
REPRODUCE = (
    "OMP_NUM_THREADS=1 plato-sim generate --config plato_sim/data/inorbit_dataset.yaml "
    "--out data/inorbit_ds32 --n 98304 --seed 8 --workers 2",
    "OMP_NUM_THREADS=1 plato-cnn pretrain --data data/inorbit_ds32 --out out/inorbit/model32 "
    "--epochs 14 --crop 8 --seed 0",
    "mkdir -p plato_cnn/data/inorbit_model && cp out/inorbit/model32/model.json "
    "out/inorbit/model32/model.safetensors plato_cnn/data/inorbit_model/",
    "python -c 'from plato_cnn.focuscheck import attach_focus_map, calibrate_focus_check; "
    'm = "plato_cnn/data/inorbit_model"; attach_focus_map(m); calibrate_focus_check(m)\'',
)


@dataclass
class FocusCheck:
    """Result of :func:`focus_check` (um of thermal focal shift, degC of TRP1).

    Attributes:
        temperature_degC: TRP1 temperature of the imagettes.
        shift_um, shift_sigma_um: ``dz_th(T) - dz_th(T_BF)`` and its 1-sigma (> 0: the
            detector lies behind best focus).
        shift_sigma_stat_um, shift_sigma_sys_um: its statistical and systematic parts (with a
            ground calibration: divided by the network's sensitivity; the systematic part holds
            the table's interpolation error).
        delta_t_degC, delta_t_sigma_degC: recommended TRP1 change ``T_BF - T`` and 1-sigma.
        target_degC: ``T + delta_t``.
        s_prior_um_per_degC: (mean, sigma) of the thermal sensitivity used.
        sign_ambiguous: the stars' side-of-focus votes are split.
        p_behind_mean: weighted mean probability that a star lies behind its field's optimum.
        n_stars, n_used, n_outliers: imagettes read, used, rejected as outliers.
        drops: imagettes dropped before the network, by reason.
        field_offset_mean_um: weighted mean of ``c(theta, phi)`` over the stars used.
        birge_ratio: sqrt of the reduced chi-square of the stars about the mean.
        star_mu_um, star_sigma_um, star_p_behind, star_offset_um, star_used: per imagette
            (NaN where dropped).
        warnings: human-readable notes.
        ground_calibration: with a ground calibration, what it did (``index``,
            ``solutions``, ``shift_trp1_um``, ``camera``, ``bias_rms_um``,
            ``ground_bft_degC``, ``sensitivity``: the share of a focus change that the
            corrected stars show, by which sigma is divided, ``interpolation_um``: the bias
            table's interpolation error between plateaux (in the systematic part),
            ``low_sensitivity``: it lies below
            what calibration saw, ``outside_model``: that or a flagged ground fit, and sigma
            holds the outside-model term); ``s_prior_um_per_degC`` is then the ground fit's
            slope at the estimated T_BF with sigma 0 (not propagated).  None without.
    """

    temperature_degC: float
    shift_um: float
    shift_sigma_um: float
    shift_sigma_stat_um: float
    shift_sigma_sys_um: float
    delta_t_degC: float
    delta_t_sigma_degC: float
    target_degC: float
    s_prior_um_per_degC: tuple[float, float]
    sign_ambiguous: bool
    p_behind_mean: float
    n_stars: int
    n_used: int
    n_outliers: int
    drops: dict
    field_offset_mean_um: float
    birge_ratio: float
    star_mu_um: np.ndarray = field(repr=False)
    star_sigma_um: np.ndarray = field(repr=False)
    star_p_behind: np.ndarray = field(repr=False)
    star_offset_um: np.ndarray = field(repr=False)
    star_used: np.ndarray = field(repr=False)
    warnings: list[str] = field(default_factory=list)
    ground_calibration: dict | None = None

    @property
    def direction_significant(self) -> bool:
        """The recommended change differs from zero by more than 2 sigma."""
        return abs(self.delta_t_degC) > 2.0 * self.delta_t_sigma_degC

    def to_dict(self) -> dict:
        """JSON-ready summary (per-star arrays left out)."""
        d = {k: v for k, v in asdict(self).items() if not k.startswith("star_")}
        d["s_prior_um_per_degC"] = list(self.s_prior_um_per_degC)
        d["direction_significant"] = self.direction_significant
        return d


# ----------------------------------------------------------------------------- the focus map
def _focus_map(desc: ModelCard):
    """The nominal design's per-field best-focus map stored in a model's description."""
    from plato_sim.scenes.sampling import CameraEntry

    m = desc.get("focus_map")
    if m is None:
        return None
    return CameraEntry.from_dict(m)


def _nominal_focus_map():
    from plato_sim.scenes.inorbit import make_camera

    return make_camera(0, perturbation_strength=0.0, exact=True)


def attach_focus_map(model_dir: str | Path, imagette_size_px: int = 10) -> dict:
    """Make a pretrained model directory an in-orbit model: focus map, contract, recipe.

    Stores in ``model_dir/model.json`` the nominal design's per-field best-focus map
    (:class:`plato_sim.scenes.dataset.CameraEntry` of the unperturbed design with the exact
    field-averaged EEF maximum, ~10 s), which gives ``c(theta, phi)`` without recomputing
    it at every check, the imagette side the model was trained on, the input contract and
    the commands that reproduce the shipped model (:data:`REPRODUCE`).  Returns the updated
    description.
    """
    entry = _nominal_focus_map()
    note = (
        "nominal design (perturbation strength 0): per-field EEF-optimal thermal focal shift "
        "(OGSE spectrum, 19-position grid fitted with field Zernikes) and dz_bf, the exact "
        "maximum of the field-averaged expected EEF (docs/facts.md); c = dz_opt - dz_bf"
    )
    return update_model_json(
        model_dir,
        imagette_size_px=int(imagette_size_px),
        input_contract=INPUT_CONTRACT,
        reproduce=list(REPRODUCE),
        focus_map=entry.to_dict(),
        focus_map_note=note,
    )


def field_offsets_um(entry, theta_deg: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
    """``c = dz_opt(theta, phi) - dz_bf`` (um) of a focus map at field positions."""
    return entry.field_best_focus_um(theta_deg, phi_deg) - entry.dz_bf_um


# ----------------------------------------------------------------------------- the estimate
# Long because: the in-orbit check reads as the documented sequence (checks,
# per-star offsets, field map, robust mean, sigma terms, report) over shared per-star arrays.
def focus_check(
    field,
    temperature_degC: float,
    model_dir: str | Path | None = None,
    device: str = "cpu",
    s_prior: tuple[float, float] | None = None,
    systematic: bool = True,
    loaded: tuple | None = None,
    ground=None,
    ground_index: str = "focus",
) -> FocusCheck:
    """Focal shift and recommended TRP1 change from an :class:`ImagetteField`.

    Args:
        field: :class:`plato_sim.scenes.inorbit.ImagetteField` (e.g. from
            :func:`plato_sim.io.imagette_format.read_imagettes`); its truth is never used.
        temperature_degC: TRP1 temperature of the exposure (degC).
        model_dir: model directory (default: the shipped in-orbit model).
        device: torch device.
        s_prior: (mean, sigma) thermal sensitivity (um/degC); default the model's, else
            10 +- 3.
        systematic: add the model's calibrated systematic sigma in quadrature.
        loaded: ``(model, description)`` already loaded (then ``model_dir`` is not read).
        ground: a :class:`plato_cnn.ground_calibration.GroundCalibration` of this camera and
            model: the network's bias, the field map and the thermal curve measured on the
            camera's ground test replace the design's map and the prior on ``s``
            (docs/inorbit.md, section 6).
        ground_index: where the ground bias table is read, ``"focus"`` (the camera's
            present shift, default) or ``"trp1"`` (:func:`plato_cnn.ground_calibration.
            corrected_shift`).

    Raises:
        ParameterError: a non-finite temperature, imagettes smaller than the model's input,
            no usable imagette, or a ground calibration measured with another model.
    """

    if not np.isfinite(temperature_degC):
        raise ParameterError(f"temperature_degC must be finite, got {temperature_degC}")
    model, desc = loaded or load_model(model_dir or inorbit_model_dir(), device)
    warnings: list[str] = []
    raw = np.asarray(field.imagettes)
    stars = field.stars
    n = len(raw)
    h, w = raw.shape[1:]
    crop = model.config.crop
    if min(h, w) < crop:
        raise ParameterError(
            f"imagettes of {h}x{w} px are smaller than the model's input ({crop} px)"
        )
    trained = desc.imagette_size_px
    if trained and (h, w) != (int(trained), int(trained)):
        warnings.append(warn(f"model trained on {trained}x{trained} imagettes, these are {h}x{w}"))
    t_hdr = field.header.get("trp1_degC")
    if t_hdr is not None and abs(float(t_hdr) - temperature_degC) > 0.5:
        warnings.append(
            warn(
                f"--temperature-degC {temperature_degC:.2f} differs from the file's TRP1_T "
                f"{float(t_hdr):.2f} by more than 0.5 degC"
            )
        )
    stamps, use, drops = _checked_stamps(field)
    # --- per-star offsets, field offsets, combination
    mu = np.full(n, np.nan)
    sig = np.full(n, np.nan)
    pb = np.full(n, np.nan)
    c_um = np.full(n, np.nan)
    sel = np.flatnonzero(use)
    pred = model.predict(stamps[sel], stars["theta_deg"][sel], stars["phi_deg"][sel], device=device)
    mu[sel], sig[sel], pb[sel] = pred["mu_um"], pred["sigma_um"], pred["p_behind"]
    pos = (stars["theta_deg"][sel], stars["phi_deg"][sel])
    if ground is None:
        c_um[sel], (mean, s_stat, keep, birge), s_sys = _design_shift(
            desc, mu[sel], sig[sel], pos, systematic, warnings
        )
        s_g = math.hypot(s_stat, s_sys)
        # --- to a temperature change
        s0, ss = tuple(s_prior or desc.s_prior_um_per_degC)
        dt = -mean / s0
        dt_sig = math.sqrt((s_g / s0) ** 2 + (mean * ss / s0**2) ** 2)
        ground_info = None
    else:
        if s_prior is not None:
            warnings.append(warn("s_prior ignored: the ground calibration's thermal curve is used"))
        gc = _ground_shift(ground, desc, field, mu[sel], sig[sel], pos, temperature_degC,
                           ground_index, warnings)  # fmt: skip
        c_um[sel] = gc["field_offset_um"]
        mean, s_stat, keep, birge = gc["shift_um"], gc["sigma_stat_um"], gc["kept"], gc["birge"]
        k_sens = gc["sensitivity"]
        low_k = low_sensitivity(k_sens, ground_index)
        if low_k:
            warnings.append(
                warn(
                    f"outside what the model knows: corrected by the ground table, the stars "
                    f"follow {k_sens:.2f} of a change of this camera's focus (sensitivity below "
                    f"{gcal.SENSITIVITY_OUTSIDE:.3f}); sigma holds the outside-model term "
                    "(docs/inorbit.md, section 6)"
                )
            )
        # an error of the corrected mean moves the solution of g = F(g) by itself over k
        scale = sensitivity_scale(k_sens, ground_index)
        s_sys = 0.0
        if systematic:  # the calibrated term and the table's interpolation error, on F
            s_sys = math.hypot(ground_systematic_um(ground, outside=low_k), gc["sigma_interp_um"])
            s_sys = s_sys / scale
        s_stat = s_stat / scale
        s_g = math.hypot(s_stat, s_sys)
        t_bf, s0 = ground.best_focus_temperature(temperature_degC, mean)
        ss = 0.0
        dt, dt_sig = t_bf - temperature_degC, delta_t_sigma_degC(s_g, s0)
        ground_info = {k: gc[k] for k in ("index", "solutions", "shift_trp1_um")}
        ground_info.update(camera=ground.camera, bias_rms_um=ground.spread_um,
                           ground_bft_degC=ground.ground_bft_degC, sensitivity=float(k_sens),
                           interpolation_um=float(gc["sigma_interp_um"]),
                           low_sensitivity=bool(low_k),
                           outside_model=bool(ground.forward_outside_model or low_k))  # fmt: skip
    used = np.zeros(n, bool)
    used[sel[keep]] = True
    wk = 1.0 / sig[sel][keep] ** 2
    p_mean = float(np.sum(wk * pb[sel][keep]) / np.sum(wk))
    ambiguous = SIGN_BOUNDS[0] < p_mean < SIGN_BOUNDS[1]
    # near best focus split votes are what a focused camera gives: the flag says it, a
    # warning would fire on most good checks; far from focus they make the direction unsure
    if ambiguous and abs(dt) > 2 * dt_sig:
        warnings.append(
            warn(
                f"side of focus undecided by the stars (mean P(behind) = {p_mean:.2f}): "
                "the direction of the change is not reliable"
            )
        )
    elif ambiguous:
        log.info("side of focus undecided by the stars (mean P(behind) = %.2f), as expected "
                 "within 2 sigma of best focus", p_mean)  # fmt: skip
    n_out = int((~keep).sum())
    if n_out:
        warnings.append(warn(f"{n_out} stars rejected as outliers (> {OUTLIER_SIGMAS:g} sigma)"))
    return FocusCheck(
        temperature_degC=float(temperature_degC),
        shift_um=float(mean),
        shift_sigma_um=float(s_g),
        shift_sigma_stat_um=float(s_stat),
        shift_sigma_sys_um=float(s_sys),
        delta_t_degC=float(dt),
        delta_t_sigma_degC=float(dt_sig),
        target_degC=float(temperature_degC + dt),
        s_prior_um_per_degC=(float(s0), float(ss)),
        sign_ambiguous=bool(ambiguous),
        p_behind_mean=p_mean,
        n_stars=int(n),
        n_used=int(used.sum()),
        n_outliers=n_out,
        drops=drops,
        field_offset_mean_um=float(np.sum(wk * c_um[sel][keep]) / np.sum(wk)),
        birge_ratio=float(birge),
        star_mu_um=mu,
        star_sigma_um=sig,
        star_p_behind=pb,
        star_offset_um=c_um,
        star_used=used,
        warnings=warnings,
        ground_calibration=ground_info,
    )


def usable_imagettes(field) -> tuple[np.ndarray, dict]:
    """The imagettes a check may use, and the others counted by reason: saturated (the
    ground-test rule), no star above :data:`MIN_PEAK_SNR` sigma of the border noise, star more
    than :data:`MAX_CENTRE_OFFSET_PX` from the window centre (the network check and the
    forward check drop the same ones).

    Raises:
        ParameterError: no usable imagette.
    """
    return _checked_stamps(field)[1:]


def _checked_stamps(field) -> tuple[np.ndarray, np.ndarray, dict]:
    from plato_sim.optics.camera import PLATO_NORMAL_CAMERA
    from plato_sim.scenes.inorbit import (
        imagette_noise_adu,
        imagette_saturated,
        imagette_stamps,
    )

    raw = np.asarray(field.imagettes)
    n, h, w = raw.shape
    gain = float(field.header["gain_e_per_adu"])
    orient = PLATO_NORMAL_CAMERA.ccd_orientation_deg
    stamps, info = imagette_stamps(raw, field.stars["ccd"], gain, orient, max(h, w))
    sat = imagette_saturated(raw, gain)
    noise_e = np.maximum(imagette_noise_adu(raw), 1.0) * gain
    no_star = info["peak_e"] < MIN_PEAK_SNR * noise_e
    off = (np.abs(info["centre_row"] - h // 2) > MAX_CENTRE_OFFSET_PX) | (
        np.abs(info["centre_col"] - w // 2) > MAX_CENTRE_OFFSET_PX
    )
    drops = {
        "saturated": int(sat.sum()),
        "no_detectable_star": int((no_star & ~sat).sum()),
        "star_off_centre": int((off & ~sat & ~no_star).sum()),
    }
    use = ~(sat | no_star | off)
    if not use.any():
        raise ParameterError(f"no usable imagette among {n} (dropped: {drops})")
    return stamps, use, drops


def _design_shift(desc: ModelCard, mu, sig, pos, systematic: bool, warnings: list):
    """The uncorrected check's field offsets, robust mean and systematic sigma (um)."""
    fmap = _focus_map(desc)
    if fmap is None:
        warnings.append(warn("model has no stored focus map: computed from the nominal design"))
        fmap = _nominal_focus_map()
    c = field_offsets_um(fmap, *pos)
    combined = robust_mean(mu + c, sig, outlier_sigmas=OUTLIER_SIGMAS)
    fc_sys = desc.focus_check_systematic_um
    if systematic and fc_sys is None:
        warnings.append(warn("model has no systematic calibration: sigma is statistical only"))
    return c, combined, float(fc_sys or 0.0) if systematic else 0.0


def _ground_shift(ground, desc: ModelCard, field, mu, sig, pos, t_degC, index, warnings):
    """The ground-corrected shift (:func:`plato_cnn.ground_calibration.corrected_shift`)
    after checking that the calibration is of this model (and, warning, of this camera)."""
    if ground.model_card_sha256 != desc.sha256():
        raise ParameterError(
            "the ground calibration was measured with another in-orbit model (card "
            f"{ground.model_card_sha256[:12]}, not {desc.sha256()[:12]})"
        )
    cam = field.header.get("camera")
    if cam is not None and str(cam) != ground.camera:
        warnings.append(warn(f"ground calibration of camera {ground.camera} applied to {cam}"))
    if ground.forward_outside_model:
        warnings.append(
            warn(
                f"outside what the model knows: the ground forward fit of {ground.camera} was "
                "flagged outside its wavefront basis; its labels and map may be off and sigma "
                "holds the outside-model term (docs/inorbit.md, section 6)"
            )
        )
    elif ground.forward_warnings:
        warnings.append(
            warn(
                f"the ground forward fit of {ground.camera} carried {len(ground.forward_warnings)}"
                " warning(s): its labels and map may be off (docs/inorbit.md, section 6)"
            )
        )
    gc = corrected_shift(ground, mu, sig, pos[0], pos[1], t_degC, index)
    warnings.extend(warn(w) for w in gc["warnings"])
    return gc


def model_reliance(fc: FocusCheck, desc: ModelCard) -> dict:
    """What in a focus check leans on the optical model rather than on the images."""
    s0 = fc.s_prior_um_per_degC[0]
    if fc.ground_calibration is not None:
        return _ground_reliance(fc, desc)
    return {
        "field_offsets": (
            "c(theta, phi) = per-field EEF-optimal focus minus the camera's best focus, from "
            "the nominal design (no as-built aberrations are public); weighted mean over the "
            f"stars used {fc.field_offset_mean_um:+.2f} um = {-fc.field_offset_mean_um / s0:+.2f}"
            " degC of the recommended change"
        ),
        "thermal_sensitivity": (
            f"s = {s0:g} +- {fc.s_prior_um_per_degC[1]:g} um/degC is a prior (docs/facts.md), "
            "not measured: one temperature cannot measure it; its uncertainty is propagated"
        ),
        "network": (
            "per-star offsets from a FocusNet trained on simulated imagettes (design + random "
            "camera perturbations, blackbody stars): the PSF model is the optical model's; "
            f"model {desc.package_version}"
        ),
        "best_focus_definition": (
            "T_BF as in docs/facts.md: maximum of the field-averaged expected EEF over the "
            "40 test positions for the OGSE spectrum"
        ),
        "systematic_sigma": (
            f"{fc.shift_sigma_sys_um:.2f} um, calibrated on emulated design-family cameras "
            "(calibrate_focus_check), added in quadrature; on cameras of another optical "
            "family it covers less than it claims (docs/inorbit.md, 'Out of family')"
        ),
    }


def _ground_reliance(fc: FocusCheck, desc: ModelCard) -> dict:
    g = fc.ground_calibration
    return {
        "field_offsets": (
            f"c(theta, phi) from the forward fit of camera {g['camera']}'s ground campaign "
            "(per-field EEF-optimal focus less its best focus): a Zernike trend over the field "
            "plus the nearest ground positions' departures from it; weighted mean over the stars "
            "used "
            f"{fc.field_offset_mean_um:+.2f} um"
        ),
        "thermal_sensitivity": (
            f"the ground forward fit's thermal curve, slope {fc.s_prior_um_per_degC[0]:.3f} "
            "um/degC at the estimated T_BF, moved to pass through the present focus"
        ),
        "network": (
            "per-star offsets from a FocusNet trained on simulated imagettes, each corrected by "
            f"the network's bias on this camera's ground frames ({g['bias_rms_um']:.2f} um RMS "
            f"over fields and plateaux) read at the camera's present focus ({g['index']}); "
            f"model {desc.package_version}"
        ),
        "best_focus_definition": (
            "T_BF as in docs/facts.md: maximum of the field-averaged expected EEF over the "
            "ground test's field positions for the OGSE spectrum, under the forward fit"
        ),
        "systematic_sigma": (
            f"{fc.shift_sigma_sys_um:.2f} um, calibrated on emulated design-family cameras "
            "through the whole ground chain (plato_cnn.ground_calibration."
            "GROUND_SYSTEMATIC_UM)"
            + (
                ", with the outside-model term for a flagged ground fit or a low sensitivity "
                "(GROUND_OUTSIDE_MODEL_UM, calibrated on cameras of a family the network never "
                "saw)"
                if g.get("outside_model")
                else ""
            )
            + (
                f"; divided, with the statistical sigma, by the network's sensitivity "
                f"{g['sensitivity']:.2f} on this camera"
                if g.get("sensitivity") is not None and g.get("index") == "focus"
                else ""
            )
            + "; coverage out of family in docs/inorbit.md, section 6"
        ),
    }


def focus_check_file(
    path: str | Path,
    temperature_degC: float,
    model_dir: str | Path | None = None,
    device: str = "cpu",
    ground_calibration: str | Path | None = None,
) -> dict:
    """The ``plato-cnn focus-check`` report of one imagette file (JSON-ready dict); with
    ``ground_calibration`` (a file of :mod:`plato_cnn.ground_calibration`) the check is
    corrected by the camera's ground test."""
    from plato_sim.io.imagette_format import read_imagettes

    field = read_imagettes(path, with_truth=False)
    loaded = load_model(model_dir or inorbit_model_dir(), device)
    ground = None
    if ground_calibration is not None:
        from plato_cnn.ground_calibration import load_ground_calibration

        ground = load_ground_calibration(ground_calibration)
    fc = focus_check(field, temperature_degC, device=device, loaded=loaded, ground=ground)
    desc = loaded[1]
    return {
        "file": str(Path(path).resolve()),
        "camera": field.header.get("camera"),
        "date_obs": field.header.get("date_obs"),
        "file_trp1_degC": field.header.get("trp1_degC"),
        **fc.to_dict(),
        "model": str(model_dir or inorbit_model_dir()),
        "model_version": desc.package_version,
        "model_card_sha256": desc.sha256(),
        "model_reliance": model_reliance(fc, desc),
    }


# ----------------------------------------------------------------------------- calibration
def calibrate_focus_check(
    model_dir: str | Path,
    n_cameras: int = 8,
    temperatures_per_camera: int = 2,
    n_stars: int = 300,
    seed: int = 1000,
    write: bool = True,
) -> dict:
    """Systematic sigma of the combined shift, measured on emulated calibration cameras.

    Cameras of seeds ``seed .. seed + n_cameras - 1`` (random perturbations, exact best
    focus), ``temperatures_per_camera`` temperatures within +-3 degC of best focus, fields
    of ``n_stars`` stars (V 8.5-13): ``sigma_sys^2 = mean(residual^2) - mean(sigma_stat^2)``
    (floored at 0).  Use seeds the benchmarks do not use.  With ``write`` the value goes to
    ``focus_check_systematic_um`` in ``model.json``.
    """
    from plato_sim.scenes.inorbit import emulate_imagettes, make_camera

    rng = np.random.default_rng(seed)
    res, stat = [], []
    for k in range(n_cameras):
        cam = make_camera(seed + k, bft_degC=-78.0)
        for _ in range(temperatures_per_camera):
            t = cam.bft_degC + float(rng.uniform(-3.0, 3.0))
            f = emulate_imagettes(cam, t, n_stars, seed=int(rng.integers(2**31)))
            fc = focus_check(f, t, model_dir, systematic=False)
            true_shift = f.truth["dz_th_um"] - f.truth["dz_bf_um"]
            res.append(fc.shift_um - true_shift)
            stat.append(fc.shift_sigma_stat_um)
    res_a, stat_a = np.asarray(res), np.asarray(stat)
    sys_um = float(math.sqrt(max(0.0, np.mean(res_a**2) - np.mean(stat_a**2))))
    out = {
        "focus_check_systematic_um": sys_um,
        "focus_check_calibration": {
            "n_cameras": n_cameras,
            "temperatures_per_camera": temperatures_per_camera,
            "n_stars": n_stars,
            "seed": seed,
            "residual_rms_um": float(np.sqrt(np.mean(res_a**2))),
            "residual_mean_um": float(np.mean(res_a)),
            "stat_sigma_rms_um": float(np.sqrt(np.mean(stat_a**2))),
        },
    }
    if write:
        update_model_json(model_dir, **out)
    return out
