"""Calibration of the CNN estimate's uncertainty on emulated cameras.

The bootstrap sigma of :func:`plato_cnn.fit.fit_bft` only sees the frame-to-frame noise; the
dominant error of a camera's T_BF is systematic (how that camera's aberrations differ from the
cameras the network was trained on, and how its field-averaged EEF curve differs from the
template).  This module measures that systematic part on emulated calibration cameras —
random perturbations from their own seed stream, none of them in the pretraining set nor in
the benchmarks' camera sets — for each number of plateaux, and records it in the model's
description; :func:`plato_cnn.predict.cnn_bft` adds it in quadrature.

This calibrates the sigma *within the simulator's camera population*: on real cameras the
model mismatch adds to it, which fine-tuning and the classical estimator's cross-check are
for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plato_cnn.nn.card import RECHECK_KEY, update_model_json
from plato_sim.truth.bestfocus import TRUTH_N_SUB
from plato_sim.workers import map_jobs, pin_one_thread

__all__ = [
    "PLATEAU_SUBSETS",
    "plateau_subset_masks",
    "RECHECK_KEY",
    "earlier_sweep_s_prior",
    "emulate_calibration_set",
    "calibrate_systematic",
]

#: Plateau subsets used for calibration and benchmarks (degC), by number of plateaux.
PLATEAU_SUBSETS = {
    5: (-90.0, -85.0, -80.0, -75.0, -70.0),
    3: (-90.0, -80.0, -70.0),
    2: (-85.0, -75.0),
    1: (-80.0,),
}
TRUTH_RANGE_DEGC = (-84.0, -72.0)


def plateau_subset_masks(frames) -> dict[int, np.ndarray]:
    """Per plateau count ``k`` of :data:`PLATEAU_SUBSETS` that the campaign ``frames`` holds,
    the frames of a ``k``-plateau subset chosen by rank of temperature where those subsets sit
    in the standard five (the fraction ``f`` of the way from the coldest to the warmest: with 3
    the coldest, middle and warmest, with 2 those a quarter of the way in, with 1 the middle
    one; the plateau of rank ``round(f (P - 1))`` of the campaign's ``P``): the same subsets on
    a standard campaign, their like on any other."""
    ids = np.unique(frames.obsid)
    t = np.array([np.mean(frames.temperature_degC[frames.obsid == i]) for i in ids])
    order = ids[np.argsort(t)]
    lo, hi = min(PLATEAU_SUBSETS[5]), max(PLATEAU_SUBSETS[5])
    out = {}
    for k, temps in PLATEAU_SUBSETS.items():
        if k <= len(order):
            f = (np.asarray(temps) - lo) / (hi - lo)
            pos = np.floor(f * (len(order) - 1) + 0.5).astype(int)
            out[k] = np.isin(frames.obsid, order[pos])
    return out


def earlier_sweep_s_prior(frames, model_dir, plateaux_degC) -> tuple[float, float]:
    """``(s, sigma_s)`` (um/degC, the network's scale) fitted on ``plateaux_degC`` of a camera.

    Stands for an earlier sweep of the same camera in the one-plateau re-check
    (:func:`plato_cnn.predict.cnn_bft` ``s_prior``): the benchmarks and the calibration take
    the camera's other plateaux.
    """
    from plato_cnn.predict import cnn_bft

    fit, _ = cnn_bft(frames.select(frames.plateau_mask(plateaux_degC)), model_dir, n_boot=0,
                     systematic=False)  # fmt: skip
    return fit.s_um_per_degC, max(fit.s_sigma_um_per_degC, 1e-3)


def _emulate(job: dict) -> dict:
    pin_one_thread()
    from plato_sim.scenes.ground_test import emulate_or_load

    return emulate_or_load(
        job["dir"], camera_name=f"calib{job['i']:03d}", bft_degC=job["bft"],
        plateaux_degC=PLATEAU_SUBSETS[5], n_fields=job["fields"], n_dithers=job["dithers"],
        frames_per_dither=job["frames"], window_px=48, seed=job["seed"],
        perturbation_strength=1.0, n_sub_truth=TRUTH_N_SUB,
    )  # fmt: skip


def emulate_calibration_set(
    workdir: str | Path,
    n_cameras: int = 12,
    seed: int = 91_000,
    fields: int = 40,
    dithers: int = 3,
    frames: int = 2,
    workers: int = 2,
) -> list[tuple[Path, float]]:
    """Emulate (or reuse) the calibration campaigns; returns ``(folder, true T_BF)`` pairs."""

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bfts = rng.uniform(*TRUTH_RANGE_DEGC, n_cameras)
    jobs = [
        dict(i=i, dir=str(work / f"calib{i:03d}_f{fields}_d{dithers}x{frames}_n{TRUTH_N_SUB}"),
             bft=float(b), seed=seed * 1000 + i, fields=fields, dithers=dithers, frames=frames)
        for i, b in enumerate(bfts)
    ]  # fmt: skip
    truths = map_jobs(_emulate, jobs, workers, desc="calibration set: campaigns")
    return [(Path(j["dir"]), float(t["bft_degC"])) for j, t in zip(jobs, truths, strict=True)]


def _camera_errors(job: tuple[str, float, str]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{"head"|"no_head": {"5"|"3"|"2"|"1"|"1s": (error, bootstrap sigma)}}`` (degC) of one
    calibration camera, with and without the model's plateau head (only "head" without one).
    """
    pin_one_thread()
    from plato_cnn.nn.card import load_model
    from plato_cnn.predict import cnn_bft
    from plato_cnn.reader import read_campaign

    folder, truth, model_dir = job
    fr = read_campaign(folder)
    fr = fr.select(fr.usable)
    variants = {"head": True}
    if load_model(model_dir)[1].get("plateau_head"):
        variants["no_head"] = False
    out = {}
    for name, head in variants.items():
        errs = {}
        for n, sub in PLATEAU_SUBSETS.items():
            fit, _ = cnn_bft(fr.select(fr.plateau_mask(sub)), model_dir, n_boot=100,
                             systematic=False, plateau_head=head)  # fmt: skip
            errs[str(n)] = (fit.bft_degC - truth, fit.sigma_degC)
        earlier = [t for t in PLATEAU_SUBSETS[5] if t not in PLATEAU_SUBSETS[1]]
        prior = earlier_sweep_s_prior(fr, model_dir, earlier)
        fit, _ = cnn_bft(fr.select(fr.plateau_mask(PLATEAU_SUBSETS[1])), model_dir, n_boot=100,
                         systematic=False, s_prior=prior, plateau_head=head)  # fmt: skip
        errs[RECHECK_KEY] = (fit.bft_degC - truth, fit.sigma_degC)
        out[name] = errs
    return out


def _sigma_table(per_cam: list[dict[str, tuple[float, float]]]) -> dict:
    """Per calibration key: RMS error, bias, bootstrap scale, systematic sigma, coverage."""
    out = {}
    for n in [str(k) for k in PLATEAU_SUBSETS] + [RECHECK_KEY]:
        e = np.asarray([c[n][0] for c in per_cam])
        b = np.asarray([c[n][1] for c in per_cam])
        c = float(min(1.0, np.percentile(np.abs(e) / np.maximum(b, 1e-9), 68.27)))
        sys_sigma = float(np.sqrt(np.mean(np.maximum(0.0, e**2 - (c * b) ** 2))))
        out[n] = {
            "rms_error_degC": float(np.sqrt(np.mean(e**2))),
            "bias_degC": float(np.mean(e)),
            "rms_bootstrap_sigma_degC": float(np.sqrt(np.mean(b**2))),
            "bootstrap_scale": c,
            "systematic_sigma_degC": sys_sigma,
            "coverage": float(np.mean(np.abs(e) <= np.hypot(c * b, sys_sigma) * (1 + 1e-9))),
        }
    return out


def calibrate_systematic(
    model_dir: str | Path,
    campaigns: list[tuple[Path, float]],
    write: bool = True,
    workers: int = 1,
) -> dict:
    """Measure the systematic sigma per plateau count and (optionally) store it in model.json.

    ``sigma_sys(n)^2 = mean_i max(0, error_i^2 - (c_n sigma_boot,i)^2)`` over the calibration
    cameras: what the bootstrap misses, camera by camera (a camera whose bootstrap sigma is
    large, e.g. one plateau far from its best focus with ``s`` from the prior, does not lend
    its margin to the others).  ``c_n <= 1`` shrinks a bootstrap that covers too much: the
    68th percentile of ``|error_i| / sigma_boot,i``, capped at 1.  It is below 1 only where the
    bootstrap is the prior's spread of ``s`` (one plateau), which is wider (10 +- 3 um/degC)
    than the simulator's population of cameras.  A model with a plateau head gets a second
    table, measured without it (``without_plateau_head``), for fits in which the head is not
    used on every plateau.  ``workers`` processes share the cameras.
    """
    jobs = [(str(f), float(t), str(model_dir)) for f, t in campaigns]
    per_cam = map_jobs(_camera_errors, jobs, workers, desc="calibrate: cameras")
    out = _sigma_table([c["head"] for c in per_cam])
    result = {"n_cameras": len(campaigns), "by_plateaux": out}
    if "no_head" in per_cam[0]:
        result["without_plateau_head"] = _sigma_table([c["no_head"] for c in per_cam])
    if write:
        entries = {
            "systematic_sigma_degC": {k: v["systematic_sigma_degC"] for k, v in out.items()},
            "bootstrap_scale": {k: v["bootstrap_scale"] for k, v in out.items()},
            "sigma_calibration": result,
        }
        if "without_plateau_head" in result:
            nh = result["without_plateau_head"]
            entries["without_plateau_head"] = {
                "systematic_sigma_degC": {k: v["systematic_sigma_degC"] for k, v in nh.items()},
                "bootstrap_scale": {k: v["bootstrap_scale"] for k, v in nh.items()},
            }
        update_model_json(model_dir, drop=("without_plateau_head",), **entries)
    return result
