"""Re-check of a known camera: the CNN fine-tuned on a camera's sweep, used on its next campaign.

The test house's fast path (docs/cnn.md, "Re-check of a known camera"): a camera's first
campaign (a full sweep, the standard 5 plateaux) is fitted by the forward method and the shipped
model is fine-tuned on that campaign alone, with the fit's physics labels
(:func:`plato_cnn.pipelines.finetune.finetune`); the camera's later campaign is then measured by
the CNN from 5, 3, 2 or 1 plateaux in seconds.  The later campaign
(:func:`plato_sim.scenes.out_of_family.emulate_recheck`) has the same optics and test design,
new noise, dithers and frames, and a best focus moved by a shift uniform in ``+-max-shift``
degC, so that a model that only remembered the first campaign's answer fails.

Cameras: the nodal family (:mod:`plato_sim.optics.family_nodal`), which neither pretraining,
the plateau head nor any calibration saw, evaluation-set seed ``--seed`` (default 1, the set
``benchmarks/finetune_transfer.py`` scores: the same first campaigns and forward fits), the
standard plateaux; or, with ``--family``, a set of :mod:`plato_sim.scenes.calibration_family`
(``highorder-mild`` and ``highorder``: the cameras the re-check's systematic sigma is
calibrated on, ``RECHECK_SYSTEMATIC`` of :mod:`plato_cnn.offset_correction`; ``design``: the
design family with random test designs, in family for the CNN).  The result's
``recheck_systematic`` gives, per re-check row and plateau count, the term that would give 68 %
coverage on the cameras scored (a constant, or a fraction of the T_BF change): on a
calibration family, what the table holds.  Re-check rows are scored under the current
calibration from their kept statistical terms.  The first campaign's true T_BF is never
used: its labels come from the forward fit of its images, and the s prior of the 1-plateau
fits from each model's own fit of the first campaign (``cnn_bft(..., s_prior=...)``).

Rows (per plateau count of the later campaign): ``shipped`` (the shipped model as is);
``shipped, s prior`` (with the s prior of its own fit of the first campaign); ``shipped,
corrected`` (with the camera's offset correction, :mod:`plato_cnn.offset_correction`: the
network's bias per field and plateau, measured on the first campaign against the physics
labels, and the s prior of its own corrected fit of the first campaign); ``fine-tuned, s
prior`` and ``fine-tuned, corrected`` (the same with the camera's own fine-tuned model);
``shipped, re-check`` and ``fine-tuned, re-check``: the T_BF from the focus change since the
first campaign that the corrected network sees, on the first campaign's forward fit
(:meth:`plato_cnn.offset_correction.OffsetCorrection.recheck`, the report's ``recheck``; the
same call as the corrected row), and ``... re-check at TRP1`` the same with each frame's bias
taken at its TRP1 rather than at the earlier campaign's temperature of the same focus
(``index="trp1"``, the first version of the method).  RMS error, bias, median sigma,
coverage.  With ``--response`` (a diagnostic), each network's response to the focus change
between the campaigns: the slope, over the cameras, of its mean offset change (per field and
plateau) on the true thermal focus change (1: it shows the whole change; a correction table
measured at the first campaign's foci cannot show a smaller one).  Per camera, the result is
kept as ``<out>/[<family>_]cam<i>_<key>_rows4[_noft].json``,
the forward rows as
``<out>/cam<i>_<key>.forward.json`` and the fine-tuned model in ``<out>/cam<i>_<key>/``: a
rerun resumes.

Usage::

    python -m benchmarks.recheck [--quick] [--cameras 12] [--workers 2] [--json OUT]
    python -m benchmarks.recheck --family highorder-mild --seed 0 --skip-finetune ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/recheck.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    parse_with_quick,
    report,
    row_stats,
    script_argv,
)
from benchmarks.finetune_transfer import build_rows, markdown  # noqa: E402
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS as SUBSETS  # noqa: E402
from plato_cnn.pipelines.calibrate import TRUTH_RANGE_DEGC  # noqa: E402
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

QUICK = dict(cameras=2, epochs=4)
PLATEAUX = (5, 3, 2, 1)
MODELS = (
    "shipped",
    "shipped, s prior",
    "shipped, corrected",
    "shipped, re-check",
    "shipped, re-check at TRP1",
    "fine-tuned, s prior",
    "fine-tuned, corrected",
    "fine-tuned, re-check",
    "fine-tuned, re-check at TRP1",
)
#: Families the bench takes: the evaluation family (nodal) and the calibration sets
#: (plato_sim.scenes.calibration_family), which calibrate the re-check's systematic sigma.
FAMILIES = ("nodal", "design", "highorder-mild", "highorder")


def _campaigns(args: argparse.Namespace) -> tuple[list, list]:
    """``(folder, truth)`` of each camera's first and later campaign."""
    from plato_sim.scenes.calibration_family import (
        emulate_calibration_family,
        emulate_calibration_recheck,
    )
    from plato_sim.scenes.out_of_family import emulate_out_of_family, emulate_recheck

    kw = dict(seed=args.seed, bft_range_degC=TRUTH_RANGE_DEGC, workers=args.workers,
              plateaux_degC=SUBSETS[5])  # fmt: skip
    if args.family != "nodal":
        kw["family"] = args.family
        first = emulate_calibration_family(args.cache, args.cameras, **kw)
        later = emulate_calibration_recheck(args.cache, args.cameras, k=1,
                                            max_shift_degC=args.max_shift, **kw)  # fmt: skip
        return first, later
    first = emulate_out_of_family(args.cache, args.cameras, **kw)
    later = emulate_recheck(args.cache, args.cameras, k=1, max_shift_degC=args.max_shift, **kw)
    return first, later


