"""Emulated ground-test campaign of one camera, written in format v1.

:func:`emulate_campaign` writes what a test house would record for one camera on a series
of TRP1 plateaux (``docs/campaign-format.md``): per plateau one observation folder with
its HK CSV file and, per field position, a closed-shutter cube followed by a source cube of
random dithers.  The camera is a :class:`~plato_sim.optics.model.CameraModel` (random
perturbations of the design) whose thermal zero ``T0`` is solved so that its best-focus
temperature in the sense of docs/facts.md is the requested one
(:func:`plato_sim.truth.bestfocus.t0_for_best_focus`).  What the campaign measures (plateaux,
field table, dithers, frames, flux, window, timing, detector) is one
:class:`~plato_sim.scenes.design.CampaignDesign`.  The truth goes to a sidecar JSON file
*next to* the campaign folder (``<campaign>.truth.json``), never inside it; read it back with
:func:`read_truth` (the true best-focus temperature is ``"bft_degC"``; sidecars written by
earlier versions call it ``"t_bf_degC"``, which :func:`read_truth` maps to ``"bft_degC"``).

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
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from plato_sim._version import __version__
from plato_sim.errors import ParameterError
from plato_sim.io import campaign_format as cf
from plato_sim.names import BFT_KEY, LegacyNameDict, normalise_keys
from plato_sim.optics.camera import ccd_of_field
from plato_sim.optics.model import CameraModel
from plato_sim.optics.spectra import Spectrum, ogse_spectrum
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.design import (
    DEFAULT_FLUX_E,
    DEFAULT_PLATEAUX_DEGC,
    DITHER_PX,
    CampaignDesign,
    CampaignTiming,
)
from plato_sim.truth.bestfocus import TRUTH_N_SUB, TRUTH_VERSION, BestFocus, t0_for_best_focus

__all__ = [
    "CampaignDesign",
    "CampaignTiming",
    "emulate_campaign",
    "emulate_or_load",
    "read_truth",
    "truth_path",
    "DEFAULT_PLATEAUX_DEGC",
    "DEFAULT_FLUX_E",
    "DITHER_PX",
]

log = logging.getLogger(__name__)

#: Rendered stamp side (odd so that rotations by 90 deg keep the centre; pixels).  The fast
#: engine's image period is 16 px, so light farther than 8 px is not modelled anyway.
_STAMP_PX = 17


def truth_path(out_dir: str | Path) -> Path:
    """The truth sidecar of a campaign folder: ``<folder>.truth.json`` beside it."""
    p = Path(out_dir)
    return p.parent / (p.name + ".truth.json")


def read_truth(path: str | Path) -> dict:
    """The truth sidecar of a campaign, as a dict.

    Args:
        path: the sidecar (``*.truth.json``) or the campaign folder it belongs to
            (:func:`truth_path`).

    Returns:
        The sidecar's JSON object.  A sidecar written by an earlier version holds the true
        best-focus temperature under the deprecated key ``"t_bf_degC"``: it is returned under
        ``"bft_degC"``, with a :class:`DeprecationWarning`.  The dict (a
        :class:`~plato_sim.names.LegacyNameDict`) still answers ``d["t_bf_degC"]``, with the
        same warning.
    """
    p = Path(path)
    if not p.name.endswith(".truth.json"):
        p = truth_path(p)
    return normalise_keys(json.loads(p.read_text()), str(p))


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
            raise ParameterError(f"field position theta={t} deg cannot be placed on a CCD")
        out_phi.append((p + dp) % 360.0)
        out_ccd.append(c)
        out_row.append(r)
        out_col.append(k)
    return np.asarray(out_phi), np.asarray(out_ccd), np.asarray(out_row), np.asarray(out_col)


def _rotation_index(gamma_deg: float, size: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Index maps taking a focal-plane-frame stamp ``[y, x]`` to CCD axes ``[row, col]``.

    CCD coordinates are ``(col, row) = R(-gamma) (x, y)`` (:mod:`plato_sim.optics.camera`), so the
    CCD pixel at relative ``(dr, dk)`` sees the focal-plane pixel at
    ``x = cos g dk - sin g dr``, ``y = sin g dk + cos g dr``.  Returns the (y, x) index maps
    and ``(cos g, sin g)`` rounded (orientations are multiples of 90 deg).
    """
    cg = int(round(math.cos(math.radians(gamma_deg))))
    sg = int(round(math.sin(math.radians(gamma_deg))))
    c = size // 2
    dr, dk = np.mgrid[0:size, 0:size] - c
    return c + sg * dk + cg * dr, c + cg * dk - sg * dr, cg, sg


