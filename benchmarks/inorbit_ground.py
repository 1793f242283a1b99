"""In-orbit focus check corrected by each camera's own ground test: error against the truth.

For each emulated camera (the in-orbit bench's seeds, T_BF and TRP1 draws:
``benchmarks.inorbit``), the camera's ground campaign is emulated first (the reference design:
40 field positions, plateaux -90 ... -70 degC) with its best focus moved by a *launch shift*
drawn uniform in ``+-launch-shift-degC`` (ASSUMED: launch, gravity release and the orbit's
thermal state move the focus against TRP1; the in-orbit check must not assume the ground's
temperature of best focus).  The ground campaign is fitted by the forward method with
``field_focus``; the in-orbit network's bias, the field map and the thermal curve follow
(:func:`plato_cnn.ground_calibration.measure_ground_calibration`).  In orbit one field of
``max(--n-stars)`` stars (V 8.5-13) is emulated at ``T = T_BF - dT`` and cut into disjoint
sets of N stars; each set is checked three ways: the shipped check (design map, s prior),
the ground-corrected check with the bias read at the camera's present focus (the product's
default), and the same read at the present TRP1 (what a launch shift misplaces).

Rows per (family, method, N): RMS of the TRP1 change's error, its 68 % range with the cameras
resampled, bias, the fraction within the stated sigma, the median sigma, and the RMS of the
common shift's residual (um) beside the statistical sigma.

``--calibrate`` runs a family on the calibration seeds (1000 and up, none of the
benchmark's) and prints, from the sets of 100 stars, the corrected check's ground-to-orbit
offset (the offset in use plus the mean residual of the common shift, um:
:data:`plato_cnn.ground_calibration.GROUND_TO_ORBIT_UM`), its systematic sigma on the corrected
mean ``F`` (``sqrt(mean((k residual)^2) - mean((k sigma_stat)^2))``, ``k`` each set's
sensitivity, um: :data:`plato_cnn.ground_calibration.GROUND_SYSTEMATIC_UM`; also about the mean
residual), the sensitivities (0.9 x the smallest of the design family's:
:data:`plato_cnn.ground_calibration.SENSITIVITY_OUTSIDE`) and, for a family the network never
saw, the outside-model term over the flagged cameras
(:data:`plato_cnn.ground_calibration.GROUND_OUTSIDE_MODEL_UM`).  ``--family nodal`` (the
cameras of :mod:`plato_sim.scenes.inorbit_nodal`, seen by no training or calibration) scores
only: it refuses ``--calibrate``.

Usage::

    python -m benchmarks.inorbit_ground [--family design|highorder|highorder-mild|nodal]
        [--cameras 8] [--keep-dir out/inorbit_ground] [--json R.json] [--calibrate] [--quick]
        [--ground-plateaux=-90,-87.5,...,-70]

The ground campaigns and forward reports are kept under ``--keep-dir`` (a rerun reads them).
``--ground-plateaux`` emulates the ground campaign with other TRP1 plateaux (a test design's
effect on the check: its campaigns kept in their own folder, :func:`ground_folder`; the
calibrated terms are those of the reference design).
``--labels oracle`` (a diagnostic) replaces the forward fit by the camera's own optics: each
ground position's EEF-optimal focus, the true thermal model and T_BF.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/inorbit_ground.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    parse_with_quick,
    percent,
    report,
)
from benchmarks.inorbit import _camera_bootstrap_rms as _camera_range  # noqa: E402
from benchmarks.inorbit import _rms  # noqa: E402
from plato_sim.workers import pin_one_thread  # noqa: E402

QUICK = dict(cameras=1, n_stars="100", max_subsets=2)
METHODS = ("shipped", "ground_focus", "ground_trp1", "forward")
FAMILIES = ("design", "highorder", "highorder-mild", "nodal")
#: Calibration cameras' first seed (the in-orbit check's own calibration seeds).
CALIBRATION_SEED = 1000
#: The outside-model term is measured on the flagged cameras when at least this many are
#: flagged, else on all the calibration cameras (a rule set before its first measurement).
MIN_FLAGGED_CAMERAS = 4
#: The sensitivity threshold (:data:`plato_cnn.ground_calibration.SENSITIVITY_OUTSIDE`) is this
#: fraction of the smallest sensitivity of the design calibration cameras' sets (a rule set
#: before its first measurement: 10 % below anything seen in family).
SENSITIVITY_OUTSIDE_FRACTION = 0.9


def _ground(job: dict, cam, t_bf_ground: float) -> tuple:
    """The camera's ground campaign (emulated or read back), its usable frames and forward
    report (fitted or read back)."""
    from plato_cnn.forward import forward_bft
    from plato_cnn.reader import read_campaign
    from plato_sim.scenes.design import CampaignDesign
    from plato_sim.scenes.ground_test import emulate_or_load

    keep = Path(job["keep_dir"]) / ground_folder(job["family"], job.get("ground_plateaux"))
    cdir = keep / f"campaign_{job['seed']}"
    t0 = time.perf_counter()
    # a nodal camera brings its own diffusion and detected OGSE spectrum; the other families
    # take the emulator's
    own = {}
    if hasattr(cam, "engine"):
        own = dict(engine=cam.engine(), spectrum=cam.spectrum(CampaignDesign().n_wavelengths))
    design = None
    if job.get("ground_plateaux"):
        design = CampaignDesign(plateaux_degC=tuple(job["ground_plateaux"]))
    truth = emulate_or_load(cdir, design, camera_model=cam.model(), bft_degC=t_bf_ground,
                            seed=job["seed"], camera_name=f"C{job['seed']}", **own)  # fmt: skip
    t_emulate = time.perf_counter() - t0
    fr = read_campaign(cdir)
    fr = fr.select(fr.usable)
    rpath = keep / f"forward_{job['seed']}.json"
    t1 = time.perf_counter()
    if job["labels"] == "oracle":
        rep = _oracle_report(truth, fr, cam)
    elif rpath.is_file():
        rep = json.loads(rpath.read_text())
    else:
        from plato_cnn.report import write_json

        rep = forward_bft(fr, field_focus=True)
        write_json(rpath, rep)
    return truth, fr, rep, dict(emulate_s=t_emulate, forward_s=time.perf_counter() - t1)


def ground_folder(family: str, plateaux_degC: list[float] | None) -> str:
    """The folder (under ``--keep-dir``) of a family's ground campaigns and forward reports:
    the family's name for the reference design's plateaux, with the plateaux appended for
    any other (campaigns of different designs never share a folder)."""
    if not plateaux_degC:
        return family
    return family + "_plateaux_" + "_".join(f"{t:g}" for t in plateaux_degC)


def _oracle_report(truth: dict, fr, cam) -> dict:
    """A forward report's ``field_focus`` block from the camera's own optics (a diagnostic:
    what the chain gives when the ground fit is exact): each ground position's EEF-optimal
    thermal shift (OGSE spectrum, as the truth's), the true thermal model and T_BF."""
    from plato_cnn.forward import field_distance_deg
    from plato_sim.scenes.design import CampaignDesign
    from plato_sim.truth.bestfocus import field_best_focus_um

    th, ph = np.asarray(truth["fields"]["theta_deg"]), np.asarray(truth["fields"]["phi_deg"])
    d = field_distance_deg(th, ph, fr.field_theta_deg, fr.field_phi_deg)
    used = np.unique(np.argmin(d, axis=1))
    own = {}
    if hasattr(cam, "engine"):
        own = dict(spectrum=cam.spectrum(CampaignDesign().n_wavelengths), engine=cam.engine())
    best, _ = field_best_focus_um(cam.model().optics, th[used], ph[used], **own)
    t = truth["thermal"]
    thermal = dict(t_ref_degC=t["t0_degC"], b_um=0.0, s_um_per_degC=t["s_um_per_degC"],
                   q_um_per_degC2=t["q_um_per_degC2"])  # fmt: skip
    return dict(bft_degC=float(truth["bft_degC"]), sigma_degC=0.0, warnings=[],
                field_focus=dict(theta_deg=list(th[used]), phi_deg=list(ph[used]),
                                 dz_th_best_um=list(best), thermal=thermal))  # fmt: skip


# Long because: one camera's whole chain in order (draws, ground campaign and fit,
# calibration, in-orbit field, three checks per star set), over shared truths.
def _job(job: dict) -> list[dict]:
    """One camera: ground chain, in-orbit field, the checks of its star sets."""
    pin_one_thread()
    from plato_cnn.focuscheck import focus_check, inorbit_model_dir
    from plato_cnn.focuscheck_forward import forward_focus_check
    from plato_cnn.ground_calibration import GROUND_TO_ORBIT_UM, measure_ground_calibration
    from plato_cnn.nn.card import load_model
    from plato_sim.io.imagette_format import ImagetteField
    from plato_sim.scenes.inorbit import emulate_imagettes, make_camera

    # the in-orbit bench's draws (same cameras, T_BF, dT and stars as benchmarks.inorbit)
    rng = np.random.default_rng(job["seed"])
    t_bf = float(rng.uniform(-84.0, -72.0))
    launch = float(
        np.random.default_rng(job["seed"] + 5000).uniform(-1.0, 1.0) * job["launch_shift"]
    )
    if job["family"] == "nodal":
        from plato_sim.scenes.inorbit_nodal import make_nodal_camera

        cam = make_nodal_camera(job["seed"], bft_degC=t_bf)
    else:
        cam = make_camera(job["seed"], bft_degC=t_bf, family=job["family"])
    truth, fr, rep, times = _ground(job, cam, t_bf - launch)
    loaded = load_model(job.get("model") or inorbit_model_dir())
    t0 = time.perf_counter()
    cal = measure_ground_calibration(fr, rep, job.get("model"))
    times["calibration_s"] = time.perf_counter() - t0
    dt_true = float(rng.uniform(-job["dt_range"], job["dt_range"]))
    temp = t_bf - dt_true
    f = emulate_imagettes(cam, temp, max(job["n_stars"]), seed=int(rng.integers(2**31)),
                          camera_name=f"C{job['seed']}",
                          engine=cam.engine() if hasattr(cam, "engine") else None)  # fmt: skip
    g_true = float(f.truth["dz_th_um"] - f.truth["dz_bf_um"])
    order = np.random.default_rng(job["seed"] + 7).permutation(len(f.stars))
    base = dict(camera_seed=job["seed"], family=job["family"], labels=job["labels"], bft_degC=t_bf,
                launch_shift_degC=launch, ground_bft_true_degC=float(truth["bft_degC"]),
                ground_bft_fit_degC=float(rep["bft_degC"]), ground_warnings=len(rep["warnings"]),
                ground_outside_model=bool(rep.get("outside_model", False)),
                bias_rms_um=cal.spread_um, ground_to_orbit_um=GROUND_TO_ORBIT_UM,
                temperature_degC=temp, dt_true_degC=dt_true,
                shift_true_um=g_true, s_true=float(f.truth["s_um_per_degC"]), **times)  # fmt: skip
    out = []
    for n in job["n_stars"]:
        for k in range(min(len(order) // n, job["max_subsets"])):
            idx = np.sort(order[k * n : (k + 1) * n])
            sub = ImagetteField(f.imagettes[idx], f.stars[idx], f.header, None)
            for method in METHODS:
                if method == "forward" and job["labels"] == "oracle":
                    continue  # the oracle report holds no fitted optics
                rec = dict(base, n_stars=n, subset=k, method=method)
                kw = {} if method == "shipped" else dict(ground=cal, ground_index=method[7:])
                t_check = time.perf_counter()
                try:
                    if method == "forward":
                        fc = forward_focus_check(sub, temp, rep)
                    else:
                        fc = focus_check(sub, temp, loaded=loaded, **kw)
                except ValueError as exc:  # e.g. every star of a small set saturated
                    rec.update(failed=str(exc))
                    out.append(rec)
                    continue
                if method == "forward":
                    rec.update(check_s=time.perf_counter() - t_check,
                               chi2_reduced=fc.chi2_reduced,
                               slope_um_per_degC=fc.slope_um_per_degC,
                               sigma_calibrated=fc.sigma_calibrated,
                               check_outside_model=fc.outside_model)  # fmt: skip
                rec.update(dt_est_degC=fc.delta_t_degC, sigma_degC=fc.delta_t_sigma_degC,
                           error_degC=fc.delta_t_degC - dt_true, shift_est_um=fc.shift_um,
                           shift_error_um=fc.shift_um - g_true,
                           shift_sigma_stat_um=fc.shift_sigma_stat_um,
                           n_used=fc.n_used)  # fmt: skip
                if method != "forward":
                    gc = fc.ground_calibration or {}
                    rec.update(solutions=gc.get("solutions"),
                               sensitivity=gc.get("sensitivity"),
                               interp_sigma_um=gc.get("interpolation_um"),
                               check_outside_model=bool(gc.get("outside_model")))  # fmt: skip
                out.append(rec)
    return out


def summarise(records: list[dict]) -> list[dict]:
    """Rows per (family, method, N)."""
    rows = []
    keys = sorted({(r["family"], r["method"], r["n_stars"]) for r in records},
                  key=lambda k: (k[0], METHODS.index(k[1]), k[2]))  # fmt: skip
    for fam, method, n in keys:
        rs = [r for r in records if (r["family"], r["method"], r["n_stars"]) == (fam, method, n)]
        ok = [r for r in rs if "error_degC" in r]
        err = np.array([r["error_degC"] for r in ok])
        sig = np.array([r["sigma_degC"] for r in ok])
        rows.append(
            dict(
                family=fam,
                method=method,
                n_stars=n,
                estimates=len(ok),
                cameras=len({r["camera_seed"] for r in ok}),
                failures=len(rs) - len(ok),
                rms_error_degC=_rms(err),
                rms_ci68_degC=_camera_range(ok),
                bias_degC=float(err.mean()) if err.size else None,
                frac_within_sigma=float(np.mean(np.abs(err) <= sig)) if err.size else None,
                median_sigma_degC=float(np.median(sig)) if sig.size else None,
                rms_shift_error_um=_rms([r["shift_error_um"] for r in ok]),
                rms_stat_sigma_um=_rms([r["shift_sigma_stat_um"] for r in ok]),
            )
        )
    return rows


def systematic_from(records: list[dict], n_stars: int = 100) -> dict:
    """The corrected check's ground-to-orbit offset and systematic sigma (um) from
    calibration records: the offset in use plus the mean residual; the residuals' RMS beyond
    the statistical sigma, with the mean (the sigma of the offset in use) and about it (the
    sigma were the mean residual added to the offset).  Over the cameras whose ground fit is
    flagged outside the model (all cameras where fewer than :data:`MIN_FLAGGED_CAMERAS` are),
    the outside-model term: their residuals' RMS beyond the statistical sigma and
    :data:`~plato_cnn.ground_calibration.GROUND_SYSTEMATIC_UM`
    (:data:`~plato_cnn.ground_calibration.GROUND_OUTSIDE_MODEL_UM`)."""
    from plato_cnn.ground_calibration import GROUND_SYSTEMATIC_UM, GROUND_TO_ORBIT_UM
    from plato_cnn.offset_correction import sensitivity_scale

    ok = [
        r
        for r in records
        if r["method"] == "ground_focus" and r["n_stars"] == n_stars and "error_degC" in r
    ]
    # the terms live before the sensitivity (errors of the corrected mean F): each set's
    # residual and statistical sigma times the scale its check divided them by
    scale = np.array([sensitivity_scale(r.get("sensitivity", 1.0)) for r in ok])
    res = np.array([r["shift_error_um"] for r in ok]) * scale
    stat2 = float(np.mean((np.array([r["shift_sigma_stat_um"] for r in ok]) * scale) ** 2))
    # the table's interpolation error is a sigma of its own (on F): the systematic is beyond it
    interp = np.array([r.get("interp_sigma_um") or 0.0 for r in ok])
    stat2 = stat2 + float(np.mean(interp**2))
    sys_um = float(np.sqrt(max(0.0, np.mean(res**2) - stat2)))
    sys_about = float(np.sqrt(max(0.0, np.mean((res - res.mean()) ** 2) - stat2)))
    k_all = np.array([r.get("sensitivity", 1.0) for r in ok])
    flagged = [i for i, r in enumerate(ok) if r.get("check_outside_model",
                                                     r.get("ground_outside_model"))]  # fmt: skip
    n_flagged = len({ok[i]["camera_seed"] for i in flagged})
    outside = None
    if flagged:
        # the flagged cameras' sets, or all where too few cameras are flagged to measure it
        use = flagged if n_flagged >= MIN_FLAGGED_CAMERAS else list(range(len(ok)))
        res_f = res[use]
        stat_f = np.hypot(
            np.array([ok[i]["shift_sigma_stat_um"] for i in use]) * scale[use], interp[use]
        )
        beyond = np.mean(res_f**2) - np.mean(stat_f**2) - (GROUND_SYSTEMATIC_UM or 0.0) ** 2
        outside = dict(ground_outside_model_um=float(np.sqrt(max(0.0, beyond))),
                       n_sets=len(use), cameras=len({ok[i]["camera_seed"] for i in use}),
                       flagged_cameras=n_flagged, residual_rms_um=_rms(res_f),
                       residual_mean_um=float(res_f.mean()), stat_sigma_rms_um=_rms(stat_f),
                       systematic_in_use_um=float(GROUND_SYSTEMATIC_UM or 0.0))  # fmt: skip
    return dict(ground_to_orbit_um=float(GROUND_TO_ORBIT_UM + res.mean()),
                offset_in_use_um=float(GROUND_TO_ORBIT_UM), residual_mean_um=float(res.mean()),
                ground_systematic_um=sys_um, ground_systematic_about_mean_um=sys_about,
                n_sets=len(ok), n_stars=n_stars, cameras=len({r["camera_seed"] for r in ok}),
                residual_rms_um=_rms(res), stat_sigma_rms_um=float(np.sqrt(stat2)),
                interp_sigma_rms_um=float(np.sqrt(np.mean(interp**2))),
                sensitivity_min=float(k_all.min()), sensitivity_median=float(np.median(k_all)),
                sensitivity_outside=float(SENSITIVITY_OUTSIDE_FRACTION * k_all.min()),
                outside_model=outside)  # fmt: skip


def forward_systematic_from(records: list[dict], n_stars: int = 100) -> dict | None:
    """The forward check's systematic terms (um) from calibration records of sets of
    ``n_stars``, by the rules of the forward fit's own terms (:data:`plato_cnn.forward.
    SYSTEMATIC_SIGMA_DEGC`, :data:`~plato_cnn.forward.MISFIT_SIGMA_DEGC`): the 68.27th
    percentile over the sets of ``sqrt(max(0, e^2 - sigma_stat^2))`` (a constant term) and of
    that over ``sqrt(chi2_red - 1)`` (the misfit coefficient,
    :data:`plato_cnn.focuscheck_forward.FORWARD_MISFIT_UM`), ``e`` the common shift's error;
    with the coverage each gives, over all sets and per family."""
    ok = [
        r
        for r in records
        if r["method"] == "forward" and r["n_stars"] == n_stars and "error_degC" in r
    ]
    if not ok:
        return None
    res = np.array([r["shift_error_um"] for r in ok])
    stat = np.array([r["shift_sigma_stat_um"] for r in ok])
    misfit = np.sqrt(np.maximum(np.array([r["chi2_reduced"] for r in ok]) - 1.0, 1e-12))
    excess = np.sqrt(np.maximum(0.0, res**2 - stat**2))
    sys_um = float(np.percentile(excess, 68.27))
    coef = float(np.percentile(excess / misfit, 68.27))
    fams = sorted({r["family"] for r in ok})
    fam = np.array([r["family"] for r in ok])

    def covered(sigma: np.ndarray) -> dict:
        inside = np.abs(res) <= sigma
        return {"all": float(inside.mean()), **{f: float(inside[fam == f].mean()) for f in fams}}

    return dict(
        forward_systematic_um=sys_um,
        forward_misfit_um=coef,
        n_sets=len(ok),
        n_stars=n_stars,
        cameras=len({(r["family"], r["camera_seed"]) for r in ok}),
        families=fams,
        residual_rms_um=_rms(res),
        residual_mean_um=float(res.mean()),
        stat_sigma_rms_um=_rms(stat),
        coverage_stat_only=float(np.mean(np.abs(res) <= stat)),
        coverage_with_term=float(np.mean(np.abs(res) <= np.hypot(stat, sys_um))),
        coverage_constant=covered(np.hypot(stat, sys_um)),
        coverage_misfit=covered(np.hypot(stat, coef * misfit)),
    )


def _families(text: str) -> list[str]:
    fams = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fams if f not in FAMILIES]
    if not fams or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: families among {', '.join(FAMILIES)}")
    return fams


def markdown(result: dict) -> str:
    cols = [
        ("family", "family", ""),
        ("method", "check", ""),
        ("n_stars", "stars N", "d"),
        ("estimates", "estimates", "d"),
        ("cameras", "cameras", "d"),
        ("rms_error_degC", "RMS error (degC)", ".2f"),
        ("rms_ci68_degC", "68 % range, cameras resampled", ".2f"),
        ("bias_degC", "bias (degC)", "+.2f"),
        ("frac_within_sigma", "|err| <= sigma", percent),
        ("median_sigma_degC", "median sigma (degC)", ".2f"),
        ("rms_shift_error_um", "shift error RMS (um)", ".2f"),
        ("rms_stat_sigma_um", "statistical sigma (um)", ".2f"),
    ]
    lines = [markdown_table(result["rows"], cols)]
    if result.get("calibration"):
        c = result["calibration"]
        lines.append(
            f"\nground-to-orbit offset {c['ground_to_orbit_um']:+.3f} um (in use "
            f"{c['offset_in_use_um']:+.3f}, mean residual {c['residual_mean_um']:+.3f}); "
            f"systematic sigma {c['ground_systematic_um']:.3f} um (about the mean "
            f"{c['ground_systematic_about_mean_um']:.3f}; {c['n_sets']} sets of "
            f"{c['n_stars']} stars, {c['cameras']} cameras; residual {c['residual_rms_um']:.3f} "
            f"um RMS, statistical sigma {c['stat_sigma_rms_um']:.3f} with the table's "
            f"interpolation error {c.get('interp_sigma_rms_um', 0.0):.3f})"
        )
        lines.append(
            f"sensitivity k over the sets: min {c['sensitivity_min']:.3f}, median "
            f"{c['sensitivity_median']:.3f}; {SENSITIVITY_OUTSIDE_FRACTION:g} x min = "
            f"{c['sensitivity_outside']:.3f} (SENSITIVITY_OUTSIDE, from the design family)"
        )
        o = c.get("outside_model")
        lines.append(
            "no camera flagged outside the model"
            if not o
            else f"outside-model term {o['ground_outside_model_um']:.3f} um ({o['n_sets']} sets "
            f"of {c['n_stars']} stars of {o['cameras']} cameras; {o['flagged_cameras']} flagged, "
            f"all cameras taken where fewer than {MIN_FLAGGED_CAMERAS} are; residual "
            f"{o['residual_rms_um']:.3f} um RMS, mean {o['residual_mean_um']:+.3f}, statistical "
            f"sigma {o['stat_sigma_rms_um']:.3f}, systematic in use "
            f"{o['systematic_in_use_um']:.3f})"
        )
    f = result.get("forward_calibration")
    if f:
        cm = ", ".join(f"{k} {100 * v:.0f} %" for k, v in f["coverage_misfit"].items())
        lines.append(
            f"forward check: misfit coefficient {f['forward_misfit_um']:.3f} um (sigma_sys = it x "
            f"sqrt(chi2_red - 1)), covering {cm}"
        )
        lines.append(
            f"forward check: systematic sigma {f['forward_systematic_um']:.3f} um ({f['n_sets']} "
            f"sets of {f['n_stars']} stars, {f['cameras']} cameras of {', '.join(f['families'])}; "
            f"residual {f['residual_rms_um']:.3f} um RMS, mean {f['residual_mean_um']:+.3f}, "
            f"statistical sigma {f['stat_sigma_rms_um']:.3f}; covered "
            f"{100 * f['coverage_stat_only']:.0f} % without the term, "
            f"{100 * f['coverage_with_term']:.0f} % with it)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument(
        "--model",
        default=None,
        help="in-orbit model directory (default: the shipped one; the calibrated terms stay "
        "the shipped model's)",
    )
    ap.add_argument("--cameras", type=int, default=8, help="emulated cameras")
    ap.add_argument("--n-stars", default="10,100,1000", help="star counts N")
    ap.add_argument("--dt-range", type=float, default=3.0, help="true |T_BF - T| up to (degC)")
    ap.add_argument(
        "--launch-shift-degC",
        type=float,
        default=2.0,
        help="T_BF moves between ground and orbit by up to this (degC, uniform)",
    )
    ap.add_argument("--max-subsets", type=int, default=10, help="star sets per N")
    ap.add_argument("--seed", type=int, default=None,
                    help="first camera seed (default 2000, or 1000 with --calibrate)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=2, help="processes (one per camera)")
    ap.add_argument(
        "--family",
        type=_families,
        default=["design"],
        help="the cameras' optical family, or a comma list of them (design, highorder, "
        "highorder-mild, nodal; the high-order ones: never seen by the network; nodal: seen "
        "by no training or calibration, scored only); --cameras of each",
    )
    ap.add_argument("--keep-dir", default="out/inorbit_ground",
                    help="ground campaigns and forward reports kept here")  # fmt: skip
    ap.add_argument(
        "--labels",
        choices=("forward", "oracle"),
        default="forward",
        help="the ground campaign's labels, map and thermal curve: its forward fit, or (a "
        "diagnostic) the camera's own optics",
    )
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="calibration cameras (seeds 1000 and up): print the systematic sigma (design) "
        "or the outside-model term (a family the network never saw)",
    )
    ap.add_argument(
        "--ground-plateaux",
        default="",
        help="the ground campaign's TRP1 plateaux (comma list, degC; default: the reference "
        "design's -90 ... -70): a test design's effect on the corrected check (its campaigns "
        "kept apart, the calibrated terms unchanged)",
    )
    args = parse_with_quick(ap, argv, QUICK)
    try:
        plateaux = [float(t) for t in args.ground_plateaux.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--ground-plateaux {args.ground_plateaux!r}: a comma list of degC")
    if plateaux and len(set(plateaux)) < 2:
        ap.error("--ground-plateaux: at least 2 distinct plateaux (the bias table is read "
                 "between them)")  # fmt: skip
    if args.calibrate and "nodal" in args.family:
        ap.error("--calibrate: the nodal family scores the check, it calibrates nothing")
    if args.model is not None:
        from plato_cnn.nn.card import load_model
        from plato_sim.errors import PlatoFocusError

        try:
            load_model(args.model)
        except PlatoFocusError as exc:
            ap.error(f"--model {args.model}: {exc}")
    seed0 = args.seed if args.seed is not None else (CALIBRATION_SEED if args.calibrate else 2000)
    n_stars = sorted(int(x) for x in args.n_stars.split(","))
    jobs = [
        dict(
            seed=seed0 + k,
            family=fam,
            n_stars=n_stars,
            dt_range=args.dt_range,
            launch_shift=args.launch_shift_degC,
            max_subsets=args.max_subsets,
            keep_dir=args.keep_dir,
            labels=args.labels,
            ground_plateaux=plateaux,
            model=args.model,
        )  # fmt: skip
        for fam in args.family
        for k in range(args.cameras)
    ]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(max(1, args.workers)) as pool:
        records = [r for rs in pool.map(_job, jobs, chunksize=1) for r in rs]
    result = dict(
        machine=machine_info(),
        config=dict(vars(args), seed=seed0),
        seconds_wall=time.perf_counter() - t0,
        rows=summarise(records),
        calibration=systematic_from(records) if args.calibrate else None,
        forward_calibration=forward_systematic_from(records) if args.calibrate else None,
        records=records,
    )
    print(f"{args.cameras} {','.join(args.family)} cameras each; "
          f"{result['seconds_wall']:.0f} s wall")  # fmt: skip
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