def _forward(job: dict) -> dict:
    """The forward fit (``field_focus``) of the camera's first campaign, kept next to it."""
    from benchmarks.finetune_transfer import _forward_report

    return _forward_report(dict(i=job["i"], dir=job["first"]))


def _fine_tuned(job: dict, frames, rep: dict) -> tuple[str, float]:
    """The camera's fine-tuned model (made unless kept) and the wall time spent on it (s)."""
    from plato_cnn.pipelines.finetune import FinetuneConfig, finetune

    out = Path(job["model_out"])
    if (out / "finetune.json").is_file():  # written last
        return str(out), 0.0
    t0 = time.perf_counter()
    cfg = FinetuneConfig(epochs=job["epochs"], patience=job["patience"], seed=job["i"])
    finetune([frames], out, job["base"], cfg, forward_reports=[rep], progress=False)
    return str(out), time.perf_counter() - t0


def _correction(model: str, frames, rep: dict, seed: int):
    """The model's offset correction (with its s prior) measured on the first campaign, and
    the wall time (s)."""
    from plato_cnn.offset_correction import measure_offset_correction

    t0 = time.perf_counter()
    corr = measure_offset_correction(frames, rep, model, seed=seed)
    return corr, time.perf_counter() - t0


def _recheck_row(label: str, n_pl: int, r: dict, wall: float) -> dict:
    return dict(model=label, plateaux=n_pl, bft=r["bft_degC"], sigma=r["sigma_degC"],
                delta_um=r["delta_um"], sigma_fields_degC=r["sigma_fields_degC"],
                sigma_first_degC=r["sigma_first_degC"], spread_degC=r["spread_degC"],
                interp_degC=r["interp_degC"], sensitivity=r["sensitivity"],
                outside_model=r["outside_model"], solutions=r["solutions"],
                wall_s=wall)  # fmt: skip


def _index(r: dict) -> str:
    """The index of re-check row ``r`` (:meth:`OffsetCorrection.recheck`)."""
    return "trp1" if "at TRP1" in r["model"] else "focus"