@dataclass
class _Setup:
    """Everything fixed for a whole campaign: the camera (T0 solved), its engine and spectrum,
    the placed field positions, windows, fixed patterns and rotations (one per field)."""

    model: object
    engine: FastEngine
    spectrum: Spectrum
    bf: BestFocus
    theta: np.ndarray
    phi: np.ndarray
    phi_table: np.ndarray
    ccd: np.ndarray
    row0: np.ndarray
    col0: np.ndarray
    v_start: np.ndarray
    h_start: np.ndarray
    sides: np.ndarray
    patterns: list
    rot: list
    flux_scale: np.ndarray | None  # per field (relative illumination), None = 1


@dataclass
class _Cursor:
    """Acquisition state carried from plateau to plateau."""

    t_utc: float
    obsids: list = field(default_factory=list)
    achieved: list = field(default_factory=list)
    n_frames: int = 0


def _resolve_design(design: CampaignDesign | None, overrides: dict) -> CampaignDesign:
    if design is not None and not isinstance(design, CampaignDesign):
        raise ParameterError(
            f"design={design!r}: must be a CampaignDesign (pass the other options by keyword)"
        )
    return (design or CampaignDesign()).with_(**overrides)


def _check_run(out: Path, camera_name: str, overwrite: bool) -> None:
    if "_" in camera_name or not camera_name:
        raise ParameterError(f"camera_name {camera_name!r}: must be non-empty without '_'")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: campaign folder exists and is not empty")


