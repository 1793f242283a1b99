"""Synthetic training samples: stamps cut from simulated detector windows, with their labels.

A sample is made exactly as the campaign reader makes a stamp from a real frame, so that
pretraining sees what inference sees:

1. a star of ``flux_e`` detected electrons is rendered by the fast PSF engine (OGSE spectrum
   by default) at a random position of a ``(size + margin)``-pixel square detector window
   (integer pixel + sub-pixel offset), on a uniform diffuse background (electrons);
2. :class:`plato_sim.detector.DetectorModel` turns the window into a raw 16-bit ADU frame,
   and makes ``n_closed_frames`` closed-shutter frames of the same window (same fixed
   pattern: PRNU, hot pixels);
3. as in the campaign reader (:mod:`plato_cnn.reader`): the background is the mean of the
   closed-shutter frames (float64, stored as float32), subtracted from the float32 raw frame,
   and the difference is converted to electrons with the detector's gain (the cube's
   ``GAIN``);
4. :func:`plato_sim.stamps.extract_stamp` cuts the ``size x size`` stamp (default 32, float32,
   **electrons** above the closed-shutter level) centred on the pixel nearest the centroid,
   no resampling.  The diffuse background light is not in the closed-shutter frames and
   stays in the stamp, as in real frames.

Reuse of optical states (why it stays honest): the expensive part is the polychromatic OTF of
one optical state (camera, field position, thermal focal shift), ~8.5 ms with 10
wavelengths on one core.  One OTF serves ``samples_per_optical_state`` samples (16 by
default), each with its *own* sub-pixel offset (an exact DFT of the OTF, no interpolation),
window position, flux, background, detector parameters, fixed pattern and noise draws: a
dither series of one star, as the test houses take 25 dithers per field position.  The labels
of the samples of one state share the focus and field values.  Detector parameters are drawn
once per optical state.

The camera pool, the optical states, the labels and the config are shared with the in-orbit
scene and live in :mod:`plato_sim.scenes.sampling`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from plato_sim.detector import DetectorModel, draw_value
from plato_sim.errors import ParameterError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, ccd_of_field
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.sampling import (
    SEED_KEY_DIFFUSION,
    SEED_KEY_SHARD,
    CameraEntry,
    detector_labels,
    draw_optical_states,
    label_dtype,
    make_engine,
    render_spectrum,
    single_thread_torch,
    state_labels,
)
from plato_sim.stamps import background_adu, extract_stamp, saturation_level_adu
from plato_sim.truth.eef import eef

__all__ = ["make_shard"]


def _stack_terms(zs: list[np.ndarray]) -> np.ndarray:
    """``(S, L, J_max)``: states of cameras of other families carry more Noll terms than the
    design's; the missing ones are zero (a pool of one family stacks unchanged)."""
    j = max(z.shape[-1] for z in zs)
    out = np.zeros((len(zs), zs[0].shape[0], j))
    for k, z in enumerate(zs):
        out[k, :, : z.shape[-1]] = z
    return out