def _scale(r: dict) -> float:
    """The sensitivity scale of re-check row ``r`` (1 for rows kept before it existed)."""
    from plato_cnn.offset_correction import sensitivity_scale

    return sensitivity_scale(r.get("sensitivity", 1.0), _index(r))


# Long because: the rows of one camera, each a cnn_bft call, with its kept-result plumbing.
def _camera(job: dict) -> dict:
    """One camera: fine-tune on its first campaign, score the models on its later one."""
    pin_one_thread()
    from plato_cnn.predict import cnn_bft
    from plato_cnn.reader import read_campaign

    kept = Path(job["result"])
    if kept.is_file():
        return json.loads(kept.read_text())
    fa = read_campaign(job["first"])
    fa = fa.select(fa.usable)
    rep = _forward(job)
    models = [("shipped", job["base"])]
    t_ft = 0.0
    if job["finetune"]:
        tuned, t_ft = _fine_tuned(job, fa, rep)
        models.append(("fine-tuned", tuned))
    corr = {name: _correction(model, fa, rep, job["i"]) for name, model in models}
    fb = read_campaign(job["later"])
    fb = fb.select(fb.usable)
    plan = []
    for name, model in models:
        # s prior: the same estimator's own fit of the first campaign's sweep
        fit, _ = cnn_bft(fa, model, n_boot=100, seed=job["i"])
        plan.append((f"{name}, s prior", model, (fit.s_um_per_degC, fit.s_sigma_um_per_degC),
                     None))  # fmt: skip
        c = corr[name][0]
        plan.append((f"{name}, corrected", model, c.s_prior_um_per_degC, c))
    plan.insert(0, ("shipped", job["base"], None, None))
    results = []
    t0 = time.perf_counter()
    for label, model, prior, c in plan:
        for n_pl in PLATEAUX:
            sub = fb.select(fb.plateau_mask(SUBSETS[n_pl]))
            labels = [label]
            if c:
                labels += [label.replace("corrected", s) for s in ("re-check", "re-check at TRP1")]
            t1 = time.perf_counter()
            try:
                f, info = cnn_bft(sub, model, n_boot=100, seed=job["i"], s_prior=prior,
                                  offset_correction=c)  # fmt: skip
                wall = time.perf_counter() - t1
                results.append(dict(model=label, plateaux=n_pl, bft=f.bft_degC,
                                    sigma=f.sigma_degC, s_prior=prior, wall_s=wall))  # fmt: skip
                if c:  # the same call's re-check: T_BF from the focus change
                    results.append(_recheck_row(labels[1], n_pl, info["recheck"], wall))
                    # the same network offsets (of every frame: fb holds unflagged ones only),
                    # corrected at their TRP1
                    r = c.recheck(sub, info["frame_mu_um"], index="trp1")
                    results.append(_recheck_row(labels[2], n_pl, r, wall))
            except Exception as exc:  # counted as a failure of that row (and its re-check)
                results += [dict(model=lb, plateaux=n_pl, error=f"{type(exc).__name__}: {exc}")
                            for lb in labels]  # fmt: skip
    out = dict(i=job["i"], camera=job["camera"], truth=job["truth"],
               first_truth_degC=job["first_truth"], first_forward_degC=rep["bft_degC"],
               finetune_s=t_ft, correction_s={k: v[1] for k, v in corr.items()},
               correction_spread_um={k: v[0].spread_um for k, v in corr.items()},
               correction_noise_um={k: v[0].noise_um for k, v in corr.items()},
               score_s=(time.perf_counter() - t0) / len(results), results=results)  # fmt: skip
    from plato_sim.io.atomic import atomic_write_text

    atomic_write_text(kept, json.dumps(out))
    return out


