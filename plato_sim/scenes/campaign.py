"""Emulated ground-test campaign of one camera, written in format v1.

:func:`emulate_campaign` writes what a test house would record for one camera on a series
of TRP1 plateaux (``shared/ground-test-format.md``): per plateau one observation folder with
its HK CSV file and, per field position, a closed-shutter cube followed by a source cube of
random dithers.  The camera is a :class:`~plato_sim.optics.CameraModel` (random
perturbations of the design) whose thermal zero ``T0`` is solved so that its best-focus
temperature in the sense of plato-facts.md is the requested one
(:func:`plato_sim.bestfocus.t0_for_best_focus`).  The truth goes to a sidecar JSON file
*next to* the campaign folder (``<campaign>.truth.json``), never inside it.

Physics per frame:

* optics: one polychromatic OTF (OGSE spectrum) per field position and plateau, from the
  plateau's mean TRP1.  The TRP1 noise within a plateau (~0.015 degC rms) moves the focus by
  ~0.15 um, negligible against the ~10 um per degC between plateaux, so every frame of a
  plateau uses the same optical state while the HK file records the noisy TRP1;
* the star: pixel-integrated stamps at each dither's sub-pixel position from that OTF
  (:meth:`FastEngine.stamps_from_otf`), rotated into the CCD's pixel axes, placed in the
  window at the dither's integer position, scaled to the frame's flux;
* the detector: :class:`plato_sim.detector.DetectorModel` (offset, gain, read noise, Poisson,
  PRNU, hot pixels, cosmic rays, full well and blooming, 16-bit ADC), with one fixed pattern
  per window shared by its background and source frames on every plateau.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..bestfocus import t0_for_best_focus
from ..camera import ccd_of_field
from ..detector import DetectorModel
from ..engines.fast import FastEngine
from ..io import campaign_format as cf
from ..optics import CameraModel
from ..spectra import ogse_spectrum
from .fields import ground_test_fields

__all__ = [
    "CampaignTiming",
    "emulate_campaign",
    "emulate_or_load",
    "truth_path",
    "DEFAULT_PLATEAUX_DEGC",
    "DEFAULT_FLUX_E",
]

#: The test houses' usual TRP1 plateaux (plato-facts.md).
DEFAULT_PLATEAUX_DEGC = (-90.0, -85.0, -80.0, -75.0, -70.0)
#: Detected electrons of the point source per 0.1 s frame.  ASSUMED: the OGSE's
#: neutral-density wheel is set so that the sharpest stamp (about half the flux in one
#: pixel) stays below the 90 %-of-full-well saturation level (810 000 e-): 8e5 e- puts the
#: brightest pixel at ~3-4e5 e-, well exposed (SNR of the 2x2 box ~1000).
DEFAULT_FLUX_E = 8.0e5
#: Dither amplitude (pixels, uniform per axis): +-0.012 deg ~ +-3 px (plato-facts.md).
DITHER_PX = 3.0
#: Rendered stamp side (odd so that rotations by 90 deg keep the centre; pixels).  The fast
#: engine's image period is 16 px, so light farther than 8 px is not modelled anyway.
_STAMP_PX = 17


@dataclass(frozen=True)
class CampaignTiming:
    """Acquisition timing and housekeeping behaviour.  All values ASSUMED (typical of the
    CGSE partial-readout focus sequences; no public number).

    Attributes:
        exptime_s: exposure time (plato-facts.md: about 0.1 s).
        cycle_s: time between the starts of consecutive frames (s).
        slew_s: time to move the OGSE to the next field position (s).
        shutter_s: time between the background cube and the source cube (s).
        plateau_gap_s: time between two observations (thermal transition, s).
        hk_period_s: HK sampling period (format: 1-10 s).
        hk_lead_s: HK samples start this long before the first frame (s).
        trp1_noise_degC: white noise of the TRP1 reading (degC rms).
        settling_degC: rms amplitude of the residual settling at the start of the HK record
            (degC), decaying with ``settling_tau_s``.
        settling_tau_s: settling time constant (s).
        setpoint_error_degC: rms difference between the nominal and the achieved plateau.
        trp22_offset_degC: TRP22 minus TRP1 (degC), a second column the reader ignores.
        lamp_flicker: relative rms frame-to-frame variation of the source flux.
    """

    exptime_s: float = 0.1
    cycle_s: float = 2.5
    slew_s: float = 30.0
    shutter_s: float = 5.0
    plateau_gap_s: float = 4 * 3600.0
    hk_period_s: float = 4.0
    hk_lead_s: float = 600.0
    trp1_noise_degC: float = 0.015
    settling_degC: float = 0.3
    settling_tau_s: float = 180.0
    setpoint_error_degC: float = 0.05
    trp22_offset_degC: float = -2.0
    lamp_flicker: float = 0.005


def truth_path(out_dir: str | Path) -> Path:
    """The truth sidecar of a campaign folder: ``<folder>.truth.json`` beside it."""
    p = Path(out_dir)
    return p.parent / (p.name + ".truth.json")


def _placed_fields(
    model: CameraModel, theta: np.ndarray, phi: np.ndarray, window_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Field positions moved in azimuth, as little as needed, so that the window fits a CCD.

    The test houses command positions on the CCDs; a table position in a gap between CCDs
    (or too near a CCD edge for the window and the dithers) is rotated in azimuth by the
    smallest multiple of 0.25 deg that fixes it.  Returns ``(phi_deg, ccd, row, col)``
    (theta unchanged; row and column: the star's nominal CCD position, pixels).
    """
    cam = model.optics.camera
    margin = window_px // 2 + 1
    out_phi, out_ccd, out_row, out_col = [], [], [], []
    steps = [0.0] + [s * k * 0.25 for k in range(1, 721) for s in (1, -1)]
    for t, p in zip(theta, phi, strict=True):
        for dp in steps:
            c, r, k = ccd_of_field(cam, t, (p + dp) % 360.0)
            c, r, k = int(c[0]), float(r[0]), float(k[0])
            n = cam.ccd_pixels
            if c and margin <= r < n - margin and margin <= k < n - margin:
                break
        else:  # pragma: no cover - every field of view point is within 180 deg of a CCD
            raise ValueError(f"field position theta={t} deg cannot be placed on a CCD")
        out_phi.append((p + dp) % 360.0)
        out_ccd.append(c)
        out_row.append(r)
        out_col.append(k)
    return np.asarray(out_phi), np.asarray(out_ccd), np.asarray(out_row), np.asarray(out_col)


