"""In-orbit focus monitoring: imagettes of stars across the field at one TRP1 temperature.

In orbit there is no temperature sweep and no point source: the focus is checked from the
small windows (*imagettes*) that PLATO downlinks around stars.  This module emulates them
and makes the matching training samples:

* :func:`emulate_imagettes`: one camera at one TRP1 temperature, ``n_stars`` stars uniform
  over the field's area (on the CCDs), each a blackbody of effective temperature ``Teff``
  (3500-7500 K) and magnitude ``V`` (8.5-13 by default), rendered by the fast engine with
  pointing jitter and drift, on the sky background, through the CCD270 detector chain, cut
  to ``size_px`` x ``size_px`` windows in the CCD's pixel axes (raw 16-bit ADU);
* :func:`make_imagette_shard`: the same rendering for training samples
  (``plato-sim generate --config plato_sim/data/inorbit_dataset.yaml``; a dataset config
  holding an ``imagettes`` section is made by this function instead of the ground-test one);
* :func:`imagette_stamps`: what the estimator and the training set both do to an imagette
  (background = median of its border pixels, electrons via the gain, the ground-test stamp
  cut :func:`plato_sim.stamps.extract_stamp`, turned to focal-plane axes).

Physics per star
----------------
* optics: the camera's Noll coefficients at the star's field position and the thermal focal
  shift of the temperature; the polychromatic OTF is the star's blackbody weights applied to
  one monochromatic OTF per wavelength (the wavelengths of every blackbody are the same
  band bins, so the monochromatic OTFs of one optical state serve stars of any ``Teff``);
* motion during the exposure: pointing jitter is a Gaussian of ``jitter_rms_arcsec`` per axis
  (the engine's jitter transfer), drift a uniform linear motion of ``drift_arcsec`` in a
  random direction over the exposure (its transfer ``sinc(f . d)``, real and equal to one at
  zero frequency: the blur conserves the flux exactly);
* geometry: the star's CCD position from its field position (:mod:`plato_sim.optics.camera`); the
  window is placed on the *catalogue* position (true position plus a pointing/catalogue
  error), so the star is not exactly at its centre; the stamp is rendered in focal-plane
  axes and turned into the CCD's axes (an exact 90-degree permutation);
* light: ``V`` and ``Teff`` give the detected electrons (zero point below), plus the sky
  background and the open-shutter smear of the star's own column during the readout;
* detector: :class:`plato_sim.detector.DetectorModel` (Poisson, PRNU, dark, hot pixels,
  cosmic rays at the L2 rate, full well and blooming, read noise, gain, offset, 16 bit).

Photometric zero point, exposure and background (sources and assumptions)
------------------------------------------------------------------------
``docs/facts.md`` has no photometric zero point, so it is derived here:

* ``FLUX_V0_PHOTONS_PER_S_M2_NM`` = 1.00238e8 photons s^-1 m^-2 nm^-1, the photon flux of a
  V = 0 G2V star (PlatoSim3 ``inputfile.yaml``, ObservingParameters/Fluxm0).  ASSUMED: it is
  read as the photon flux density at ``V_REFERENCE_NM`` = 550 nm (the centre of the V band),
  and a star's photon spectrum is a blackbody of its ``Teff`` scaled to it there;
* detected electrons = pupil area (120 mm pupil, docs/facts.md) x exposure x the integral
  over the 500-1000 nm band of the photon spectrum x transmission (DLR-TN-0113) x QE
  (:class:`plato_sim.optics.camera.Camera`).  A 5800 K star of V = 11 gives 2.35e5 e- in 21 s;
  the brightest pixel of most stars brighter than V ~ 9.2 passes the 90 %-of-full-well
  saturation level (measured on an emulated field: 88 % of the stars of V 8.5-8.75, 38 % of
  V 9.0-9.25, none fainter than 9.5), close to the requirement's "brighter than 8.5 saturate";
* exposure ``EXPTIME_S`` = 21 s of a 25 s cycle (PlatoSim3 documentation: CycleTime 25 s
  for the normal cameras; ASSUMED 4 s of readout, ``READOUT_S``);
* sky ``SKY_PHOTONS_PER_PX_S`` = 220 photons/pixel/s, stellar + zodiacal background before
  the transmission (PlatoSim3 ObservingParameters/SkyBackground); detected with the
  transmission x QE averaged over a 5800 K photon spectrum (ASSUMED solar-like colour);
* jitter ``JITTER_RMS_ARCSEC`` = 0.038 arcsec rms (ASSUMED per axis); drift
  ``DRIFT_ARCSEC`` = 0.05 arcsec per exposure (ASSUMED: PlatoSim3 models a 2 arcsec rms
  drift with a 3600 s time scale, ~0.01 arcsec in 21 s; 0.05 is a generous bound).  Both are
  tiny against the 15 arcsec pixel;
* cosmic rays ``COSMIC_RATE_L2_PER_CM2_S`` = 5 /cm^2/s (the detector model's L2 value);
* window placement error ``POINTING_ERROR_PX`` = 0.3 px rms per axis (ASSUMED: catalogue and
  pointing knowledge), clipped to +-2 px;
* open-shutter smear: the CCD is read in ``READOUT_S`` without a shutter, so each pixel of a
  star's column collects the column's flux for ``READOUT_S / ccd_pixels`` (ASSUMED uniform
  row transfer).  Smear of other stars and crowding are not modelled.

Randomness comes from ``np.random.SeedSequence(seed)`` only: the same arguments give the
same bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from plato_sim.detector import DetectorModel, draw_value, saturation_mask
from plato_sim.errors import ParameterError
from plato_sim.io.imagette_format import STAR_DTYPE, STAR_TRUTH_DTYPE, ImagetteField
from plato_sim.names import BFT_KEY, LegacyNameDict
from plato_sim.optics.camera import Camera, ccd_of_field
from plato_sim.optics.model import OpticalModel
from plato_sim.optics.spectra import Spectrum, blackbody_spectrum, monochromatic
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.calibration_family import HIGHORDER_MILD_STRENGTH
from plato_sim.scenes.fields import uniform_random_fields
from plato_sim.scenes.ground_test import _rotation_index
from plato_sim.scenes.sampling import (
    LABEL_FIELDS,
    SEED_KEY_SHARD,
    build_camera,
    detector_labels,
    draw_optical_states,
    load_config,
    state_labels,
)
from plato_sim.stamps import ccd_to_focal_plane_orientation, extract_stamp, saturation_level_adu
from plato_sim.truth.eef import eef

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "FLUX_V0_PHOTONS_PER_S_M2_NM",
    "V_REFERENCE_NM",
    "EXPTIME_S",
    "CYCLE_S",
    "READOUT_S",
    "SKY_PHOTONS_PER_PX_S",
    "JITTER_RMS_ARCSEC",
    "DRIFT_ARCSEC",
    "COSMIC_RATE_L2_PER_CM2_S",
    "POINTING_ERROR_PX",
    "ImagetteField",
    "inorbit_config_path",
    "INORBIT_FAMILIES",
    "stellar_electrons",
    "sky_electrons_per_px",
    "in_orbit_detector",
    "make_camera",
    "render_windows",
    "windows_from_otf",
    "smear_of",
    "emulate_imagettes",
    "imagette_stamps",
    "imagette_background_adu",
    "imagette_saturated",
    "imagette_noise_adu",
    "make_imagette_shard",
    "imagette_label_dtype",
]

FLUX_V0_PHOTONS_PER_S_M2_NM = 1.00238e8  # PlatoSim3 inputfile.yaml Fluxm0 (V = 0 G2V star)
V_REFERENCE_NM = 550.0  # ASSUMED: Fluxm0 is the photon flux density at the V band's centre
CYCLE_S = 25.0  # PlatoSim3 documentation: CycleTime of the normal cameras
READOUT_S = 4.0  # ASSUMED readout time of a full CCD frame (no shutter in orbit)
EXPTIME_S = CYCLE_S - READOUT_S
SKY_PHOTONS_PER_PX_S = 220.0  # PlatoSim3 SkyBackground: stellar + zodiacal, photons/px/s
SKY_TEFF_K = 5800.0  # ASSUMED colour of the sky background (zodiacal light ~ solar)
JITTER_RMS_ARCSEC = 0.038  # pointing jitter, rms (ASSUMED per axis)
DRIFT_ARCSEC = 0.05  # ASSUMED pointing drift over one exposure (see the module docstring)
COSMIC_RATE_L2_PER_CM2_S = 5.0  # plato_sim.detector: "use ~5 for L2"
POINTING_ERROR_PX = 0.3  # ASSUMED rms error of the window placement per axis (pixels)
_POINTING_CLIP_PX = 2.0
_H_C_OVER_K_UM_K = 14387.7688  # second radiation constant (um K), as in plato_sim.optics.spectra

# ----------------------------------------------------------------------------- photometry


def _bb_photon_shape(lam_nm: np.ndarray, teff_K: np.ndarray) -> np.ndarray:
    """Blackbody photon rate per nm (B_lambda lambda), arbitrary scale; broadcasts."""
    lam_um = np.asarray(lam_nm, float) * 1e-3
    return lam_um**-4 / np.expm1(_H_C_OVER_K_UM_K / (lam_um * np.asarray(teff_K, float)))


def stellar_electrons(
    camera: Camera,
    v_mag: np.ndarray | float,
    teff_K: np.ndarray | float,
    exptime_s: float,
    qe_factor: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Detected electrons of stars of magnitude ``V`` and effective temperature ``Teff`` (K).

    Blackbody photon spectrum scaled to ``FLUX_V0_PHOTONS_PER_S_M2_NM * 10**(-0.4 V)`` at
    ``V_REFERENCE_NM``, times the pupil area, the exposure (s), the transmission and the QE
    (times ``qe_factor(lambda_nm)``, a camera's QE over the design's, where given),
    integrated over the camera's band.  Broadcasts ``v_mag`` and ``teff_K``.
    """
    v, t = np.broadcast_arrays(np.asarray(v_mag, float), np.asarray(teff_K, float))
    lam = np.linspace(camera.band_nm[0], camera.band_nm[1], 501)
    resp = camera.transmission_at(lam) * camera.qe_at(lam)
    if qe_factor is not None:
        resp = resp * qe_factor(lam)
    tt = t.reshape(-1, 1)
    shape = _bb_photon_shape(lam[None, :], tt) / _bb_photon_shape(V_REFERENCE_NM, tt)
    per_v0 = np.trapezoid(shape * resp[None, :], lam, axis=1).reshape(t.shape)
    area_m2 = math.pi * (0.5e-3 * camera.pupil_diameter_mm) ** 2
    return FLUX_V0_PHOTONS_PER_S_M2_NM * area_m2 * exptime_s * per_v0 * 10.0 ** (-0.4 * v)