def _forward_later(job: dict) -> dict:
    """The forward method on the later campaign's first ``n`` plateau subsets (``job["n"]``),
    with the s prior of its fit of the first campaign; kept as ``<model_out>.forward.json``."""
    pin_one_thread()
    from plato_cnn.forward import forward_bft
    from plato_cnn.reader import read_campaign
    from plato_sim.io.atomic import atomic_write_text

    kept_path = Path(job["model_out"] + ".forward.json")
    kept = json.loads(kept_path.read_text()) if kept_path.is_file() else {}
    todo = [n for n in job["n"] if str(n) not in kept]
    if todo:
        rep = _forward(job)
        prior = (rep["s_um_per_degC"], rep["s_sigma_um_per_degC"])
        fb = read_campaign(job["later"])
        fb = fb.select(fb.usable)
        for n_pl in todo:
            t0 = time.perf_counter()
            try:
                r = forward_bft(fb.select(fb.plateau_mask(SUBSETS[n_pl])), s_prior=prior,
                                seed=job["i"])  # fmt: skip
                kept[str(n_pl)] = dict(model="forward, s prior", plateaux=n_pl,
                                       bft=r["bft_degC"], sigma=r["sigma_degC"],
                                       wall_s=time.perf_counter() - t0)  # fmt: skip
            except Exception as exc:  # counted as a failure of that row
                kept[str(n_pl)] = dict(model="forward, s prior", plateaux=n_pl,
                                       error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            atomic_write_text(kept_path, json.dumps(kept))
    return kept


def _forward_rows(evals: list[dict], fwd: list[dict], counts: list[int]) -> list[dict]:
    truth = np.asarray([e["truth"] for e in evals])
    rows = []
    for n_pl in counts:
        res = [f[str(n_pl)] for f in fwd]
        wall = [r["wall_s"] for r in res if "wall_s" in r]
        rows.append(dict(model="forward, s prior", plateaux=n_pl, **row_stats(res, truth),
                         wall_s_per_fit=float(np.mean(wall)) if wall else None))  # fmt: skip
    return rows


def _rescored(e: dict, first: dict) -> dict:
    """Camera result ``e`` with its re-check rows' sigma under the current calibration
    (:func:`plato_cnn.offset_correction.recheck_sigma_degC` from the kept statistical terms):
    kept results need no recomputation when the calibration changes.  Rows kept before the
    correction's spread entered the sigma get ``spread_degC`` from the camera's correction
    (``correction_spread_um``) and the slope of ``first``, the first campaign's forward report,
    at the row's T_BF (as :meth:`~plato_cnn.offset_correction.OffsetCorrection.recheck`)."""
    from plato_cnn.forward import thermal_slope_um_per_degC
    from plato_cnn.offset_correction import recheck_sigma_degC

    out = dict(e, results=[dict(r) for r in e["results"]])
    for r in out["results"]:
        if "re-check" in r["model"] and "error" not in r:
            change = r["bft"] - e["first_forward_degC"]
            if "spread_degC" not in r:
                spread_um = e["correction_spread_um"][r["model"].split(",")[0]]
                slope = thermal_slope_um_per_degC(first["field_focus"], r["bft"])
                r["spread_degC"] = spread_um / abs(slope)
            r["sigma"] = recheck_sigma_degC(r["sigma_fields_degC"], r["sigma_first_degC"],
                                            r["plateaux"], change, r["spread_degC"],
                                            r.get("interp_degC", 0.0), _scale(r),
                                            _index(r))  # fmt: skip
            if "sensitivity" in r:  # the flag under the current threshold
                r["outside_model"] = _low(r)
    return out


def _with_flags(rows: list[dict], evals: list[dict]) -> list[dict]:
    """``rows`` with, on each re-check row, the fraction of its cameras flagged outside what
    the model knows (``frac_flagged``) and their median sensitivity."""
    for row in rows:
        if "re-check" not in row["model"]:
            continue
        rs = [r for e in evals for r in e["results"]
              if r["model"] == row["model"] and r["plateaux"] == row["plateaux"]
              and "error" not in r]  # fmt: skip
        row["frac_flagged"] = float(np.mean([bool(r.get("outside_model")) for r in rs]))
        row["median_sensitivity"] = float(np.median([r.get("sensitivity", 1.0) for r in rs]))
    return rows


def _low(r: dict) -> bool:
    """Whether re-check row ``r``'s sensitivity lies below the current threshold."""
    from plato_cnn import offset_correction as oc

    return bool(
        _index(r) == "focus"
        and oc.RECHECK_SENSITIVITY_OUTSIDE is not None
        and r.get("sensitivity", 1.0) < oc.RECHECK_SENSITIVITY_OUTSIDE
    )


def _systematic(evals: list[dict], models: list[str]) -> dict:
    """Per re-check row and plateau count, what would give 68 % coverage on these cameras
    over the statistical sigma, for each form of
    ``plato_cnn.offset_correction.RECHECK_SYSTEMATIC``: a constant (``constant_degC``), a
    fraction of the T_BF change (``relative``, the 68.27th percentile of the needed term over
    ``|change|``) or of the correction's RMS (``spread``, the same over ``spread_degC``); the
    coverage of the statistical sigma alone; and the network's sensitivity ``k`` (least,
    median; ``sensitivity_outside`` = 0.9 times the least, the threshold's rule on the
    in-family set).  The systematic term is one of the corrected mean, divided by the
    sensitivity as the fields' and the interpolation terms are
    (:func:`plato_cnn.offset_correction.recheck_sigma_degC`), so each camera's error is taken
    as ``k_s sqrt(err^2 - first^2)`` against ``hypot(fields, interp)``: the same coverage
    condition.  On a calibration family, what the table holds."""
    from plato_cnn.pipelines.calibrate_forward import systematic_from_errors

    out = {}
    for name in (m for m in models if "re-check" in m):
        per_cam, ratio = [], {str(n): [] for n in PLATEAUX}
        per_spread = {str(n): [] for n in PLATEAUX}
        sens = {str(n): [] for n in PLATEAUX}
        for e in evals:
            rs = {str(r["plateaux"]): r for r in e["results"] if r["model"] == name}
            if any("error" in r for r in rs.values()):
                continue
            cam = {}
            for n, r in rs.items():
                err = r["bft"] - e["truth"]
                scale = _scale(r)
                err_f = scale * np.sqrt(max(0.0, err**2 - r["sigma_first_degC"] ** 2))
                stat = float(np.hypot(r["sigma_fields_degC"], r.get("interp_degC", 0.0)))
                cam[n] = (err_f, stat, r["wall_s"])
                change = abs(r["bft"] - e["first_forward_degC"])
                need = np.sqrt(max(0.0, err_f**2 - stat**2))
                ratio[n].append(need / max(change, 1e-3))
                per_spread[n].append(need / max(r["spread_degC"], 1e-3))
                sens[n].append(r.get("sensitivity", 1.0))
            per_cam.append(cam)
        if not per_cam:
            continue
        table = systematic_from_errors(per_cam, [str(n) for n in PLATEAUX])
        out[name] = {
            n: dict(constant_degC=v["systematic_sigma_degC"],
                    relative=float(np.percentile(ratio[n], 68.27)),
                    spread=float(np.percentile(per_spread[n], 68.27)),
                    coverage_stat_only=v["coverage_stat_only"], n_cameras=v["n_fits"],
                    sensitivity_min=float(np.min(sens[n])),
                    sensitivity_median=float(np.median(sens[n])))
            for n, v in table.items()
        }  # fmt: skip
        every = [k for n in sens for k in sens[n]]
        out[name]["sensitivity_outside"] = 0.9 * float(np.min(every))
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=12, help="cameras re-checked")
    ap.add_argument(
        "--family",
        choices=FAMILIES,
        default="nodal",
        help="the evaluation family (nodal, default) or a calibration set of "
        "plato_sim.scenes.calibration_family (design: the design family with random test "
        "designs, in family for the CNN)",
    )
    ap.add_argument("--seed", type=int, default=1, help="their set's seed")
    ap.add_argument(
        "--skip-finetune",
        action="store_true",
        help="only the shipped model's rows (no fine-tuning)",
    )
    ap.add_argument(
        "--max-shift", type=float, default=1.0, help="largest T_BF change between campaigns (degC)"
    )
    ap.add_argument("--epochs", type=int, default=16, help="most fine-tuning epochs")
    ap.add_argument(
        "--patience", type=int, default=2, help="early stopping on the label fit (0: off)"
    )
    ap.add_argument("--model", default=None, help="base model (default: the shipped one)")
    ap.add_argument("--out", default="out/recheck", help="per-camera models and results")
    ap.add_argument("--cache", default="out/out_of_family_cache", help="emulated campaigns")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--forward-plateaux",
        default="",
        help="also the forward method on the later campaign with these plateau counts (comma "
        "list of 5, 3, 2, 1; s prior from its fit of the first campaign; ~1 min a fit)",
    )
    ap.add_argument(
        "--response",
        action="store_true",
        help="also each network's response to the focus change between the campaigns (a "
        "diagnostic: the slope of its mean offset change on the true one, over the cameras)",
    )
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument(
        "--calibrate-from",
        nargs="+",
        default=None,
        metavar="JSON",
        help="compute nothing: the systematic terms giving 68 %% coverage over the cameras of "
        "these results together (the calibration families' runs), printed as JSON",
    )
    return parse_with_quick(ap, argv, QUICK)


