"""Calibration of the forward-model fit's sigma (:func:`plato_cnn.forward.forward_bft`).

The Laplace sigma of the forward fit only sees the photon and read noise through the fitted
model; what the model cannot represent (the emulator's aberrations beyond the fitted field
dependence, the parabola placing the maximum, the truth's own numerical floor) is a
systematic error.  It is measured here on emulated **in-family** calibration cameras (the
calibration seed stream of :func:`plato_cnn.pipelines.calibrate.emulate_calibration_set`,
none of them in a benchmark's camera set; never the out-of-family cameras), for each number
of plateaux (:data:`plato_cnn.pipelines.calibrate.PLATEAU_SUBSETS`), by the method of
:func:`plato_cnn.pipelines.calibrate.calibrate_systematic`: the quadrature term that makes
``|error| <= sigma`` hold for ~68 % of the cameras.  The result is the table to paste into
:data:`plato_cnn.forward.SYSTEMATIC_SIGMA_DEGC`.

Usage::

    python -m plato_cnn.pipelines.calibrate_forward --cameras 12 --workdir out/forward_calibration \
        [--workers 2] [--json out.json] [--family design-random highorder ...] [--kept-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS, emulate_calibration_set
from plato_sim.errors import ParameterError
from plato_sim.workers import map_jobs, pin_one_thread

log = logging.getLogger(__name__)

__all__ = [
    "calibrate_forward_systematic",
    "family_campaigns",
    "forward_camera_errors",
    "kept_camera_errors",
    "misfit_from_errors",
    "systematic_from_errors",
]

#: The calibration campaigns' size (small: 20 fields x 3 dithers x 2 frames x 5 plateaux).
CALIB_CAMPAIGN = dict(seed=91_000, fields=20, dithers=3, frames=2)


def forward_camera_errors(job: tuple) -> dict[str, tuple]:
    """``{"5"|"3"|"2"|"1": (error, sigma without systematic, wall s, reduced chi^2, outside
    the model)}`` of one camera (results kept by an earlier version lack the last two);
    ``job = (folder, true T_BF[, cache])``: the result is kept in ``cache`` (default
    ``folder + ".forward_errors.<MODEL_TAG>.v<FIT_VERSION>.json"``, with the true T_BF it was
    scored against, so that a result of another model or procedure of the fit, or against
    another truth, is never reused; ``""``: not kept).  With the default cache, the fits kept
    by an earlier procedure that the current one reproduces (those that ended within the
    model) are reused and only the others recomputed."""
    pin_one_thread()
    import warnings

    from plato_cnn.forward import FIT_VERSION, MODEL_TAG, forward_bft
    from plato_cnn.reader import read_campaign

    folder, truth = job[:2]
    default = f"{folder}.forward_errors.{MODEL_TAG}.v{FIT_VERSION}.json"
    cache = None if job[2:] == ("",) else Path(job[2] if len(job) > 2 else default)
    if cache is not None and cache.exists():  # kept so that an interrupted run resumes
        kept = json.loads(cache.read_text())
        if kept.get("truth_degC") == truth:
            return {k: tuple(v) for k, v in kept["errors"].items()}
    out = _still_current(folder, truth) if len(job) == 2 else {}
    if out:
        log.info("%s: %d fits kept from an earlier procedure that gives the same", folder, len(out))
    fr = None
    for n, sub in PLATEAU_SUBSETS.items():
        if str(n) in out:
            continue
        fr = read_campaign(folder) if fr is None else fr
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = forward_bft(fr, plateaux=sub, systematic=False)
        out[str(n)] = (r["bft_degC"] - truth, r["sigma_degC"], time.perf_counter() - t,
                       r["chi2"]["reduced"], bool(r["outside_model"]))  # fmt: skip
    out = {str(n): out[str(n)] for n in PLATEAU_SUBSETS}
    if cache is not None:
        cache.write_text(json.dumps({"truth_degC": truth, "errors": out}))
    return out


def kept_camera_errors(folder: str, truth: float) -> dict[str, tuple] | None:
    """The errors of one camera from kept results alone (no fit): the current procedure's
    cache, else the earlier procedures' fits it would reproduce (:func:`_still_current`);
    ``None`` unless all four plateau counts are there with their chi^2 and verdict."""
    from plato_cnn.forward import FIT_VERSION, MODEL_TAG

    cache = Path(f"{folder}.forward_errors.{MODEL_TAG}.v{FIT_VERSION}.json")
    out: dict[str, tuple] = {}
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("truth_degC") == truth:
            out = {k: tuple(v) for k, v in kept["errors"].items()}
    out = out or _still_current(folder, truth)
    if all(len(out.get(str(n), ())) > 4 for n in PLATEAU_SUBSETS):
        return {str(n): out[str(n)] for n in PLATEAU_SUBSETS}
    return None


def _still_current(folder: str, truth: float) -> dict[str, tuple]:
    """The fits kept by earlier procedure versions (default cache names) that the current one
    reproduces bit for bit (:func:`plato_cnn.forward.same_fit_as_current`: they ended within
    the model); results without their chi^2 are never reused."""
    from plato_cnn.forward import MODEL_TAG, earlier_kept, same_fit_as_current

    out: dict[str, tuple] = {}
    for v, kept in earlier_kept(lambda v: f"{folder}.forward_errors.{MODEL_TAG}.v{v}.json"):
        if kept.get("truth_degC") != truth:
            continue
        for n, r in kept["errors"].items():
            if n not in out and len(r) > 4 and same_fit_as_current(v, r[3], int(n)):
                out[n] = tuple(r)
    return out


def systematic_from_errors(
    per_cam: list[dict], keys: list[str] | None = None, outside: bool | None = None
) -> dict[str, dict]:
    """Per plateau count: the quadrature systematic term giving 68 % coverage, and stats.

    ``per_cam``: per camera, ``{plateau count: (error, sigma, wall s[, chi2_red, outside])}``
    (degC, degC, s); ``keys``: the plateau counts (default every one of ``PLATEAU_SUBSETS``);
    ``outside``: only the fits flagged (True) or not flagged (False) outside the model (None:
    all; a count with no such fit is left out).
    ``sys`` is the smallest value with ``|e_i| <= hypot(sigma_i, sys)`` for 68.27 % of the
    cameras: the 68.27th percentile of ``sqrt(max(0, e_i^2 - sigma_i^2))``.
    """
    out = {}
    for n in keys if keys is not None else [str(k) for k in PLATEAU_SUBSETS]:
        res = [c[n] for c in per_cam if outside is None or (len(c[n]) > 4 and c[n][4] == outside)]
        if not res:
            continue
        e = np.asarray([r[0] for r in res])
        s = np.asarray([r[1] for r in res])
        need = np.sqrt(np.maximum(0.0, e**2 - s**2))
        sys_sigma = float(np.percentile(need, 68.27))
        out[n] = {
            "n_fits": len(res),
            "systematic_sigma_degC": sys_sigma,
            "rms_error_degC": float(np.sqrt(np.mean(e**2))),
            "bias_degC": float(np.mean(e)),
            "median_stat_sigma_degC": float(np.median(s)),
            "coverage_stat_only": float(np.mean(np.abs(e) <= s)),
            "coverage": float(np.mean(np.abs(e) <= np.hypot(s, sys_sigma) * (1 + 1e-9))),
            "mean_wall_s": float(np.mean([r[2] for r in res])),
            "frac_outside_model": _frac_flagged(res),
        }
    return out


def misfit_from_errors(per_cam: list[dict], keys: list[str] | None = None) -> dict[str, dict]:
    """Per plateau count, over the fits flagged outside the model: the coefficient ``A`` of
    the misfit term ``A * sqrt(chi2_red - 1)`` giving 68 % coverage (the 68.27th percentile of
    ``sqrt(max(0, e_i^2 - sigma_i^2)) / sqrt(chi2_i - 1)``), and stats; a count with no
    flagged fit is left out.  ``per_cam`` as for :func:`systematic_from_errors` (5-tuples)."""
    out = {}
    for n in keys if keys is not None else [str(k) for k in PLATEAU_SUBSETS]:
        res = [c[n] for c in per_cam if len(c[n]) > 4 and c[n][4]]
        if not res:
            continue
        e, s, _, chi2, _ = (np.asarray(v, float) for v in zip(*res, strict=True))
        x = np.sqrt(np.maximum(chi2 - 1.0, 1e-12))
        a = float(np.percentile(np.sqrt(np.maximum(0.0, e**2 - s**2)) / x, 68.27))
        out[n] = {
            "n_fits": len(res),
            "misfit_sigma_degC": a,
            "rms_error_degC": float(np.sqrt(np.mean(e**2))),
            "chi2_reduced_range": [float(chi2.min()), float(chi2.max())],
            "coverage_stat_only": float(np.mean(np.abs(e) <= s)),
            "coverage": float(np.mean(np.abs(e) <= np.hypot(s, a * x) * (1 + 1e-9))),
        }
    return out


#: Seed of the high-order calibration set (its own stream: ``HIGHORDER_SEED_TAG``).
HIGHORDER_CALIB_SEED = 0
#: Seed of the design-family calibration set with random test designs (stream tag
#: :data:`plato_sim.scenes.calibration_family.DESIGN_SEED_TAG`).
DESIGN_RANDOM_SEED = 0
#: Calibration families: ``design`` (the model the fit's basis was made for, the small
#: 20 x 3 x 2 campaigns of CALIB_CAMPAIGN), ``design-random`` (design cameras with random test
#: designs like real ones: 10-40 fields, 5-25 dithers, 1-4 frames, so that the fit's own
#: sigma is small and a floor shows), ``highorder`` (terms Z23-Z37 and field dependences
#: outside the basis) and ``highorder-mild`` (the same at strength 0.05-0.3: cameras slightly
#: outside the basis, mostly unflagged by chi^2, for the term of the unflagged fits).
FAMILIES = ("design", "design-random", "highorder", "highorder-mild")


def family_campaigns(family: str, workdir: Path, n_cameras: int, workers: int) -> list:
    """``(folder, true T_BF)`` of the calibration cameras of ``family``."""
    if family == "design":
        campaigns = emulate_calibration_set(workdir, n_cameras, workers=workers, **CALIB_CAMPAIGN)
        return [(str(f), float(t)) for f, t in campaigns]
    sets = {"highorder": ("highorder", "highorder", HIGHORDER_CALIB_SEED),
            "highorder-mild": ("highorder-mild", "highorder_mild", HIGHORDER_CALIB_SEED),
            "design-random": ("design", "design_random", DESIGN_RANDOM_SEED)}  # fmt: skip
    if family in sets:
        from plato_sim.scenes.calibration_family import emulate_calibration_family

        kind, sub, seed = sets[family]
        done = emulate_calibration_family(
            workdir / sub, n_cameras, seed=seed, workers=workers, family=kind,
            plateaux_degC=PLATEAU_SUBSETS[5],
        )  # fmt: skip
        return [(str(f), float(t["bft_degC"])) for f, t in done]
    raise ParameterError(f"family={family!r}: allowed {', '.join(FAMILIES)}")


def _frac_flagged(results: list) -> float | None:
    """Fraction of fits flagged ``outside_model`` (None where a kept result lacks the flag)."""
    flags = [r[4] for r in results if len(r) > 4]
    return float(np.mean(flags)) if flags and len(flags) == len(results) else None


def calibrate_forward_systematic(
    workdir: str | Path,
    n_cameras: int = 12,
    workers: int = 2,
    families: tuple[str, ...] = ("design",),
    kept_only: bool = False,
):
    """Emulate (or reuse) ``n_cameras`` calibration cameras of each of ``families`` under
    ``workdir``, fit each with 5, 3, 2 and 1 plateaux and return the systematic table of all
    of them pooled, the table of each family, and the per-camera errors.  ``kept_only``: no
    fit, the tables of the cameras whose current results are all kept
    (:func:`kept_camera_errors`; a stopped run's tables), the others listed as skipped."""
    work = Path(workdir)
    jobs, fam_of, skipped = [], [], []
    for family in families:
        cams = family_campaigns(family, work, n_cameras, workers)
        jobs += cams
        fam_of += [family] * len(cams)
    if kept_only:
        kept = [kept_camera_errors(f, t) for f, t in jobs]
        kept_jobs = [(j, g, k) for j, g, k in zip(jobs, fam_of, kept, strict=True) if k]
        skipped = [f for (f, _), k in zip(jobs, kept, strict=True) if k is None]
        jobs, fam_of, per_cam = ([x[i] for x in kept_jobs] for i in range(3))
        log.info("kept: %d cameras, %d skipped (fits missing)", len(jobs), len(skipped))
        if not jobs:
            raise ParameterError(f"no camera under {work} has all its fits kept")
    else:
        per_cam = map_jobs(
            forward_camera_errors, jobs, workers, desc="forward calibration: cameras"
        )
    table = systematic_from_errors(per_cam)
    by_flag = {name: systematic_from_errors(per_cam, outside=flag)
               for name, flag in (("within", False), ("outside", True))}  # fmt: skip
    misfit = misfit_from_errors(per_cam)
    by_family = {
        f: systematic_from_errors([c for c, g in zip(per_cam, fam_of, strict=True) if g == f])
        for f in families
    }
    return {
        "n_cameras": len(jobs),
        "kept_only": kept_only,
        "cameras_skipped": skipped,
        "families": list(families),
        "campaign": {
            "design": CALIB_CAMPAIGN,
            "design-random": "random designs, 5 plateaux",
            "highorder": "random designs, 5 plateaux",
            "highorder-mild": "random designs, 5 plateaux, strength 0.05-0.3",
        },  # fmt: skip
        "date": time.strftime("%Y-%m-%d"),
        "systematic_sigma_degC": {
            k: round(v["systematic_sigma_degC"], 4) for k, v in table.items()
        },
        "by_plateaux": table,
        "by_flag": by_flag,
        "systematic_sigma_within_degC": {
            k: round(v["systematic_sigma_degC"], 4) for k, v in by_flag["within"].items()
        },
        "misfit": misfit,
        "misfit_sigma_degC": {k: round(v["misfit_sigma_degC"], 4) for k, v in misfit.items()},
        "by_family": by_family,
        "per_camera": [
            {"family": g, "folder": f, "truth_degC": t, "results": c}
            for (f, t), c, g in zip(jobs, per_cam, fam_of, strict=True)
        ],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=12, help="cameras of each family")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the full result here")
    ap.add_argument(
        "--family", nargs="+", default=["design"], choices=FAMILIES,
        help="calibration families, pooled (--cameras of each)",
    )  # fmt: skip
    ap.add_argument(
        "--kept-only", action="store_true",
        help="fit nothing: tables from the cameras whose results are all kept (a stopped "
        "run; campaigns not emulated yet are still emulated)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    res = calibrate_forward_systematic(
        a.workdir, a.cameras, a.workers, tuple(a.family), kept_only=a.kept_only
    )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "per_camera"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