def sky_electrons_per_px(
    camera: Camera,
    exptime_s: float,
    photons_per_px_s: float = SKY_PHOTONS_PER_PX_S,
    qe_factor: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float:
    """Detected sky electrons per pixel in an exposure (s), from in-band photons/px/s
    (``qe_factor``: as :func:`stellar_electrons`)."""
    lam = np.linspace(camera.band_nm[0], camera.band_nm[1], 501)
    w = _bb_photon_shape(lam, SKY_TEFF_K)
    resp = camera.transmission_at(lam) * camera.qe_at(lam)
    if qe_factor is not None:
        resp = resp * qe_factor(lam)
    mean_resp = float(np.trapezoid(w * resp, lam) / np.trapezoid(w, lam))
    return float(photons_per_px_s) * exptime_s * mean_resp


def in_orbit_detector(**changes) -> DetectorModel:
    """The nominal CCD270 with the L2 cosmic-ray rate (keyword arguments change fields)."""
    return replace(DetectorModel(cosmic_rate_per_cm2_s=COSMIC_RATE_L2_PER_CM2_S), **changes)


# ----------------------------------------------------------------------------- cameras


#: optical families of :func:`make_camera`: the in-orbit network's own (``design``) and the
#: high-order family at the calibration sets' strengths (1, and
#: :data:`~plato_sim.scenes.calibration_family.HIGHORDER_MILD_STRENGTH` for ``highorder-mild``)
INORBIT_FAMILIES = {
    "design": None,
    "highorder": 1.0,
    "highorder-mild": {"uniform": list(HIGHORDER_MILD_STRENGTH)},
}


def make_camera(
    seed: int,
    bft_degC: float | None = None,
    perturbation_strength: float = 1.0,
    exact: bool = True,
    index: int = 0,
    n_wavelengths: int = 10,
    family: str = "design",
):
    """An emulated camera with its per-field best-focus map (a dataset camera-pool entry).

    Camera ``index`` of :func:`plato_sim.scenes.dataset.build_camera` for the in-orbit
    config and ``seed``; with ``exact`` the camera's best focus is the maximum of the
    field-averaged expected EEF (docs/facts.md, ~7 s more), else the mean of the per-field
    optima.  ``bft_degC`` moves ``T0`` so that ``T_BF`` is that temperature.  ``family``
    (:data:`INORBIT_FAMILIES`): ``design``, the family the in-orbit network was trained on,
    or the high-order family (every Noll term Z5-Z37 a random polynomial of the field
    position, ``plato_sim.optics.family_highorder``), which it never saw.

    Returns:
        :class:`plato_sim.scenes.dataset.CameraEntry`.

    Raises:
        ParameterError: an unknown ``family``.
    """
    if family not in INORBIT_FAMILIES:
        raise ParameterError(f"family={family!r}: allowed {', '.join(INORBIT_FAMILIES)}")
    over = {
        "cameras": {"perturbation_strength": float(perturbation_strength)},
        "best_focus": {
            "camera": "exact" if exact else "mean_field_optimum",
            "n_wavelengths": int(n_wavelengths),
        },
    }
    cfg = load_config(inorbit_config_path(), overrides=over)
    if INORBIT_FAMILIES[family] is not None:
        # the pool's family draw (build_camera); a dataset config refuses the section beside
        # imagettes because its samples would not record the family, this camera does
        cfg = {**cfg, "families": {"highorder_fraction": 1.0,
                                   "highorder_strength": INORBIT_FAMILIES[family]}}  # fmt: skip
    entry = build_camera(cfg, int(seed), int(index))
    if bft_degC is not None:
        shift = float(bft_degC) - entry.bft_degC
        entry = replace(entry, bft_degC=float(bft_degC), t0_degC=entry.t0_degC + shift)
    return entry


def inorbit_config_path() -> Traversable:
    """The in-orbit imagettes' dataset configuration (``plato_sim/data/inorbit_dataset.yaml``,
    merged over the default dataset configuration by ``load_config``): camera pool, focus
    range, detector and imagette settings, shared by the design and nodal in-orbit scenes."""
    from importlib import resources

    return resources.files("plato_sim").joinpath("data", "inorbit_dataset.yaml")


# ----------------------------------------------------------------------------- rendering


def _patch_size(size_px: int) -> int:
    """Odd side of the rendered focal-plane patch: the window plus the placement error."""
    return max(17, 2 * (size_px // 2 + int(_POINTING_CLIP_PX) + 2) + 1)


# Long because: one rendering pass (OTFs, jitter, drift, pixel sampling)
# over batched per-star arrays.
def render_windows(
    engine: FastEngine,
    optics: OpticalModel,
    theta_deg: np.ndarray,
    phi_deg: np.ndarray,
    dz_th_um: np.ndarray,
    state: np.ndarray,
    teff_K: np.ndarray,
    ccd: np.ndarray,
    star_row: np.ndarray,
    star_col: np.ndarray,
    row0: np.ndarray,
    col0: np.ndarray,
    size_px: int,
    drift_px: np.ndarray | None = None,
    n_wavelengths: int = 10,
    qe_factor: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Noise-free windows: the fraction of each star's detected photons per CCD pixel.

    Args:
        engine: fast engine (its jitter sigma is the pointing jitter).
        optics: the camera's optical model.
        theta_deg, phi_deg, dz_th_um: ``(S,)`` optical states (field position, thermal
            focal shift in um).
        state: ``(B,)`` optical state of each star.
        teff_K: ``(B,)`` blackbody temperature of each star.
        ccd: ``(B,)`` CCD (1-4).
        star_row, star_col: ``(B,)`` star positions on the CCD (continuous pixels).
        row0, col0: ``(B,)`` CCD row and column of each window's first pixel.
        size_px: window side (pixels).
        drift_px: ``(B, 2)`` linear motion ``(d_row, d_col)`` over the exposure (CCD pixels),
            centred on the star's position; None for none.
        n_wavelengths: blackbody wavelength samples.
        qe_factor: a camera's QE over the design's (a function of the wavelength in nm)
            reweighting every star's detected spectrum; None for the design's QE.

    Returns:
        ``(B, size_px, size_px)`` float64, ``[row, col]`` in the CCD's axes.
    """
    cam = optics.camera
    b = len(state)
    state = np.asarray(state, int)
    teff = np.asarray(teff_K, float)
    spectra = [blackbody_spectrum(cam, float(t), n_wavelengths) for t in teff]
    lam = np.asarray(spectra[0].wavelengths_nm) if spectra else np.zeros(0)
    w = np.array([s.weights for s in spectra]).reshape(b, -1)
    if qe_factor is not None and lam.size:
        w = w * qe_factor(lam)[None, :]
        w = w / w.sum(axis=1, keepdims=True)
    ref = Spectrum(tuple(lam), tuple(np.full(lam.size, 1.0 / max(1, lam.size))), "ref")
    z = optics.zernikes_nm(theta_deg, phi_deg, dz_th_um, lam)  # (S, L, J)
    drift = np.zeros((b, 2)) if drift_px is None else np.asarray(drift_px, float)
    star_row, star_col = np.asarray(star_row, float), np.asarray(star_col, float)
    ccd, row0, col0 = np.asarray(ccd, int), np.asarray(row0, int), np.asarray(col0, int)
    out = np.zeros((b, size_px, size_px))
    k_freq = engine.n_freq(ref)
    with torch.no_grad():
        for s0 in range(0, len(theta_deg), engine.chunk):
            states = np.arange(s0, min(s0 + engine.chunk, len(theta_deg)))
            stars = np.flatnonzero((state >= s0) & (state < s0 + len(states)))
            if stars.size == 0:
                continue
            mono = []
            for li in range(lam.size):
                o = engine.otf(z[states][:, li : li + 1, :], monochromatic(float(lam[li])))
                if o.shape[1] != 2 * k_freq + 1:
                    raise ParameterError("render_windows: needs a blur-limited engine (diffusion)")
                mono.append(o)
            mono_t = torch.stack(mono, dim=1)  # (c, L, 2K+1, K+1)
            wt = torch.as_tensor(w[stars], dtype=engine.dtype, device=engine.device)
            pick = torch.as_tensor(state[stars] - s0, device=engine.device)
            otf = torch.einsum("bl,blyx->byx", wt.to(mono_t.dtype), mono_t[pick])
            out[stars] = windows_from_otf(
                engine, otf, ref, cam, ccd[stars], star_row[stars, None], star_col[stars, None],
                row0[stars], col0[stars], size_px, drift[stars],
            )[:, 0]  # fmt: skip
    return out


def windows_from_otf(
    engine: FastEngine,
    otf: torch.Tensor,
    spectrum: Spectrum,
    camera: Camera,
    ccd: np.ndarray,
    star_row: np.ndarray,
    star_col: np.ndarray,
    row0: np.ndarray,
    col0: np.ndarray,
    size_px: int,
    drift_px: np.ndarray | None = None,
) -> np.ndarray:
    """CCD windows of stars from their polychromatic OTFs, each star at ``K`` positions.

    The second half of :func:`render_windows` (which the in-orbit forward check shares, so
    that its model windows are sampled exactly as the emulated ones): each star's OTF times
    the engine's pixel, diffusion and jitter transfer and its drift, sampled on an odd
    focal-plane patch around the star's nearest pixel, turned into the CCD's pixel axes
    (:func:`plato_sim.scenes.ground_test._rotation_index`) and cut at the window.

    Args:
        engine: fast engine of the OTFs (its transfer is applied here).
        otf: ``(B, 2K+1, K+1)`` polychromatic OTFs (:meth:`FastEngine.otf`).
        spectrum: the spectrum the OTFs were made with (sets ``K``).
        camera: the camera (its CCD orientations).
        ccd: ``(B,)`` CCD (1-4).
        star_row, star_col: ``(B, K)`` star positions on the CCD (continuous pixels).
        row0, col0: ``(B,)`` CCD row and column of each window's first pixel.
        size_px: window side (pixels).
        drift_px: ``(B, 2)`` linear motion ``(d_row, d_col)`` over the exposure (CCD pixels);
            None for none.

    Returns:
        ``(B, K, size_px, size_px)`` float64 fraction of each star's detected photons per
        pixel, ``[row, col]`` in the CCD's axes, clipped at 0.
    """
    rows = np.asarray(star_row, float)
    cols = np.asarray(star_col, float)
    b, n_pos = rows.shape
    row0 = np.asarray(row0, int)
    col0 = np.asarray(col0, int)
    ccd = np.asarray(ccd, int)
    drift = np.zeros((b, 2)) if drift_px is None else np.asarray(drift_px, float)
    p = _patch_size(size_px)
    c = p // 2
    ipos_r = np.round(rows).astype(int)
    ipos_c = np.round(cols).astype(int)
    fr_r, fr_c = rows - ipos_r, cols - ipos_c
    r_start = row0[:, None] - ipos_r + c
    c_start = col0[:, None] - ipos_c + c
    if np.any((r_start < 0) | (r_start + size_px > p) | (c_start < 0) | (c_start + size_px > p)):
        raise ParameterError("render_windows: a window lies too far from its star")
    out = np.zeros((b, n_pos, size_px, size_px))
    k_freq = (otf.shape[1] - 1) // 2
    with torch.no_grad():
        for k in np.unique(ccd):
            sel = np.flatnonzero(ccd == k)
            iy, ix, cg, sg = _rotation_index(camera.ccd_orientation_deg[int(k) - 1], p)
            # CCD (d_row, d_col) -> focal-plane (dx, dy): the campaign emulator's rotation
            dx = cg * fr_c[sel] - sg * fr_r[sel]
            dy = sg * fr_c[sel] + cg * fr_r[sel]
            ddx = cg * drift[sel, 1] - sg * drift[sel, 0]
            ddy = sg * drift[sel, 1] + cg * drift[sel, 0]
            o = otf[sel] * _drift_transfer(engine, k_freq, ddx, ddy).to(otf.dtype)
            offs = np.stack([dx, dy], axis=-1)
            st = engine.stamps_from_otf(o, spectrum, offs, p).cpu().numpy()
            st = st.astype(np.float64)[:, :, iy, ix]
            for j, i in enumerate(sel):
                for v in range(n_pos):
                    r, q = r_start[i, v], c_start[i, v]
                    out[i, v] = st[j, v, r : r + size_px, q : q + size_px]
    return np.clip(out, 0.0, None)


def _drift_transfer(engine: FastEngine, k: int, dx: np.ndarray, dy: np.ndarray) -> torch.Tensor:
    """Transfer ``sinc(f . d)`` of linear motions ``(dx, dy)`` (pixels): ``(B, 2K+1, K+1)``."""
    q = torch.arange(-k, k + 1, dtype=engine.dtype, device=engine.device)
    qx = torch.arange(0, k + 1, dtype=engine.dtype, device=engine.device)
    ddx = torch.as_tensor(np.asarray(dx, float), dtype=engine.dtype, device=engine.device)
    ddy = torch.as_tensor(np.asarray(dy, float), dtype=engine.dtype, device=engine.device)
    arg = (ddy[:, None, None] * q[None, :, None] + ddx[:, None, None] * qx[None, None, :]) / float(
        engine.fov_px
    )
    return torch.sinc(arg)


def smear_of(window_e: np.ndarray, camera: Camera, exptime_s: float) -> np.ndarray:
    """Open-shutter smear of each window's own star: its column flux x row-transfer time
    (windows ``(..., rows, cols)`` in the CCD's axes, electrons or fractions)."""
    per_row_s = READOUT_S / camera.ccd_pixels
    return window_e.sum(axis=-2, keepdims=True) * (per_row_s / exptime_s)


def _draw_drift(rng: np.random.Generator, n: int, drift_px) -> np.ndarray:
    """``(n, 2)`` drift vectors (d_row, d_col) of length ``drift_px`` in random directions."""
    ang = rng.uniform(0.0, 2.0 * math.pi, n)
    length = np.broadcast_to(np.asarray(drift_px, float), (n,))
    return np.stack([length * np.sin(ang), length * np.cos(ang)], axis=1)


def _window_origins(
    rng: np.random.Generator, row: np.ndarray, col: np.ndarray, size_px: int, err_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Window first pixels from catalogue positions (true + placement error, clipped)."""
    e = np.clip(rng.normal(0.0, err_px, (len(row), 2)), -_POINTING_CLIP_PX, _POINTING_CLIP_PX)
    h = size_px // 2
    return np.round(row + e[:, 0]).astype(int) - h, np.round(col + e[:, 1]).astype(int) - h


# ----------------------------------------------------------------------------- emulation


def _draw_stars_on_ccds(
    rng: np.random.Generator, camera: Camera, n: int, radius_deg: float, margin_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` field positions uniform in area whose windows fit on a CCD."""
    th = np.zeros(0)
    ph = np.zeros(0)
    for _ in range(200):
        need = n - th.size
        if need <= 0:
            break
        t, p = uniform_random_fields(rng, 2 * need + 8, radius_deg)
        k, r, c = ccd_of_field(camera, t, p)
        lim = camera.ccd_pixels - 1 - margin_px
        ok = (k > 0) & (r >= margin_px) & (r <= lim) & (c >= margin_px) & (c <= lim)
        th = np.concatenate([th, t[ok][:need]])
        ph = np.concatenate([ph, p[ok][:need]])
    else:  # pragma: no cover - the CCDs cover most of the field
        raise ParameterError("could not place the stars on the CCDs")
    k, r, c = ccd_of_field(camera, th, ph)
    return th, ph, k.astype(int), r, c


# Long because: draws stars, renders, adds sky and detector noise and builds the
# truth table in the order of the module docstring, over shared per-star arrays.
def emulate_imagettes(
    camera,
    temperature_degC: float,
    n_stars: int,
    seed: int = 0,
    v_mag_range: tuple[float, float] = (8.5, 13.0),
    teff_range_K: tuple[float, float] = (3500.0, 7500.0),
    size_px: int = 10,
    exptime_s: float = EXPTIME_S,
    sky_photons_per_px_s: float = SKY_PHOTONS_PER_PX_S,
    jitter_rms_arcsec: float = JITTER_RMS_ARCSEC,
    drift_arcsec: float = DRIFT_ARCSEC,
    pointing_error_px: float = POINTING_ERROR_PX,
    detector: DetectorModel | None = None,
    engine: FastEngine | None = None,
    n_wavelengths: int = 10,
    camera_name: str = "emulated",
    date_obs: str = "2027-01-01T00:00:00",
) -> ImagetteField:
    """Emulated imagettes of ``n_stars`` stars of one camera at TRP1 ``temperature_degC``.

    Args:
        camera: :class:`plato_sim.scenes.dataset.CameraEntry` (e.g. :func:`make_camera`):
            optics, thermal model and best-focus map (the truth).
        temperature_degC: TRP1 temperature (degC).
        n_stars: number of stars (uniform over the field's area, on the CCDs).
        seed: seed of every random draw (same arguments -> same bits).
        v_mag_range: V magnitudes, uniform (brighter than ~8.5 saturates).
        teff_range_K: blackbody temperatures (K), uniform.
        size_px: imagette side (pixels, 6-16).
        exptime_s: exposure (s).
        sky_photons_per_px_s: in-band sky background (photons/pixel/s before transmission).
        jitter_rms_arcsec: pointing jitter, Gaussian rms per axis (arcsec).
        drift_arcsec: linear pointing drift over the exposure (arcsec), random direction.
        pointing_error_px: rms error of the window placement per axis (pixels).
        detector: detector model (default :func:`in_orbit_detector`).
        engine: fast engine whose jitter is replaced by ``jitter_rms_arcsec`` (default built).
        n_wavelengths: blackbody wavelength samples.
        camera_name: camera id written to the header.
        date_obs: UTC time of the exposure (header).
    """
    if n_stars < 1:
        raise ParameterError(f"n_stars must be >= 1, got {n_stars}")
    if not 6 <= int(size_px) <= 16:
        raise ParameterError(f"size_px must lie in [6, 16], got {size_px}")
    if exptime_s <= 0 or sky_photons_per_px_s < 0 or jitter_rms_arcsec < 0 or drift_arcsec < 0:
        raise ParameterError("exptime_s > 0 and sky, jitter, drift >= 0 required")
    if v_mag_range[1] < v_mag_range[0] or teff_range_K[1] < teff_range_K[0]:
        raise ParameterError("v_mag_range and teff_range_K must be (lo, hi)")
    if teff_range_K[0] < 2000.0:
        raise ParameterError("teff_range_K: blackbodies below 2000 K are outside the model")
    model = camera.model()
    optics = model.optics
    cam = optics.camera
    # a family camera's own QE shape acts on the stars as on the ground lamp: it moves the
    # chromatic focus (the design and high-order cameras have none: their bits are unchanged);
    # vignetting, a flux loss of at most 15 % at the field edge, is left to the ground frames
    qe_factor = getattr(model, "qe_factor", None)
    det = detector or in_orbit_detector()
    eng = _engine_with_jitter(engine, cam, jitter_rms_arcsec)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)]
    r_pos, r_star, r_det, r_ptg = rngs
    th, ph, ccd, row, col = _draw_stars_on_ccds(
        r_pos, cam, int(n_stars), camera.field_radius_deg, size_px + 4
    )
    v = r_star.uniform(v_mag_range[0], v_mag_range[1], n_stars)
    teff = r_star.uniform(teff_range_K[0], teff_range_K[1], n_stars)
    drift = _draw_drift(r_star, n_stars, drift_arcsec / cam.pixel_arcsec)
    row0, col0 = _window_origins(r_ptg, row, col, size_px, pointing_error_px)
    dz_th = float(model.thermal.focal_shift_um(temperature_degC))
    frac = render_windows(
        eng,
        optics,
        th,
        ph,
        np.full(n_stars, dz_th),
        np.arange(n_stars),
        teff,
        ccd,
        row,
        col,
        row0,
        col0,
        size_px,
        drift,
        n_wavelengths,
        qe_factor,
    )
    flux = stellar_electrons(cam, v, teff, exptime_s, qe_factor)
    sky = sky_electrons_per_px(cam, exptime_s, sky_photons_per_px_s, qe_factor)
    e_img = flux[:, None, None] * frac
    e_img = e_img + smear_of(e_img, cam, exptime_s) + sky
    pattern = det.fixed_pattern(e_img.shape, r_det)
    raw = det.expose(e_img, exptime_s, r_det, pattern)

    stars = np.zeros(n_stars, dtype=STAR_DTYPE)
    stars["star_id"] = np.arange(1, n_stars + 1)
    stars["ccd"], stars["row0"], stars["col0"] = ccd, row0, col0
    # the catalogue position: what the window was placed on (true + placement error)
    stars["row"] = row0 + size_px // 2 + (row - np.round(row))
    stars["col"] = col0 + size_px // 2 + (col - np.round(col))
    stars["theta_deg"], stars["phi_deg"] = th, ph
    stars["v_mag"], stars["teff_K"] = v, teff
    st = np.zeros(n_stars, dtype=STAR_TRUTH_DTYPE)
    st["true_row"], st["true_col"] = row, col
    st["flux_e"], st["sky_e_per_px"] = flux, sky
    st["dz_field_best_um"] = camera.field_best_focus_um(th, ph, optics)
    st["dz_from_best_um"] = dz_th - st["dz_field_best_um"]
    st["saturated"] = saturation_mask(raw, det).reshape(n_stars, -1).any(axis=1)
    truth = {
        BFT_KEY: float(camera.bft_degC),
        "dz_th_um": dz_th,
        "dz_bf_um": float(camera.dz_bf_um),
        "s_um_per_degC": float(model.thermal.s_um_per_degC),
        "t0_degC": float(model.thermal.t0_degC),
        "delta_t_degC": float(camera.bft_degC - temperature_degC),
        "camera_id": int(camera.camera_id),
        "seed": int(seed),
        "star_truth": st,
    }
    header = {
        "trp1_degC": float(temperature_degC),
        "exptime_s": float(exptime_s),
        "cycle_s": float(exptime_s + READOUT_S),
        "gain_e_per_adu": float(det.gain_e_per_adu),
        "camera": str(camera_name),
        "date_obs": str(date_obs),
    }
    return ImagetteField(raw, stars, header, LegacyNameDict(truth))


def _engine_with_jitter(engine: FastEngine | None, camera: Camera, jitter_arcsec: float):
    jit = jitter_arcsec / camera.pixel_arcsec
    if engine is None:
        return FastEngine(camera=camera, jitter_sigma_px=jit)
    return engine.replace(jitter_sigma_px=jit)


# ----------------------------------------------------------------------------- estimator input


def _border(a: np.ndarray) -> np.ndarray:
    """``(N, 2(H + W) - 4)`` border pixels of ``(N, H, W)`` windows."""
    return np.concatenate([a[:, 0, :], a[:, -1, :], a[:, 1:-1, 0], a[:, 1:-1, -1]], axis=1)


def imagette_background_adu(raw_adu: np.ndarray) -> np.ndarray:
    """Per-imagette background (ADU): the median of its border pixels (offset + sky).

    In orbit there is no closed-shutter frame; the electronic offset and the sky are taken
    together from the window's edge, robust to a cosmic ray or the wings of the star.
    """
    a = np.asarray(raw_adu)
    if a.ndim != 3 or min(a.shape[1:]) < 3:
        raise ParameterError(f"imagettes must be (N, H, W) with H, W >= 3, got {a.shape}")
    return np.median(_border(a.astype(np.float64)), axis=1)


def imagette_noise_adu(raw_adu: np.ndarray) -> np.ndarray:
    """Per-imagette pixel noise (ADU rms): 1.4826 x the median absolute deviation of the border."""
    b = _border(np.asarray(raw_adu).astype(np.float64))
    return 1.4826 * np.median(np.abs(b - np.median(b, axis=1)[:, None]), axis=1)


def imagette_saturated(raw_adu: np.ndarray, gain_e_per_adu: float) -> np.ndarray:
    """Saturated imagettes: a pixel at the ADC limit or above 90 % of the full well.

    The ground-test rule (docs/campaign-format.md) with the border median as the background.
    """
    a = np.asarray(raw_adu)
    bg = imagette_background_adu(a)
    flat = a.reshape(len(a), -1)
    level = saturation_level_adu(gain_e_per_adu)
    return (flat.max(axis=1) >= 65535) | (flat.max(axis=1).astype(float) - bg > level)


def imagette_stamps(
    raw_adu: np.ndarray,
    ccd: np.ndarray,
    gain_e_per_adu: float,
    orientation_deg: tuple[float, ...],
    size_px: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Network stamps of imagettes: background-subtracted electrons, focal-plane axes.

    1. background = :func:`imagette_background_adu`; ``(raw - bg) * gain`` in float32;
    2. :func:`plato_sim.stamps.extract_stamp` (``size_px`` default: the imagette side), the
       pixel nearest the centroid at ``size // 2``, zero beyond the imagette;
    3. :func:`plato_sim.stamps.ccd_to_focal_plane_orientation` with the CCD's orientation.

    Returns:
        ``(stamps (N, S, S) float32, info)``; ``info`` holds per imagette ``background_adu``,
        ``centre_row``, ``centre_col`` (window pixel at the stamp centre), ``peak_e`` (3x3
        mean at the star, electrons) and ``valid_fraction`` (stamp pixels from the window).
    """
    a = np.asarray(raw_adu)
    size = int(size_px or a.shape[-1])
    bg = imagette_background_adu(a)
    e = (a.astype(np.float32) - bg.astype(np.float32)[:, None, None]) * np.float32(gain_e_per_adu)
    out = np.zeros((len(a), size, size), dtype=np.float32)
    info = {
        "background_adu": bg,
        "centre_row": np.zeros(len(a), int),
        "centre_col": np.zeros(len(a), int),
        "peak_e": np.zeros(len(a)),
        "valid_fraction": np.zeros(len(a)),
    }
    for i in range(len(a)):
        cut = extract_stamp(e[i], size)
        out[i] = cut.stamp
        info["centre_row"][i], info["centre_col"][i] = cut.centre_row, cut.centre_col
        info["peak_e"][i] = cut.peak
        info["valid_fraction"][i] = float(cut.valid.mean())
    return ccd_to_focal_plane_orientation(out, np.asarray(ccd), orientation_deg), info


# ----------------------------------------------------------------------------- training shards

#: Extra per-sample labels of imagette datasets (name, dtype, meaning with unit).
EXTRA_LABEL_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("v_mag", "f4", "V magnitude of the star"),
    ("teff_K", "f4", "blackbody temperature of the star (K)"),
    ("drift_px", "f4", "pointing drift over the exposure (pixels)"),
)


def imagette_label_dtype() -> np.dtype:
    """Labels of imagette samples: the dataset labels plus :data:`EXTRA_LABEL_FIELDS`."""
    return np.dtype([(n, t) for n, t, _ in LABEL_FIELDS + EXTRA_LABEL_FIELDS])


# Long because: the training-sample twin of emulate_imagettes, with the same
# steps over per-state and per-sample arrays.
def make_imagette_shard(
    cfg: dict,
    seed: int,
    shard_index: int,
    n_samples: int,
    cameras: list,
    engine: FastEngine | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One shard of imagette training samples: ``(stamps float32 (n, S, S) e-, labels)``.

    The dataset generator's scheme (:func:`plato_sim.scenes.dataset.make_shard`): optical
    states (camera, field position, focus) each serve ``samples_per_optical_state`` stars,
    every star with its own ``V``, ``Teff``, CCD position within ``dither_px`` of the
    state's, sub-pixel phase, drift, window placement, sky, detector noise.  Detector
    parameters are drawn once per state.  Stamps are :func:`imagette_stamps` of the raw
    imagettes: exactly what the estimator computes from a FITS file.  Deterministic in
    ``(cfg, seed, shard_index, n_samples, cameras)``.
    """
    if n_samples < 1:
        raise ParameterError(f"make_imagette_shard: n_samples must be >= 1, got {n_samples}")
    if not cameras:
        raise ParameterError("make_imagette_shard: the camera pool is empty")
    im = cfg["imagettes"]
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(SEED_KEY_SHARD, shard_index))
    )
    cam0 = cameras[0].model().optics.camera
    e = cfg["engine"]
    jit = float(im["jitter_rms_arcsec"]) / cam0.pixel_arcsec
    if engine is None:
        engine = FastEngine(
            camera=cam0,
            diffusion_sigma_px=float(e["diffusion_sigma_px"]),
            jitter_sigma_px=jit,
            fov_px=int(e["fov_px"]),
        )
    size = int(im["size_px"])
    per = int(cfg["shards"]["samples_per_optical_state"])
    n_states = math.ceil(n_samples / per)
    st = np.arange(n_samples) // per
    exptime = float(im["exptime_s"])

    # --- optical states (the dataset's draws)
    states = draw_optical_states(rng, n_states, cfg, cameras)
    cam_idx, th, ph, models = states.cam_idx, states.theta_deg, states.phi_deg, states.models
    dz_th = states.dz_th_um
    ccd_s, row_s, col_s = ccd_of_field(cam0, th, ph)

    # --- per-sample draws
    v = draw_value(rng, im["v_mag"], "imagettes.v_mag", n_samples)
    teff = draw_value(rng, im["teff_K"], "imagettes.teff_K", n_samples)
    sky_ph = draw_value(rng, im["sky_photons_per_px_s"], "imagettes.sky", n_samples)
    drift_len = draw_value(rng, im["drift_arcsec"], "imagettes.drift_arcsec", n_samples)
    drift = _draw_drift(rng, n_samples, drift_len / cam0.pixel_arcsec)
    dith = float(im["dither_px"])
    row = row_s[st] + rng.uniform(-dith, dith, n_samples)
    col = col_s[st] + rng.uniform(-dith, dith, n_samples)
    ccd = ccd_s[st].astype(int)
    row0, col0 = _window_origins(rng, row, col, size, float(im["pointing_error_px"]))
    detectors = [DetectorModel.random(rng, cfg["detector"]) for _ in range(n_states)]
    n_wl = int(cfg["spectrum"]["n_wavelengths"])

    # --- optics per camera (the states of one camera share its optical model)
    frac = np.zeros((n_samples, size, size))
    for i in np.unique(cam_idx):
        s_sel = np.flatnonzero(cam_idx == i)
        smp = np.flatnonzero(np.isin(st, s_sel))
        local = np.searchsorted(s_sel, st[smp])
        frac[smp] = render_windows(
            engine,
            models[int(i)].optics,
            th[s_sel],
            ph[s_sel],
            dz_th[s_sel],
            local,
            teff[smp],
            ccd[smp],
            row[smp],
            col[smp],
            row0[smp],
            col0[smp],
            size,
            drift[smp],
            n_wl,
        )
    flux = stellar_electrons(cam0, v, teff, exptime)
    sky = np.array([sky_electrons_per_px(cam0, exptime, s) for s in sky_ph])

    # --- detector, per optical state
    raw = np.zeros((n_samples, size, size), dtype=np.uint16)
    sat = np.zeros(n_samples, dtype=np.uint8)
    lab = np.zeros(n_samples, dtype=imagette_label_dtype())
    for s in range(n_states):
        idx = np.arange(s * per, min((s + 1) * per, n_samples))
        det = detectors[s]
        e_img = flux[idx, None, None] * frac[idx]
        e_img = e_img + smear_of(e_img, cam0, exptime) + sky[idx, None, None]
        pattern = det.fixed_pattern(e_img.shape, rng)
        raw[idx] = det.expose(e_img, exptime, rng, pattern)
        sat[idx] = saturation_mask(raw[idx], det).reshape(len(idx), -1).any(axis=1)
        detector_labels(lab, idx, det)
    stamps = np.zeros((n_samples, size, size), dtype=np.float32)
    for s in range(n_states):
        idx = np.arange(s * per, min((s + 1) * per, n_samples))
        stamps[idx], info = imagette_stamps(
            raw[idx], ccd[idx], detectors[s].gain_e_per_adu, cam0.ccd_orientation_deg, size
        )
        lab["n_outside_px"][idx] = np.round((1.0 - info["valid_fraction"]) * size * size)
        lab["centre_row"][idx], lab["centre_col"][idx] = info["centre_row"], info["centre_col"]

    # --- labels (the dataset's meanings; positions are CCD pixels)
    lab["seed"], lab["shard"] = seed, shard_index
    lab["index"] = np.arange(n_samples)
    state_labels(lab, states, cameras, st)
    lab["ccd"], lab["ccd_row"], lab["ccd_col"] = ccd, row, col
    lab["star_row_px"], lab["star_col_px"] = row - row0, col - col0
    # offsets in the window's (CCD) axes: the stamps are turned to focal-plane axes
    lab["offset_x_px"] = lab["star_col_px"] - lab["centre_col"]
    lab["offset_y_px"] = lab["star_row_px"] - lab["centre_row"]
    lab["flux_e"] = flux
    lab["background_e_per_px"] = sky
    lab["exptime_s"] = exptime
    lab["eef_true"] = eef(frac)
    lab["saturated"] = sat
    lab["v_mag"], lab["teff_K"] = v, teff
    lab["drift_px"] = np.hypot(drift[:, 0], drift[:, 1])
    return stamps, lab