#: The forms of the systematic term: what multiplies each form's coefficient (degC or a
#: fraction) for re-check row ``r`` of camera result ``e``.
FORMS = {
    "constant_degC": lambda e, r: 1.0,
    "relative": lambda e, r: abs(r["bft"] - e["first_forward_degC"]),
    "spread": lambda e, r: r["spread_degC"],
}


def _coverage(evals: list[dict], name: str, n_pl: int, form: str, coef: float) -> float:
    """Coverage over ``evals`` of re-check row ``name`` with ``n_pl`` plateaux when its
    systematic term is ``coef`` of ``form`` (:data:`FORMS`), the sigma of
    :func:`plato_cnn.offset_correction.recheck_sigma_degC`."""
    from plato_cnn.offset_correction import recheck_sigma_degC

    hit = []
    for e in evals:
        r = next(r for r in e["results"] if r["model"] == name and r["plateaux"] == n_pl)
        if "error" in r:
            continue
        sigma = recheck_sigma_degC(r["sigma_fields_degC"], r["sigma_first_degC"], n_pl, 0.0,
                                   interp_degC=r.get("interp_degC", 0.0), scale=_scale(r),
                                   systematic_degC=coef * FORMS[form](e, r))  # fmt: skip
        hit.append(abs(r["bft"] - e["truth"]) <= sigma)
    return float(np.mean(hit))