def _rotation_index(gamma_deg: float, size: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Index maps taking a focal-plane-frame stamp ``[y, x]`` to CCD axes ``[row, col]``.

    CCD coordinates are ``(col, row) = R(-gamma) (x, y)`` (:mod:`plato_sim.camera`), so the
    CCD pixel at relative ``(dr, dk)`` sees the focal-plane pixel at
    ``x = cos g dk - sin g dr``, ``y = sin g dk + cos g dr``.  Returns the (y, x) index maps
    and ``(cos g, sin g)`` rounded (orientations are multiples of 90 deg).
    """
    cg = int(round(math.cos(math.radians(gamma_deg))))
    sg = int(round(math.sin(math.radians(gamma_deg))))
    c = size // 2
    dr, dk = np.mgrid[0:size, 0:size] - c
    return c + sg * dk + cg * dr, c + cg * dk - sg * dr, cg, sg


def emulate_campaign(
    out_dir: str | Path,
    camera_name: str = "emulated",
    bft_degC: float = -78.0,
    plateaux_degC: tuple[float, ...] | list[float] = DEFAULT_PLATEAUX_DEGC,
    n_fields: int = 40,
    n_dithers: int = 25,
    frames_per_dither: int = 2,
    window_px: int = 64,
    seed: int = 0,
    perturbation_strength: float = 1.0,
    site: str = "INTA",
    n_background_frames: int = 2,
    flux_e: float = DEFAULT_FLUX_E,
    first_obsid: int = 1024,
    obsid_step: int = 11,
    start_utc: str = "2026-03-02T08:00:00",
    timing: CampaignTiming | None = None,
    detector: DetectorModel | None = None,
    camera_model: CameraModel | None = None,
    engine: FastEngine | None = None,
    n_sub_truth: int = 4,
    n_wavelengths: int = 10,
    overwrite: bool = False,
) -> dict:
    """Write one camera's synthetic ground-test campaign (format v1) and return its truth.

    Args:
        out_dir: campaign folder to create (must be empty or absent unless ``overwrite``).
        camera_name: the ``CAMERA`` of the folder names and headers (no ``_``).
        bft_degC: the emulated camera's true best-focus temperature (TRP1, degC).
        plateaux_degC: nominal TRP1 plateaux in acquisition order (degC).
        n_fields: field positions (40 = the test houses' table, else a sunflower pattern).
        n_dithers: dithers per field position (random, +-3 px per axis).
        frames_per_dither: frames per dither.
        window_px: side of the square readout window (pixels, >= 32).
        seed: seed of every random draw (same seed -> bit-identical files but the
            ``DATE`` card astropy writes).
        perturbation_strength: scale of the random camera perturbation (0 = nominal design).
        site: test house in names and headers.
        n_background_frames: frames of each closed-shutter cube.
        flux_e: mean detected electrons of the star per frame.
        first_obsid, obsid_step: OBSID of the first plateau and the step between plateaux.
        start_utc: time of the first HK sample of the first observation (ISO 8601, UTC).
        timing: acquisition and HK behaviour (:class:`CampaignTiming`).
        detector: the detector model (default: nominal CCD270).
        camera_model: the camera to emulate (default: a random one drawn from ``seed``);
            its ``T0`` is replaced to honour ``bft_degC``.
        engine: the fast PSF engine (default one is built).
        n_sub_truth: sub-pixel grid used for the truth's expected EEF (n x n).
        n_wavelengths: wavelength samples of the OGSE spectrum (10 = the project's default;
            fewer only to make tests fast).
        overwrite: allow writing into a non-empty folder.

    Returns:
        The truth dict (also written to :func:`truth_path`).
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    if "_" in camera_name or not camera_name:
        raise ValueError(f"camera_name {camera_name!r}: must be non-empty without '_'")
    plateaux = [float(t) for t in plateaux_degC]
    if not plateaux:
        raise ValueError("plateaux_degC: at least one plateau")
    if window_px < 32:
        raise ValueError(f"window_px={window_px}: at least 32 (stamp plus +-3 px dithers)")
    if n_dithers < 1 or frames_per_dither < 1 or n_background_frames < 1 or n_fields < 1:
        raise ValueError("n_fields, n_dithers, frames_per_dither, n_background_frames >= 1")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: campaign folder exists and is not empty")
    timing = timing or CampaignTiming()
    det = detector or DetectorModel()
    ss = np.random.SeedSequence(int(seed))
    rng_cam, rng_fp, rng_dither, rng_hk, rng_det = (np.random.default_rng(s) for s in ss.spawn(5))

    # ---- camera and its truth
    model = camera_model or CameraModel.random(rng_cam, int(seed), perturbation_strength)
    eng = engine or FastEngine(camera=model.optics.camera)
    theta, phi0 = ground_test_fields(n_fields, model.optics.design.field_radius_deg)
    phi, ccd, row0, col0 = _placed_fields(model, theta, phi0, window_px)
    sp = ogse_spectrum(model.optics.camera, n_wavelengths)
    model, bf = t0_for_best_focus(
        model, float(bft_degC), theta_deg=theta, phi_deg=phi, spectrum=sp, engine=eng,
        n_sub=n_sub_truth,
    )  # fmt: skip
    t_truth = time.perf_counter() - t_start

    # ---- windows and fixed patterns (one per field position, the same on every plateau)
    cam = model.optics.camera
    half = window_px // 2
    v_start = np.clip(np.round(row0).astype(int) - half, 0, cam.ccd_pixels - window_px)
    h_start = np.clip(np.round(col0).astype(int) - half, 0, cam.ccd_pixels - window_px)
    patterns = [det.fixed_pattern((window_px, window_px), rng_fp) for _ in range(n_fields)]
    sides = np.where(h_start >= cam.ccd_pixels // 2, "E", "F")  # ASSUMED readout halves
    rot = [_rotation_index(cam.ccd_orientation_deg[c - 1], _STAMP_PX) for c in ccd]

    out.mkdir(parents=True, exist_ok=True)
    t_cursor = cf.parse_utc(start_utc)
    obsids, achieved = [], []
    n_frames_total = 0
    lam = sp.wavelengths_array_nm
    for ip, t_nom in enumerate(plateaux):
        obsid = first_obsid + obsid_step * ip
        obsids.append(obsid)
        t_plateau = t_nom + float(rng_hk.normal(0.0, timing.setpoint_error_degC))
        achieved.append(t_plateau)
        obs_dir = out / cf.obs_dir_name(obsid, site, camera_name)
        obs_dir.mkdir(exist_ok=True)
        hk_t0 = t_cursor
        t_cursor += timing.hk_lead_s
        # optics: one OTF per field position at this plateau
        dz_th = float(model.thermal.focal_shift_um(t_plateau))
        z = model.optics.zernikes_nm(theta, phi, dz_th, lam)
        with torch.no_grad():
            otf = torch.cat(
                [eng.otf(z[s : s + eng.chunk], sp) for s in range(0, n_fields, eng.chunk)]
            )
        counter = 1
        for f in range(n_fields):
            # dithers: continuous CCD positions of the star
            pos = np.stack(
                [
                    row0[f] + rng_dither.uniform(-DITHER_PX, DITHER_PX, n_dithers),
                    col0[f] + rng_dither.uniform(-DITHER_PX, DITHER_PX, n_dithers),
                ],
                axis=1,
            )
            ipos = np.round(pos).astype(int)
            frac = pos - ipos  # (dr, dk) in [-0.5, 0.5]
            iy, ix, cg, sg = rot[f]
            dx = cg * frac[:, 1] - sg * frac[:, 0]
            dy = sg * frac[:, 1] + cg * frac[:, 0]
            offs = np.stack([dx, dy], axis=1)[None]
            with torch.no_grad():
                st = eng.stamps_from_otf(otf[f : f + 1], sp, offs, _STAMP_PX)[0]
            st = np.clip(st.cpu().numpy().astype(np.float64), 0.0, None)[:, iy, ix]
            n_src = n_dithers * frames_per_dither
            flux = flux_e * (1.0 + timing.lamp_flicker * rng_det.standard_normal(n_src))
            elec = np.zeros((n_src, window_px, window_px))
            c = _STAMP_PX // 2
            for d in range(n_dithers):
                r0 = ipos[d, 0] - v_start[f] - c
                k0 = ipos[d, 1] - h_start[f] - c
                for j in range(frames_per_dither):
                    n = d * frames_per_dither + j
                    elec[n, r0 : r0 + _STAMP_PX, k0 : k0 + _STAMP_PX] = flux[n] * st[d]
            bg = det.closed_shutter(
                (n_background_frames, window_px, window_px), timing.exptime_s, rng_det, patterns[f]
            )
            src = det.expose(elec, timing.exptime_s, rng_det, patterns[f])
            ext = cf.image_ext_name(int(ccd[f]), str(sides[f]))
            keys = {
                "CCD_ID": (int(ccd[f]), "CCD (1-4)"),
                "V_START": (int(v_start[f]), "CCD row of the window's first pixel (0-based)"),
                "H_START": (int(h_start[f]), "CCD column of the window's first pixel"),
                "EXPTIME": (timing.exptime_s, "exposure time (s)"),
                "CYCLETIM": (timing.cycle_s, "time between frame starts (s)"),
                "FOV_TH": (float(theta[f]), "commanded field angle theta (deg)"),
                "FOV_PHI": (float(phi[f]), "commanded field azimuth phi (deg)"),
                "GAIN": (det.gain_e_per_adu, "e-/ADU"),
            }
            for shutter, data in ((cf.SHUTTER_CLOSED, bg), (cf.SHUTTER_OPEN, src)):
                prim = {
                    "DATE-OBS": (cf.format_utc(t_cursor), "UTC time of the first frame"),
                    "OBSID": (obsid, "observation id"),
                    "SITE": (site, "test house"),
                    "CAMERA": (camera_name, "camera"),
                }
                cf.write_cube(
                    obs_dir / cf.cube_file_name(obsid, site, counter, t_cursor),
                    prim,
                    [(ext, {**keys, "SHUTTER": (shutter, "OPEN: source, CLOSED: bg")}, data)],
                )
                counter += 1
                t_cursor += data.shape[0] * timing.cycle_s
                t_cursor += timing.shutter_s if shutter == cf.SHUTTER_CLOSED else timing.slew_s
            n_frames_total += n_src
        # housekeeping of this observation
        t_end = t_cursor + 60.0
        hk_t = np.arange(hk_t0, t_end, timing.hk_period_s)
        settle = timing.settling_degC * float(rng_hk.standard_normal())
        trp1 = (
            t_plateau
            + settle * np.exp(-(hk_t - hk_t0) / timing.settling_tau_s)
            + timing.trp1_noise_degC * rng_hk.standard_normal(hk_t.size)
        )
        trp22 = trp1 + timing.trp22_offset_degC + 0.02 * rng_hk.standard_normal(hk_t.size)
        cf.write_hk_csv(
            obs_dir / cf.hk_file_name(obsid, site, camera_name, hk_t0),
            hk_t,
            trp1,
            {cf.HK_TRP22: trp22},
        )
        t_cursor = t_end + timing.plateau_gap_s

    truth = {
        "format_version": cf.FORMAT_VERSION,
        "plato_focus_version": __version__,
        "camera": camera_name,
        "site": site,
        "seed": int(seed),
        "t_bf_degC": bf.t_bf_degC,
        "dz_th_at_bf_um": bf.dz_th_um,
        "eef_max_expected": bf.eef_max,
        "thermal": {
            "s_um_per_degC": model.thermal.s_um_per_degC,
            "t0_degC": model.thermal.t0_degC,
            "q_um_per_degC2": model.thermal.q_um_per_degC2,
        },
        "perturbation": model.optics.perturbation.to_dict(),
        "perturbation_strength": float(perturbation_strength),
        "design": model.optics.design.to_dict(),
        "detector": det.to_dict(),
        "plateaux_nominal_degC": plateaux,
        "plateaux_achieved_degC": achieved,
        "obsids": obsids,
        "fields": {
            "theta_deg": theta.tolist(),
            "phi_deg": phi.tolist(),
            "phi_table_deg": np.asarray(phi0).tolist(),
            "ccd": ccd.tolist(),
        },
        "n_dithers": int(n_dithers),
        "frames_per_dither": int(frames_per_dither),
        "n_background_frames": int(n_background_frames),
        "window_px": int(window_px),
        "flux_e": float(flux_e),
        "timing": timing.__dict__,
        "n_source_frames": int(n_frames_total),
        "n_wavelengths": int(n_wavelengths),
        "n_sub_truth": int(n_sub_truth),
        "seconds_truth": round(t_truth, 2),
        "seconds_total": round(time.perf_counter() - t_start, 2),
        "note": "optics of every frame use the plateau's achieved mean TRP1; HK is noisy",
    }
    tp = truth_path(out)
    tmp = tp.with_suffix(".tmp")
    tmp.write_text(json.dumps(truth, indent=1))
    os.replace(tmp, tp)
    return truth


def emulate_or_load(out_dir: str | Path, **kwargs) -> dict:
    """The truth of the campaign in ``out_dir``, emulating it only if it is not there yet.

    A cache for benchmarks and calibration sets: the truth sidecar is written last and
    atomically by :func:`emulate_campaign`, so a folder with a sidecar is complete, and a
    folder without one (absent, or interrupted mid-write) is emulated anew with
    ``emulate_campaign(out_dir, overwrite=True, **kwargs)``.  The caller names the folder so
    that different settings never share it.
    """
    tp = truth_path(out_dir)
    if tp.is_file():
        return json.loads(tp.read_text())
    return emulate_campaign(out_dir, overwrite=True, **kwargs)