def _set_up_camera(
    design: CampaignDesign,
    rngs: dict,
    seed: int,
    bft_degC: float,
    perturbation_strength: float,
    camera_model,
    engine: FastEngine | None,
    spectrum: Spectrum | None,
    n_sub_truth: int,
) -> _Setup:
    """The camera and its truth (T0 solved for ``bft_degC`` on the placed field positions),
    then the windows and fixed patterns of every field position."""
    model = camera_model or CameraModel.random(rngs["cam"], int(seed), perturbation_strength)
    eng = engine or FastEngine(camera=model.optics.camera)
    radius = getattr(model.optics, "field_radius_deg", None)
    if radius is None:
        radius = model.optics.design.field_radius_deg
    theta, phi0 = design.field_table_deg(radius)
    phi, ccd, row0, col0 = _placed_fields(model, theta, phi0, design.window_px)
    sp = spectrum or ogse_spectrum(model.optics.camera, design.n_wavelengths)
    model, bf = t0_for_best_focus(
        model, float(bft_degC), theta_deg=theta, phi_deg=phi, spectrum=sp, engine=eng,
        n_sub=n_sub_truth,
    )  # fmt: skip
    illum = getattr(model, "relative_illumination", None)
    flux_scale = None if illum is None else np.asarray(illum(theta, phi), dtype=float)
    cam = model.optics.camera
    w = design.window_px
    half = w // 2
    v_start = np.clip(np.round(row0).astype(int) - half, 0, cam.ccd_pixels - w)
    h_start = np.clip(np.round(col0).astype(int) - half, 0, cam.ccd_pixels - w)
    det = design.detector
    patterns = [det.fixed_pattern((w, w), rngs["fp"]) for _ in range(theta.size)]
    return _Setup(
        model=model, engine=eng, spectrum=sp, bf=bf, theta=theta, phi=phi,
        phi_table=np.asarray(phi0), ccd=ccd, row0=row0, col0=col0, v_start=v_start,
        h_start=h_start, sides=np.where(h_start >= cam.ccd_pixels // 2, "E", "F"),  # ASSUMED
        patterns=patterns,
        rot=[_rotation_index(cam.ccd_orientation_deg[c - 1], _STAMP_PX) for c in ccd],
        flux_scale=flux_scale,
    )  # fmt: skip


def _plateau_otf(setup: _Setup, t_plateau: float) -> torch.Tensor:
    """One polychromatic OTF per field position at the plateau's mean TRP1."""
    eng, sp = setup.engine, setup.spectrum
    dz_th = float(setup.model.thermal.focal_shift_um(t_plateau))
    z = setup.model.optics.zernikes_nm(setup.theta, setup.phi, dz_th, sp.wavelengths_array_nm)
    with torch.no_grad():
        return torch.cat(
            [eng.otf(z[s : s + eng.chunk], sp) for s in range(0, setup.theta.size, eng.chunk)]
        )


def _field_frames(
    design: CampaignDesign, setup: _Setup, f: int, otf: torch.Tensor, rngs: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Background and source cubes (ADU) of field position ``f`` on one plateau."""
    n_dithers, fpd, w = design.n_dithers, design.frames_per_dither, design.window_px
    amp = design.dither_px
    rng_dither, rng_det = rngs["dither"], rngs["det"]
    # dithers: continuous CCD positions of the star
    pos = np.stack(
        [
            setup.row0[f] + rng_dither.uniform(-amp, amp, n_dithers),
            setup.col0[f] + rng_dither.uniform(-amp, amp, n_dithers),
        ],
        axis=1,
    )
    ipos = np.round(pos).astype(int)
    frac = pos - ipos  # (dr, dk) in [-0.5, 0.5]
    iy, ix, cg, sg = setup.rot[f]
    dx = cg * frac[:, 1] - sg * frac[:, 0]
    dy = sg * frac[:, 1] + cg * frac[:, 0]
    offs = np.stack([dx, dy], axis=1)[None]
    with torch.no_grad():
        st = setup.engine.stamps_from_otf(otf[f : f + 1], setup.spectrum, offs, _STAMP_PX)[0]
    st = np.clip(st.cpu().numpy().astype(np.float64), 0.0, None)[:, iy, ix]
    if setup.flux_scale is not None:
        st = st * setup.flux_scale[f]
    n_src = n_dithers * fpd
    timing = design.timing
    flux = design.flux_e * (1.0 + timing.lamp_flicker * rng_det.standard_normal(n_src))
    elec = np.zeros((n_src, w, w))
    c = _STAMP_PX // 2
    for d in range(n_dithers):
        r0 = ipos[d, 0] - setup.v_start[f] - c
        k0 = ipos[d, 1] - setup.h_start[f] - c
        for j in range(fpd):
            n = d * fpd + j
            elec[n, r0 : r0 + _STAMP_PX, k0 : k0 + _STAMP_PX] = flux[n] * st[d]
    det = design.detector
    bg = det.closed_shutter(
        (design.n_background_frames, w, w), timing.exptime_s, rng_det, setup.patterns[f]
    )
    src = det.expose(elec, timing.exptime_s, rng_det, setup.patterns[f])
    return bg, src


def _write_field_cubes(
    obs_dir: Path, design: CampaignDesign, setup: _Setup, f: int, ids: dict,
    cubes: tuple[np.ndarray, np.ndarray], cursor: _Cursor, counter: int,
) -> int:  # fmt: skip
    """Write the background and source cubes of field ``f``; returns the next file counter
    (the cursor's time advances by the frames, the shutter delay and the slew)."""
    timing, det = design.timing, design.detector
    obsid, site, camera_name = ids["obsid"], ids["site"], ids["camera"]
    ext = cf.image_ext_name(int(setup.ccd[f]), str(setup.sides[f]))
    keys = {
        "CCD_ID": (int(setup.ccd[f]), "CCD (1-4)"),
        "V_START": (int(setup.v_start[f]), "CCD row of the window's first pixel (0-based)"),
        "H_START": (int(setup.h_start[f]), "CCD column of the window's first pixel"),
        "EXPTIME": (timing.exptime_s, "exposure time (s)"),
        "CYCLETIM": (timing.cycle_s, "time between frame starts (s)"),
        "FOV_TH": (float(setup.theta[f]), "commanded field angle theta (deg)"),
        "FOV_PHI": (float(setup.phi[f]), "commanded field azimuth phi (deg)"),
        "GAIN": (det.gain_e_per_adu, "e-/ADU"),
    }
    for shutter, data in zip((cf.SHUTTER_CLOSED, cf.SHUTTER_OPEN), cubes, strict=True):
        prim = {
            "DATE-OBS": (cf.format_utc(cursor.t_utc), "UTC time of the first frame"),
            "OBSID": (obsid, "observation id"),
            "SITE": (site, "test house"),
            "CAMERA": (camera_name, "camera"),
        }
        cf.write_cube(
            obs_dir / cf.cube_file_name(obsid, site, counter, cursor.t_utc),
            prim,
            [(ext, {**keys, "SHUTTER": (shutter, "OPEN: source, CLOSED: bg")}, data)],
        )
        counter += 1
        cursor.t_utc += data.shape[0] * timing.cycle_s
        cursor.t_utc += timing.shutter_s if shutter == cf.SHUTTER_CLOSED else timing.slew_s
    return counter


def _write_hk(
    obs_dir: Path, timing: CampaignTiming, t_plateau: float, hk_t0: float, ids: dict,
    cursor: _Cursor, rng_hk: np.random.Generator,
) -> None:  # fmt: skip
    """The observation's housekeeping CSV (noisy, settling TRP1 and TRP22); moves the cursor
    past the thermal transition to the next plateau."""
    t_end = cursor.t_utc + 60.0
    hk_t = np.arange(hk_t0, t_end, timing.hk_period_s)
    settle = timing.settling_degC * float(rng_hk.standard_normal())
    trp1 = (
        t_plateau
        + settle * np.exp(-(hk_t - hk_t0) / timing.settling_tau_s)
        + timing.trp1_noise_degC * rng_hk.standard_normal(hk_t.size)
    )
    trp22 = trp1 + timing.trp22_offset_degC + 0.02 * rng_hk.standard_normal(hk_t.size)
    cf.write_hk_csv(
        obs_dir / cf.hk_file_name(ids["obsid"], ids["site"], ids["camera"], hk_t0),
        hk_t,
        trp1,
        {cf.HK_TRP22: trp22},
    )
    cursor.t_utc = t_end + timing.plateau_gap_s


def _render_plateau(
    out: Path, design: CampaignDesign, setup: _Setup, t_nom: float, ids: dict,
    cursor: _Cursor, rngs: dict,
) -> None:  # fmt: skip
    """One observation: achieved plateau, per field a background and a source cube, HK."""
    timing = design.timing
    t_plateau = t_nom + float(rngs["hk"].normal(0.0, timing.setpoint_error_degC))
    cursor.obsids.append(ids["obsid"])
    cursor.achieved.append(t_plateau)
    obs_dir = out / cf.obs_dir_name(ids["obsid"], ids["site"], ids["camera"])
    obs_dir.mkdir(exist_ok=True)
    hk_t0 = cursor.t_utc
    cursor.t_utc += timing.hk_lead_s
    otf = _plateau_otf(setup, t_plateau)
    counter = 1
    for f in range(setup.theta.size):
        cubes = _field_frames(design, setup, f, otf, rngs)
        counter = _write_field_cubes(obs_dir, design, setup, f, ids, cubes, cursor, counter)
        cursor.n_frames += design.n_dithers * design.frames_per_dither
    _write_hk(obs_dir, timing, t_plateau, hk_t0, ids, cursor, rngs["hk"])
    log.info("plateau %s (%.2f degC): %d frames so far", ids["obsid"], t_plateau, cursor.n_frames)


def _camera_truth(model, perturbation_strength: float) -> dict:
    """The emulated camera's parameters for the truth sidecar."""
    th = {
        "s_um_per_degC": model.thermal.s_um_per_degC,
        "t0_degC": model.thermal.t0_degC,
        "q_um_per_degC2": model.thermal.q_um_per_degC2,
    }
    if isinstance(model, CameraModel):
        return {
            "thermal": th,
            "perturbation": model.optics.perturbation.to_dict(),
            "perturbation_strength": float(perturbation_strength),
            "design": model.optics.design.to_dict(),
        }
    return {"thermal": th, **model.truth_dict()}  # another optical family


def _truth(
    design: CampaignDesign, setup: _Setup, cursor: _Cursor, run: dict, seconds: tuple
) -> dict:
    """The truth sidecar's content (same keys and order for every design-family campaign)."""
    bf = setup.bf
    return {
        "format_version": cf.FORMAT_VERSION,
        "plato_focus_version": __version__,
        "camera": run["camera"],
        "site": run["site"],
        "seed": int(run["seed"]),
        BFT_KEY: bf.bft_degC,
        "dz_th_at_bf_um": bf.dz_th_um,
        "eef_max_expected": bf.eef_max,
        **_camera_truth(setup.model, run["perturbation_strength"]),
        "detector": design.detector.to_dict(),
        "plateaux_nominal_degC": list(design.plateaux_degC),
        "plateaux_achieved_degC": cursor.achieved,
        "obsids": cursor.obsids,
        "fields": {
            "theta_deg": setup.theta.tolist(),
            "phi_deg": setup.phi.tolist(),
            "phi_table_deg": setup.phi_table.tolist(),
            "ccd": setup.ccd.tolist(),
        },
        "n_dithers": int(design.n_dithers),
        "frames_per_dither": int(design.frames_per_dither),
        "n_background_frames": int(design.n_background_frames),
        "window_px": int(design.window_px),
        "flux_e": float(design.flux_e),
        "timing": design.timing.__dict__,
        "n_source_frames": int(cursor.n_frames),
        "n_wavelengths": int(design.n_wavelengths),
        "n_sub_truth": int(run["n_sub_truth"]),
        "truth_version": TRUTH_VERSION,
        "seconds_truth": round(seconds[0], 2),
        "seconds_total": round(seconds[1], 2),
        "note": "optics of every frame use the plateau's achieved mean TRP1; HK is noisy",
    }


def _write_truth(out: Path, truth: dict) -> Path:
    """Write the sidecar atomically (last, so that a folder with a sidecar is complete)."""
    tp = truth_path(out)
    tmp = tp.with_suffix(".tmp")
    tmp.write_text(json.dumps(truth, indent=1))
    os.replace(tmp, tp)
    return tp


def emulate_campaign(
    out_dir: str | Path,
    design: CampaignDesign | None = None,
    *,
    camera_name: str = "emulated",
    bft_degC: float = -78.0,
    seed: int = 0,
    perturbation_strength: float = 1.0,
    site: str = "INTA",
    first_obsid: int = 1024,
    obsid_step: int = 11,
    start_utc: str = "2026-03-02T08:00:00",
    camera_model=None,
    engine: FastEngine | None = None,
    spectrum: Spectrum | None = None,
    n_sub_truth: int = TRUTH_N_SUB,
    overwrite: bool = False,
    **design_overrides,
) -> dict:
    """Write one camera's synthetic ground-test campaign (format v1) and return its truth.

    Args:
        out_dir: campaign folder to create (must be empty or absent unless ``overwrite``).
        design: what the campaign measures (:class:`~plato_sim.scenes.design.CampaignDesign`:
            plateaux, field table, dithers, frames, background frames, flux, window, timing,
            detector, wavelength samples); default ``CampaignDesign()``.
        camera_name: the ``CAMERA`` of the folder names and headers (no ``_``).
        bft_degC: the emulated camera's true best-focus temperature (TRP1, degC).
        seed: seed of every random draw (same seed -> bit-identical files).
        perturbation_strength: scale of the random camera perturbation (0 = nominal design).
        site: test house in names and headers.
        first_obsid, obsid_step: OBSID of the first plateau and the step between plateaux.
        start_utc: time of the first HK sample of the first observation (ISO 8601, UTC).
        camera_model: the camera to emulate (default: a random
            :class:`~plato_sim.optics.model.CameraModel` drawn from ``seed``); its ``T0`` is
            replaced to honour ``bft_degC``.  Another optical family (e.g.
            :class:`plato_sim.optics.family_nodal.NodalCamera`) provides ``optics`` (with
            ``camera``, ``design.field_radius_deg``, ``zernikes_nm``,
            ``local_focal_offset_um``), ``thermal``, ``with_t0`` and ``truth_dict()``, and
            optionally ``relative_illumination(theta_deg, phi_deg)``.
        engine: the fast PSF engine (default one is built).
        spectrum: the source spectrum as detected (default the OGSE spectrum of the camera
            with ``design.n_wavelengths`` samples).
        n_sub_truth: sub-pixel grid used for the truth's expected EEF (n x n).
        overwrite: allow writing into a non-empty folder.
        **design_overrides: fields of :class:`CampaignDesign` that replace the design's
            (``plateaux_degC``, ``n_fields``, ``n_dithers``, ``frames_per_dither``,
            ``window_px``, ``n_background_frames``, ``flux_e``, ``timing``, ``detector``,
            ``n_wavelengths``, ...); ``None`` values are ignored.

    Returns:
        The truth dict (also written to :func:`truth_path`; the true best-focus temperature is
        ``"bft_degC"``).
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    design = _resolve_design(design, design_overrides)
    _check_run(out, camera_name, overwrite)
    ss = np.random.SeedSequence(int(seed))
    names = ("cam", "fp", "dither", "hk", "det")
    rngs = {k: np.random.default_rng(s) for k, s in zip(names, ss.spawn(5), strict=True)}
    setup = _set_up_camera(design, rngs, seed, bft_degC, perturbation_strength, camera_model,
                           engine, spectrum, n_sub_truth)  # fmt: skip
    t_truth = time.perf_counter() - t_start

    out.mkdir(parents=True, exist_ok=True)
    cursor = _Cursor(t_utc=cf.parse_utc(start_utc))
    for ip, t_nom in enumerate(design.plateaux_degC):
        ids = {"obsid": first_obsid + obsid_step * ip, "site": site, "camera": camera_name}
        _render_plateau(out, design, setup, t_nom, ids, cursor, rngs)

    run = dict(camera=camera_name, site=site, seed=seed, n_sub_truth=n_sub_truth,
               perturbation_strength=perturbation_strength)  # fmt: skip
    truth = LegacyNameDict(
        _truth(design, setup, cursor, run, (t_truth, time.perf_counter() - t_start))
    )
    _write_truth(out, truth)
    log.info("campaign %s: %d source frames, true T_BF %.2f degC", out, cursor.n_frames,
             truth[BFT_KEY])  # fmt: skip
    return truth


def emulate_or_load(out_dir: str | Path, design: CampaignDesign | None = None, **kwargs) -> dict:
    """The truth of the campaign in ``out_dir``, emulating it only if it is not there yet.

    A cache for benchmarks and calibration sets: the truth sidecar is written last and
    atomically by :func:`emulate_campaign`, so a folder with a sidecar is complete, and a
    folder without one (absent, or interrupted mid-write) is emulated anew with
    ``emulate_campaign(out_dir, design, overwrite=True, **kwargs)``.  The caller names the
    folder so that different settings never share it.  A cached sidecar is read with
    :func:`read_truth` (sidecars of earlier versions included); one whose truth was computed by
    other numerics (``truth_version`` other than
    :data:`~plato_sim.truth.bestfocus.TRUTH_VERSION`; absent means 1) is emulated again.
    """
    tp = truth_path(out_dir)
    if tp.is_file():
        truth = read_truth(tp)
        if int(truth.get("truth_version", 1)) == TRUTH_VERSION:
            return truth
        log.info("%s: truth of version %s, now %d: emulated again", out_dir,
                 truth.get("truth_version", 1), TRUTH_VERSION)  # fmt: skip
    return emulate_campaign(out_dir, design, overwrite=True, **kwargs)