def _cross_coverage(a: list[dict], b: list[dict], models: list[str]) -> dict:
    """Per re-check row, plateau count and form: the coverage of each set's cameras when the
    term is calibrated on the other (``a_to_b``: calibrated on ``a``, scored on ``b``), the
    test by which a form is chosen (docs/cnn.md, "Re-check of a known camera")."""
    cal_a, cal_b = _systematic(a, models), _systematic(b, models)
    out = {}
    for name in cal_a:
        out[name] = {
            str(n): {form: dict(a_to_b=_coverage(b, name, n, form, cal_a[name][str(n)][form]),
                                b_to_a=_coverage(a, name, n, form, cal_b[name][str(n)][form]))
                     for form in FORMS}
            for n in PLATEAUX
        }  # fmt: skip
    return out


def calibrate_from(paths: list[str]) -> dict:
    """The systematic terms (:func:`_systematic`) over the cameras of the results ``paths``
    together; each result's family and camera count are listed with them; with two results,
    each form's coverage of one set when calibrated on the other (:func:`_cross_coverage`)."""
    evals, sets, per_set = [], [], []
    for path in paths:
        r = json.loads(Path(path).read_text())
        evals += r["per_camera"]
        per_set.append(r["per_camera"])
        sets.append(dict(path=str(path), family=r["config"].get("family", "nodal"),
                         seed=r["config"]["seed"], cameras=len(r["per_camera"])))  # fmt: skip
    if any(s["family"] == "nodal" for s in sets):
        raise SystemExit(
            "--calibrate-from: the nodal family scores the re-check, never calibrates it"
        )
    models = sorted({r["model"] for e in evals for r in e["results"]})
    out = dict(sets=sets, recheck_systematic=_systematic(evals, models))
    if len(per_set) == 2:
        out["cross_coverage"] = _cross_coverage(*per_set, models)
    return out