# Long because: the numbered steps of the module docstring (render, detector,
# background, cut, labels) over per-sample arrays that every step fills.
def make_shard(
    cfg: dict,
    seed: int,
    shard_index: int,
    n_samples: int,
    cameras: list[CameraEntry],
    engine: FastEngine | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one shard: ``(stamps float32 (n, size, size) e-, labels (n,) structured)``.

    Deterministic in ``(cfg, seed, shard_index, n_samples, cameras)``.
    """
    if n_samples < 1:
        raise ParameterError(f"make_shard: n_samples must be >= 1, got {n_samples}")
    if not cameras:
        raise ParameterError("make_shard: the camera pool is empty")
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(SEED_KEY_SHARD, shard_index))
    )
    engine = engine or make_engine(cfg)
    sp = render_spectrum(cfg)
    size = int(cfg["stamp"]["size_px"])
    win = size + int(cfg["stamp"]["window_margin_px"])
    per = int(cfg["shards"]["samples_per_optical_state"])
    ex = cfg["exposure"]
    exptime = float(ex["exptime_s"])
    n_closed = int(ex["n_closed_frames"])

    # --- optical states: camera, field position, focus
    n_states = math.ceil(n_samples / per)
    state_of = np.arange(n_samples) // per
    os_ = draw_optical_states(rng, n_states, cfg, cameras)
    cam_idx, th, ph, models, dz_th = (
        os_.cam_idx,
        os_.theta_deg,
        os_.phi_deg,
        os_.models,
        os_.dz_th_um,
    )

    # --- per-sample draws
    flux = draw_value(rng, ex["flux_e"], "exposure.flux_e", n_samples)
    bg = draw_value(rng, ex["background_e_per_px"], "exposure.background_e_per_px", n_samples)
    sub = rng.uniform(-0.5, 0.5, (n_samples, 2))  # (dx, dy) pixels
    c = size // 2
    # star pixel such that the stamp fits in the window with one pixel to spare
    lo, hi = c + 1, win - size + c - 1
    pix = rng.integers(lo, hi + 1, (n_samples, 2))  # (row, col)
    detectors = [DetectorModel.random(rng, cfg["detector"]) for _ in range(n_states)]

    # --- optics: one OTF per state, one stamp per sample
    half = engine.fov_px // 2 + 1
    psize = 2 * half  # PSF patch: covers the engine's whole support around the star
    zs = _stack_terms(
        [
            models[int(cam_idx[s])].optics.zernikes_nm(
                th[s], ph[s], dz_th[s], sp.wavelengths_array_nm
            )[0]
            for s in range(n_states)
        ]
    )
    offs = np.zeros((n_states, per, 2))
    offs.reshape(-1, 2)[:n_samples] = sub
    diffusion = cfg["engine"]["diffusion_sigma_px"]
    sigma_px = None  # a fixed diffusion is the engine's own
    if "diffusion_sigma_px" in cfg["cameras"]:  # each camera's own
        sigma_px = np.array([cameras[int(i)].diffusion_sigma_px for i in cam_idx], dtype=float)
    elif not isinstance(diffusion, numbers.Real):  # a spec: each optical state draws its own
        key = (SEED_KEY_SHARD, shard_index, SEED_KEY_DIFFUSION)
        rng_d = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
        sigma_px = draw_value(rng_d, diffusion, "engine.diffusion_sigma_px", n_states)
    weights = None  # the rendered spectrum's, unless the cameras detect their own
    if any(cameras[int(i)].detected_spectrum(sp) is not sp for i in np.unique(cam_idx)):
        weights = np.stack([cameras[int(i)].detected_spectrum(sp).weights_array for i in cam_idx])
    psf = np.empty((n_states, per, psize, psize))
    with single_thread_torch(), torch.no_grad():
        for s0 in range(0, n_states, engine.chunk):
            e = slice(s0, s0 + engine.chunk)
            otf = engine.otf(zs[e], sp, None if weights is None else weights[e])
            if sigma_px is not None:
                otf = otf * engine.extra_blur(sp, sigma_px[e])
            psf[e] = engine.stamps_from_otf(otf, sp, offs[e], psize).cpu().numpy()
    psf = psf.reshape(-1, psize, psize)[:n_samples]
    eef_true = eef(psf)

    # --- detector windows, closed-shutter frames, stamps
    stamps = np.zeros((n_samples, size, size), dtype=np.float32)
    lab = np.zeros(n_samples, dtype=label_dtype())
    ccd, ccd_row, ccd_col = ccd_of_field(PLATO_NORMAL_CAMERA, th, ph)
    for s in range(n_states):
        idx = np.arange(s * per, min((s + 1) * per, n_samples))
        det = detectors[s]
        e_img = np.repeat(bg[idx, None, None], win, axis=1).repeat(win, axis=2)
        for k, i in enumerate(idx):
            r0, c0 = pix[i, 0] - half, pix[i, 1] - half
            e_img[k, r0 : r0 + psize, c0 : c0 + psize] += flux[i] * psf[i]
        np.clip(e_img, 0.0, None, out=e_img)  # float32 FFT round-off can dip below zero
        pattern = det.fixed_pattern(e_img.shape, rng)
        raw = det.expose(e_img, exptime, rng, pattern)
        closed = det.closed_shutter((n_closed,) + e_img.shape, exptime, rng, pattern)
        # the campaign reader's arithmetic and saturation rule (plato_cnn.reader)
        sub_adu = raw.astype(np.float32) - background_adu(closed)
        sat_adu = min(saturation_level_adu(det.gain_e_per_adu, det.full_well_e), det.adc_max_adu)
        sat = (raw.reshape(len(idx), -1).max(axis=1) >= det.adc_max_adu) | (
            sub_adu.reshape(len(idx), -1).max(axis=1) > sat_adu
        )
        window_e = sub_adu * np.float32(det.gain_e_per_adu)
        for k, i in enumerate(idx):
            cut = extract_stamp(window_e[k], size)
            stamps[i] = cut.stamp
            lab["centre_row"][i] = cut.centre_row
            lab["centre_col"][i] = cut.centre_col
            lab["n_outside_px"][i] = int(cut.valid.size - np.count_nonzero(cut.valid))
            lab["saturated"][i] = sat[k]
        detector_labels(lab, idx, det)

    # --- labels
    st = state_of
    lab["seed"] = seed
    lab["shard"] = shard_index
    lab["index"] = np.arange(n_samples)
    lab["ccd"], lab["ccd_row"], lab["ccd_col"] = ccd[st], ccd_row[st], ccd_col[st]
    state_labels(lab, os_, cameras, st)
    star_row = pix[:, 0] + sub[:, 1]
    star_col = pix[:, 1] + sub[:, 0]
    lab["star_row_px"], lab["star_col_px"] = star_row, star_col
    lab["offset_x_px"] = star_col - lab["centre_col"]
    lab["offset_y_px"] = star_row - lab["centre_row"]
    lab["flux_e"] = flux
    lab["background_e_per_px"] = bg
    lab["exptime_s"] = exptime
    lab["eef_true"] = eef_true
    return stamps, lab