def cell_means(field_id, obsid, values, temperature_degC) -> dict:
    """Per (field, plateau) cell ``(field_id, obsid)``: the mean of ``values`` and the mean
    TRP1 (degC) of its frames."""
    pairs = np.column_stack([np.asarray(field_id, np.int64), np.asarray(obsid, np.int64)])
    cells, inv = np.unique(pairs, axis=0, return_inverse=True)
    inv = inv.ravel()
    n = np.bincount(inv)
    v = np.bincount(inv, np.asarray(values, float)) / n
    t = np.bincount(inv, np.asarray(temperature_degC, float)) / n
    return {(int(f), int(o)): (float(a), float(b))
            for (f, o), a, b in zip(cells, v, t, strict=True)}  # fmt: skip


def focus_change_pair(first: dict, later: dict, thermal_first, thermal_later) -> tuple:
    """``(network's change, true change)`` (um) between two campaigns' :func:`cell_means` of
    the network's offsets: the mean over their common cells of later minus first, and of the
    true thermal focal shift at each cell's TRP1 (``thermal_*``: :class:`ThermalModel`)."""
    common = sorted(set(first) & set(later))
    if not common:
        raise ValueError("the campaigns share no (field, plateau) cell")
    d_mu = np.mean([later[c][0] - first[c][0] for c in common])
    d_true = np.mean([thermal_later.focal_shift_um(later[c][1])
                      - thermal_first.focal_shift_um(first[c][1]) for c in common])  # fmt: skip
    return float(d_mu), float(d_true)


def response_slope(pairs: list[tuple[float, float]]) -> dict:
    """Least-squares slope through the origin of the networks' changes on the true ones (1: the
    network shows the whole focus change), its standard error, the count and the true
    changes' RMS (um)."""
    y, x = np.asarray(pairs, float).T
    b = float(x @ y / (x @ x))
    r = y - b * x
    se = float(np.sqrt((r @ r) / max(len(x) - 1, 1) / (x @ x)))
    return dict(slope=b, se=se, n=len(x), true_change_rms_um=float(np.sqrt(np.mean(x**2))))


def _response(job: dict) -> dict:
    """One camera's :func:`focus_change_pair` for the shipped network and, where the bench
    made one, its fine-tuned network."""
    pin_one_thread()
    from plato_cnn.predict import predict_frames
    from plato_cnn.reader import read_campaign
    from plato_sim.optics.thermal import ThermalModel

    camp = {}
    for side in ("first", "later"):
        fr = read_campaign(job[side])
        camp[side] = fr.select(fr.usable)
    models = {"shipped": job["base"]}
    if (Path(job["model_out"]) / "finetune.json").is_file():
        models["fine-tuned"] = job["model_out"]
    out = {}
    for name, model in models.items():
        means = {side: cell_means(fr.field_id, fr.obsid, predict_frames(fr, model)["mu_um"],
                                  fr.temperature_degC) for side, fr in camp.items()}  # fmt: skip
        out[name] = focus_change_pair(means["first"], means["later"],
                                      ThermalModel(**job["thermal_first"]),
                                      ThermalModel(**job["thermal_later"]))  # fmt: skip
    return out


def _response_block(pairs: list[dict]) -> dict:
    """:func:`response_slope` per network over the cameras that have it, and the pairs."""
    names = sorted({k for p in pairs for k in p})
    return dict(slopes={n: response_slope([p[n] for p in pairs if n in p]) for n in names},
                per_camera=pairs)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.calibrate_from:
        print(json.dumps(calibrate_from(args.calibrate_from), indent=1))
        return 0
    from plato_cnn.nn.card import default_model_dir

    base = str(args.model or default_model_dir())
    t0 = time.perf_counter()
    first, later = _campaigns(args)
    t_emul = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the key names everything a kept result depends on but the camera
    key = f"e{args.epochs}p{args.patience}_s{args.seed}_m{args.max_shift:g}"
    fam = "" if args.family == "nodal" else f"{args.family}_"
    ft = "" if not args.skip_finetune else "_noft"
    jobs = [
        dict(i=i, first=str(da), later=str(db), camera=tb["camera"], truth=tb["bft_degC"],
             first_truth=ta["bft_degC"], base=base, epochs=args.epochs, patience=args.patience,
             finetune=not args.skip_finetune, model_out=str(out / f"{fam}cam{i:03d}_{key}"),
             thermal_first=ta["thermal"], thermal_later=tb["thermal"],
             result=str(out / f"{fam}cam{i:03d}_{key}_rows4{ft}.json"))
        for i, ((da, ta), (db, tb)) in enumerate(zip(first, later, strict=True))
    ]  # fmt: skip
    models = [m for m in MODELS if not (args.skip_finetune and m.startswith("fine-tuned"))]
    t1 = time.perf_counter()
    kept = map_jobs(_camera, jobs, args.workers, desc="re-checked cameras")
    evals = [_rescored(e, _forward(j)) for e, j in zip(kept, jobs, strict=True)]
    counts = [int(x) for x in args.forward_plateaux.split(",") if x.strip()]
    fwd = []
    if counts:
        fwd = map_jobs(_forward_later, [dict(j, n=counts) for j in jobs], args.workers,
                       desc="forward fits of the later campaigns")  # fmt: skip
    response = None
    if args.response:
        response = _response_block(map_jobs(_response, jobs, args.workers,
                                            desc="networks' response"))  # fmt: skip
    t_run = time.perf_counter() - t1
    shifts = [e["truth"] - e["first_truth_degC"] for e in evals]
    result = dict(
        machine=machine_info(),
        command=script_argv(),
        config=vars(args),
        seconds=dict(emulation=t_emul, cameras=t_run),
        finetune_s_per_camera=None
        if args.skip_finetune
        else float(np.mean([e["finetune_s"] for e in evals])),
        score_s_per_fit=float(np.mean([e["score_s"] for e in evals])),
        bft_shift_rms_degC=float(np.sqrt(np.mean(np.square(shifts)))),
        rows=_with_flags(build_rows(evals, models), evals) + _forward_rows(evals, fwd, counts),
        recheck_systematic=_systematic(evals, models),
        per_camera=evals,
        forward_per_camera=fwd,
        response=response,
    )
    print(
        f"{len(evals)} {args.family} cameras (seed {args.seed}) re-checked, T_BF moved by up to "
        f"{args.max_shift:g} degC (RMS {result['bft_shift_rms_degC']:.2f}); emulation "
        f"{t_emul:.0f} s, fine-tuning + scoring {t_run:.0f} s"
    )
    text = markdown(result)
    if response:
        text += "\n" + "\n".join(
            f"response to the focus change, {n}: {r['slope']:.3f} +- {r['se']:.3f} ({r['n']} "
            f"cameras, true changes {r['true_change_rms_um']:.2f} um RMS)"
            for n, r in response["slopes"].items()
        )
    report(result, text, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
