"""Every BFT estimator scored in family and out of family (nodal optical family), 5/3/2/1 plateaux.

In family: the design-family cameras exactly as ``benchmarks/classical_bft.py`` emulates them
(same options, seed and cache: random :class:`~plato_sim.optics.wavefront.CameraPerturbation`
of the design, true T_BF uniform in [-84, -72] degC, ``--fields`` x ``--dithers`` x
``--frames``).  Out of family: ``--oof-cameras`` cameras of the nodal family
(:mod:`plato_sim.optics.family_nodal`: NAT field dependences through Z22, quadratic thermal
response, CCD height steps, other charge diffusion, spectrum and vignetting), each with its
own random test design (:func:`plato_sim.scenes.family_campaigns.random_design`: 10-40 fields,
5-25 dithers, 1-4 frames) but the standard five plateaux -90..-70 degC, so that both families
use the same plateau subsets (``CampaignFrames.plateau_mask`` with
:data:`plato_cnn.pipelines.calibrate.PLATEAU_SUBSETS`: 5 = -90..-70, 3 = -90/-80/-70,
2 = -85/-75, 1 = -80), and the true T_BF drawn in the in-family range (``--oof-bft-range``;
the family's own default -92..-68 adds extrapolation on top of the family change).

Estimators (``--methods``, default all): the test houses' cubic (5 plateaux; a cubic needs
4), the improved classical (gauss; 5 and 3), the CNN (shipped default model unless
``--model``; 5, 3, 2, 1), the forward method (:func:`plato_cnn.forward.forward_bft`; 5, 3,
2, 1; ``--skip-forward`` leaves it out) and the CNN field head
(:func:`plato_cnn.field_bft.field_head_bft`, the shipped head on the shipped FocusNet unless
``--field-head`` and ``--model``; 5, 3, 2, 1).  ``--plateaux`` keeps only some plateau counts.
Columns: RMS error, bias, median sigma, coverage (|error| <= sigma), the fraction of cameras
the estimator flagged as outside its model (the forward fit's chi^2 test), failures, and RMS
error / Cramer-Rao bound where a bound is
available: the design family's median bound for the same design, read from the limits
benchmark's JSON (``--bounds``, default ``results/limits.json``).  Out of family
(:func:`plato_sim.bounds.camera_from_truth` refuses nodal truths: that bound's nuisances are
the design family's terms) the bound is the Fisher (Cramer-Rao) bound of the forward
method's own model at each fitted camera, the fit's Laplace sigma before any systematic
term (``sigma_stat_degC``), median over the cameras for that plateau count: the bound of an
unbiased estimator that knows the camera is described by the per-field model.

How the nodal family stays out of training and calibration:

* separate seeds: every nodal draw (camera, design, T_BF, emulator seed) comes from
  ``SeedSequence([NODAL_SEED_TAG, seed, i])`` (:mod:`plato_sim.scenes.out_of_family`), a
  stream disjoint from the plain-integer seeds of datasets, calibration sets and the
  design-family benchmarks;
* no import: the pretraining, fine-tuning, plateau-head and calibration code
  (``plato_cnn.pipelines``, ``plato_cnn.nn``, ``plato_sim.generate``,
  ``plato_sim.scenes.dataset``) never imports ``plato_sim.optics.family_nodal`` or
  ``plato_sim.scenes.out_of_family``; this benchmark only reads the campaigns and scores;
* its campaigns live in their own cache (``--oof-cache``) with the family in the truth
  sidecar (``"family": "nodal"``);
* the forward method's calibrated systematic term comes from the design family and the
  high-order family (:mod:`plato_sim.optics.family_highorder`, its own seed stream), which
  never imports the nodal family nor is imported by it (``tests/test_architecture.py``).
  The forward rows' sigma is rebuilt from the kept Laplace sigma and the term shipped now
  (:func:`with_systematic`), so a kept fit is scored with the current calibration.

Each camera's results are kept next to its campaign (``*.oof_eval.<key>.json``, the key naming
the rows, the CNN model and the hash of what in its description sets the estimates (its
provenance notes left out), the forward fit's model tag and procedure version, the package
version and the truth), so that an interrupted run (the full one is hours long) resumes;
``--fresh`` recomputes.  Rows kept under another forward procedure or CNN description are
reused where they would come out the same (:func:`_still_current`).
``--keep-dir DIR`` keeps them in one folder instead, each camera named by its campaign rather
than its truth: a camera kept there is scored without emulating its campaign, so that a run
goes on from kept results on another machine (the full run's are kept in
``results/measured/out_of_family_rows``).

Usage::

    python -m benchmarks.out_of_family [--quick] [--fresh] [--kept-only] [--keep-dir DIR]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import sys
import time
from itertools import zip_longest
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/out_of_family.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    REPO_ROOT,
    machine_info,
    markdown_table,
    parse_with_quick,
    percent,
    report,
    row_stats,
    script_argv,
)
from benchmarks.classical_bft import (  # noqa: E402
    TRUTH_RANGE_DEGC,
    _emulate,
    add_campaign_arguments,
    campaign_jobs,
)
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS as SUBSETS  # noqa: E402
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

log = logging.getLogger(__name__)

#: ``--quick``: a few small campaigns per family (their own folders in the same caches).
QUICK = dict(cameras=4, oof_cameras=4, fields=20, dithers=3)
#: (label, method, fit, plateaux); rows a fit cannot do (too few plateaux) are left out.
ROWS = [
    ("test houses: cubic (baseline)", "eef", "cubic", 5),
    ("improved classical (gauss)", "eef", "gauss", 5),
    ("improved classical (gauss)", "eef", "gauss", 3),
    ("CNN + thermal-model fit", "cnn", "-", 5),
    ("CNN + thermal-model fit", "cnn", "-", 3),
    ("CNN + thermal-model fit", "cnn", "-", 2),
    ("CNN + thermal-model fit", "cnn", "-", 1),
    ("forward method", "forward", "-", 5),
    ("forward method", "forward", "-", 3),
    ("forward method", "forward", "-", 2),
    ("forward method", "forward", "-", 1),
    ("CNN field head", "field", "-", 5),
    ("CNN field head", "field", "-", 3),
    ("CNN field head", "field", "-", 2),
    ("CNN field head", "field", "-", 1),
]


#: the field head as ``bft --method field`` reports it: its sigma widened by its out-of-family
#: term where the CNN's thermal-residual check flags the camera (plato_cnn.field_bft)
FAMILY_LABEL = "CNN field head, out-of-family term where the residual check flags"


def _derived_rows() -> dict[int, tuple[int, int]]:
    """Append the rows derived from two others of the same camera (never computed again):
    the CNN's estimate cross-checked against a reference as the command line does
    (:mod:`plato_cnn.crosscheck`: beyond ``DISAGREE_SIGMAS`` combined sigmas the camera is
    flagged outside the model and its sigma widened to cover the difference), by the improved
    classical fit (the default, 4 plateaux or more: here 5) and by the forward fit
    (``--cross-check-forward``); and the CNN's estimate replaced by the field head's where the
    CNN's thermal-residual check flags the camera (``bft --method cnn --field-head-fallback``),
    and the field head's own estimate as ``bft --method field`` reports it (:data:`FAMILY_LABEL`);
    where the residual check flags, both add the head's out-of-family term to its sigma, and
    both, as ``bft`` does by default, are then cross-checked by the improved classical fit
    where the camera has it (4 plateaux or more: here 5; :func:`with_cross_checks`).
    Returns ``{row: (CNN row, reference row)}``."""
    refs = (
        ("CNN, cross-checked by the improved classical", "improved classical (gauss)", "eef",
         "gauss", (5,)),
        ("CNN, cross-checked by the forward fit", "forward method", "forward", "-", (5, 3, 2, 1)),
    )  # fmt: skip
    refs += (
        ("CNN, the field head where the residual check flags it", "CNN field head", "field",
         "-", (5, 3, 2, 1)),
        (FAMILY_LABEL, "CNN field head", "field", "-", (5, 3, 2, 1)),
    )  # fmt: skip
    checks = {}
    for label, ref_label, method, fit, counts in refs:
        for n in counts:
            cnn = ROWS.index(("CNN + thermal-model fit", "cnn", "-", n))
            checks[len(ROWS)] = (cnn, ROWS.index((ref_label, method, fit, n)))
            ROWS.append((label, "check", method, n))
    return checks


#: ``{derived row: (CNN row, reference row)}`` (:func:`_derived_rows`).
CHECKS = _derived_rows()
#: ``{plateaux: row}`` of the improved classical fit, which the field head's derived rows are
#: cross-checked against as ``bft`` does by default (:func:`plato_cnn.crosscheck.cross_check`)
_CLASSICAL_ROW = {r[3]: k for k, r in enumerate(ROWS) if r[1:3] == ("eef", "gauss")}


def _forward(frames, seed: int) -> dict:
    """The forward method on ``frames``: the row's numbers."""
    from plato_cnn.forward import forward_bft

    r = forward_bft(frames, seed=seed)
    return {
        "bft": r["bft_degC"], "sigma": r["sigma_degC"], "outside": r["outside_model"],
        "sigma_stat": r["sigma_stat_degC"],
        "chi2": r["chi2"]["reduced"], "iterations": r["diagnostics"]["iterations"],
        "wall_s": r["diagnostics"]["wall_s"],
    }  # fmt: skip


@functools.lru_cache(maxsize=8)
def _card_sha(model: str | None) -> str:
    """SHA-256 of what in the CNN model's description sets its estimates (its calibrations
    included, its provenance notes not: :meth:`plato_cnn.nn.card.ModelCard.behaviour_sha256`)."""
    from plato_cnn.nn.card import ModelCard, default_model_dir, read_model_json

    return ModelCard.from_dict(read_model_json(model or default_model_dir())).behaviour_sha256()


@functools.lru_cache(maxsize=8)
def _field_head_sha(head_dir: str | None) -> str:
    """SHA-256 of a field head's files (its card and weights; default: the shipped one), its
    out-of-family term left out (the kept rows do not depend on it: the derived rows apply
    it); ``"absent"`` where there is none (its rows then fail, and are not kept as its)."""
    import hashlib

    from plato_cnn.nn.field_head import default_field_head_dir

    d = Path(head_dir or default_field_head_dir())
    h = hashlib.sha256()
    try:
        card = json.loads((d / "field_head.json").read_text("utf-8"))
        weights = (d / "field_head.pt").read_bytes()
    except (OSError, ValueError):
        return "absent"
    for key in ("family_sigma_degC", "family_calibration"):
        card.pop(key, None)
    # the card as plato_cnn.nn.field_head.save_field_head writes it, less those keys
    h.update((json.dumps(card, indent=1) + "\n").encode("utf-8"))
    h.update(weights)
    return h.hexdigest()


@functools.lru_cache(maxsize=4)
def _field_head_card(head_dir: str | None = None):
    """A field head's card (default: the shipped head's): its out-of-family term for the
    derived rows."""
    from plato_cnn.nn.field_head import default_field_head_dir, load_field_head

    return load_field_head(head_dir or default_field_head_dir())[1]


def _result_cache(job: dict, fit_version: int | None = None, with_card: bool = True) -> Path:
    """Where one camera's results are kept, named by what produced them: the rows, the CNN
    model and (``with_card``) its description's behaviour hash (:func:`_card_sha`), the
    forward fit's model tag and procedure version (default: the current one), the package
    version and the camera.

    Next to its campaign by default, the camera named by its truth; under ``keep_dir``
    (``--keep-dir``) as ``<family><i>.oof_eval.<key>.json``, the camera named by its
    campaign (:func:`_camera_identity`), so that a kept camera is known before its campaign
    is emulated (its truth is in the file)."""
    import hashlib

    from plato_cnn.forward import FIT_VERSION, MODEL_TAG
    from plato_sim._version import __version__

    v = FIT_VERSION if fit_version is None else fit_version
    camera = _camera_identity(job) if job.get("keep_dir") else job["truth"]
    key = [job["rows"], job["model"], MODEL_TAG, v, __version__, camera]
    if with_card:
        key.append(_card_sha(job["model"]))
    if any(ROWS[k][1] == "field" for k in job["rows"]):  # keys without field rows as before
        key.append(_field_head_sha(job.get("field_head")))
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    if job.get("keep_dir"):
        return Path(job["keep_dir"]) / f"{job['family']}{job['i']:03d}.oof_eval.{digest}.json"
    return Path(f"{job['dir']}.oof_eval.{digest}.json")


def _camera_identity(job: dict) -> list:
    """What names a camera without its truth: its family, its campaign folder's name (which
    carries the set's seed, the index and the design) and, in family, the emulator's seed
    and requested T_BF (the in-family folder names leave them out)."""
    return [job["family"], Path(job["dir"]).name, job.get("seed"), job.get("bft")]


def _kept_file(job: dict) -> dict | None:
    """The camera's results kept under the current key, or None; a file whose truth differs
    from the job's (where the job knows it) is not this camera's and is ignored."""
    cache = _result_cache(job)
    if not cache.is_file() or job.get("fresh"):
        return None
    kept = json.loads(cache.read_text())
    if job.get("truth") is not None and kept.get("truth") != job["truth"]:
        log.warning("%s: kept truth %s is not the campaign's %s; recomputed",
                    cache, kept.get("truth"), job["truth"])  # fmt: skip
        return None
    return kept


def _kept_complete(job: dict) -> dict | None:
    """The camera's kept results when they hold every row of the job: under the current key,
    or under an earlier procedure whose rows the current one reproduces (:func:`_still_current`);
    otherwise None (its campaign is needed)."""
    kept = _kept_file(job)
    if kept is None and not job.get("fresh"):
        kept = _still_current(job)
    if kept is None or {r["row"] for r in kept["results"]} < set(job["rows"]):
        return None
    return kept


def _row_sets(rows: list[int]) -> list[list[int]]:
    """Every row list the command line can ask for (``--methods`` x ``--plateaux``), ``rows``
    first: a camera's rows may be kept under any of them (a run of some methods or plateau
    counts keeps its own file)."""
    from itertools import combinations

    def subsets(xs: set) -> list[set]:
        return [set(c) for n in range(1, len(xs) + 1) for c in combinations(sorted(xs), n)]

    out = [list(rows)]
    for m in subsets({r[1] for r in ROWS}):
        for p in subsets({r[3] for r in ROWS}):
            cand = [k for k, r in enumerate(ROWS) if r[1] in m and r[3] in p]
            if cand and cand not in out:
                out.append(cand)
    return out


def _still_current(job: dict) -> dict | None:
    """The camera's rows kept under any row list, forward procedure or CNN description, less
    those that would now come out differently, merged: forward fits the current procedure
    would make otherwise (:func:`plato_cnn.forward.same_fit_as_current`: only fits that ended
    within the model are the same) and CNN rows of another description (its calibrations set
    the sigma) are left out; of the rows kept more than once, the one of the newest procedure
    and the current description is taken.  None if nothing is kept."""
    from plato_cnn.forward import FIT_VERSION, same_fit_as_current

    sources = [(v, card) for card in (True, False) for v in range(FIT_VERSION, 0, -1)]
    merged: dict | None = None
    by_row: dict[int, dict] = {}
    for v, same_card in sources:
        for rows in _row_sets(job["rows"]):
            path = _result_cache({**job, "rows": rows}, v, with_card=same_card)
            if not path.is_file():
                continue
            kept = json.loads(path.read_text())
            if job.get("truth") is not None and kept.get("truth") != job["truth"]:
                continue
            merged = merged or kept
            for r in kept["results"]:
                if r["row"] in by_row or r["row"] not in job["rows"] or "error" in r:
                    continue
                if ROWS[r["row"]][1] == "cnn" and not same_card:
                    continue
                method, n = ROWS[r["row"]][1], ROWS[r["row"]][3]
                if method == "forward" and not same_fit_as_current(v, r.get("chi2", math.inf), n):
                    continue
                by_row[r["row"]] = r
    if merged is None:
        return None
    return {**merged, "results": [by_row[k] for k in job["rows"] if k in by_row]}


def _evaluate(job: dict) -> dict:
    """One camera's rows; kept next to its campaign so that an interrupted run resumes
    (``--fresh`` recomputes).  Rows kept under an earlier forward procedure are reused where
    the current one gives the same (:func:`_still_current`); only the others are computed."""
    cache = _result_cache(job)
    done = _kept_file(job)
    head = job.get("field_head")
    if done is not None:
        return _scored(done, head)
    kept = None if job.get("fresh") else _still_current(job)
    if job.get("kept_only"):  # score only what is kept, compute nothing
        complete = kept is not None and {r["row"] for r in kept["results"]} >= set(job["rows"])
        return _scored(kept, head) if complete else None
    if kept is None:
        out = _evaluate_camera(job)
    else:
        done = {r["row"] for r in kept["results"]}
        todo = [k for k in job["rows"] if k not in done]
        log.info("camera %s: %d rows kept, %d to compute", job["dir"], len(done), len(todo))
        new = _evaluate_camera({**job, "rows": todo}) if todo else {"results": [], "s": 0.0}
        by_row = {r["row"]: r for r in kept["results"] + new["results"]}
        out = {**kept, "results": [by_row[k] for k in job["rows"]], "s": kept["s"] + new["s"]}
    from plato_sim.io.atomic import atomic_write_text

    atomic_write_text(cache, json.dumps(out))
    return _scored(out, head)


def _scored(ev: dict, field_head: str | None = None) -> dict:
    """A camera's kept rows as scored now: the forward sigma from the shipped calibration,
    then the derived cross-check rows (with ``field_head``'s out-of-family term)."""
    return with_cross_checks(with_systematic(ev), field_head)


def with_cross_checks(ev: dict, field_head: str | None = None) -> dict:
    """Add the derived rows of :data:`CHECKS` whose two rows the camera has: the CNN's
    estimate, its sigma widened where the reference disagrees beyond ``DISAGREE_SIGMAS``
    (``outside``: flagged by the check or already by the CNN's own thermal-residual check;
    ``disagreement_sigmas``), as :mod:`plato_cnn.crosscheck` does (against the forward fit,
    one combined sigma for a CNN estimate its residual check flagged); the field head's rows
    as ``bft --method field`` and ``--field-head-fallback`` report them, the improved
    classical cross-check included (``classical_disagreement_sigmas``)."""
    from plato_cnn.crosscheck import DISAGREE_SIGMAS, MIN_PLATEAUX, disagreement, forward_threshold

    ev["results"] = [r for r in ev["results"] if ROWS[r["row"]][1] != "check"]
    by_row = {r["row"]: r for r in ev["results"]}
    for k, (a, b) in CHECKS.items():
        if a not in by_row or b not in by_row:
            continue
        cnn, ref = by_row[a], by_row[b]
        if "error" in cnn or "error" in ref:
            ev["results"].append({"row": k, "error": cnn.get("error") or ref["error"]})
            continue
        flagged = bool(cnn.get("outside"))
        if ROWS[b][1] == "field":  # the field head where the CNN's residual check flags
            term = _field_head_card(field_head).family_for(ROWS[b][3]) if flagged else None
            field = {**ref, "sigma": float(np.hypot(ref["sigma"], term or 0.0))}
            use = field if flagged or ROWS[k][0] == FAMILY_LABEL else cnn
            row = {"row": k, "bft": use["bft"], "sigma": use["sigma"], "outside": flagged}
            classical = by_row.get(_CLASSICAL_ROW.get(ROWS[b][3], -1))
            if ROWS[b][3] >= MIN_PLATEAUX and classical and "error" not in classical:
                # the CLI's default cross-check of whichever estimate it reports
                _d, n_sig, widened = disagreement(
                    use["bft"], use["sigma"], classical["bft"], classical["sigma"]
                )
                row["classical_disagreement_sigmas"] = n_sig
                if widened is not None:
                    row.update(sigma=widened, outside=True)
            ev["results"].append(row)
            continue
        threshold = forward_threshold(flagged) if ROWS[b][1] == "forward" else DISAGREE_SIGMAS
        _d, n_sig, widened = disagreement(
            cnn["bft"], cnn["sigma"], ref["bft"], ref["sigma"], threshold
        )
        ev["results"].append({
            "row": k, "bft": cnn["bft"], "sigma": cnn["sigma"] if widened is None else widened,
            "outside": widened is not None or flagged,
            "disagreement_sigmas": n_sig,
        })  # fmt: skip
    return ev


def with_systematic(ev: dict) -> dict:
    """The forward rows' sigma from their Laplace sigma and the *current* calibrated term
    (:func:`plato_cnn.forward.systematic_term_degC`: the constant within the model, the
    misfit term from the fit's chi^2 outside it; in quadrature, as the method does), so that
    a kept fit is scored with the shipped calibration, not the one it ran with; and the
    improved classical fit's 3-plateau shape term
    (:data:`plato_cnn.classical.THREE_PLATEAU_SHAPE_SIGMA_DEGC`) added to rows kept without it."""
    from plato_cnn.classical import THREE_PLATEAU_SHAPE_SIGMA_DEGC
    from plato_cnn.forward import systematic_term_degC

    for r in ev["results"]:
        if ROWS[r["row"]][1] == "forward" and "sigma_stat" in r:
            term = systematic_term_degC(ROWS[r["row"]][3], r["chi2"], r["outside"]) or 0.0
            r["systematic"] = term
            r["sigma"] = float(np.hypot(r["sigma_stat"], term))
        if ROWS[r["row"]][2:] == ("gauss", 3) and "sigma" in r and "shape_term" not in r:
            # kept before the improved fit had its 3-plateau shape term: its bootstrap sigma
            r["shape_term"] = THREE_PLATEAU_SHAPE_SIGMA_DEGC
            r["sigma"] = float(np.hypot(r["sigma"], THREE_PLATEAU_SHAPE_SIGMA_DEGC))
    return ev


def _evaluate_camera(job: dict) -> dict:
    pin_one_thread()
    import warnings

    from plato_cnn.classical import estimate_bft
    from plato_cnn.field_bft import estimate_from_features, field_head_inputs
    from plato_cnn.metrics import frame_eef
    from plato_cnn.predict import cnn_bft
    from plato_cnn.reader import read_campaign
    from plato_sim.errors import PlatoFocusWarning

    warnings.simplefilter("ignore", PlatoFocusWarning)  # per-camera notes: not the table's

    t0 = time.perf_counter()
    frames = read_campaign(job["dir"])
    frames = frames.select(frames.usable)
    e = frame_eef(frames.stamps, "2x2")
    out, field = [], None
    for k in job["rows"]:
        _label, method, fit, n_pl = ROWS[k]
        m = frames.plateau_mask(SUBSETS[n_pl])
        try:
            if method == "eef":
                r = estimate_bft(frames.select(m), fit, "2x2", e[m], seed=job["i"], n_boot=100)
                res = {"bft": r.bft_degC, "sigma": r.sigma_degC}
                if fit == "gauss" and n_pl == 3:  # its sigma holds the shape term already
                    res["shape_term"] = r.extra["sigma_model_degC"]
            elif method == "cnn":
                f, info = cnn_bft(frames.select(m), job["model"], n_boot=100, seed=job["i"])
                res = {"bft": f.bft_degC, "sigma": f.sigma_degC,
                       "outside": info["thermal_residual"]["outside"],
                       "thermal_residual_um": f.thermal_residual_um}  # fmt: skip
            elif method == "field":
                # features once per camera: each plateau subset is a subset of the rows
                field = field or field_head_inputs(frames, job["model"], job.get("field_head"))
                head, card, _, feats = field
                r = estimate_from_features(frames.select(m), feats[m], head, card.systematic_for)
                res = {"bft": r["bft_degC"], "sigma": r["sigma_degC"]}
            else:
                res = _forward(frames.select(m), job["i"])
            out.append({"row": k, **res})
        except Exception as exc:  # counted as a failure of that row
            out.append({"row": k, "error": f"{type(exc).__name__}: {exc}"})
    return {"i": job["i"], "family": job["family"], "truth": job["truth"], "results": out,
            "s": time.perf_counter() - t0}  # fmt: skip


def crb_medians(path: str | None, fields: int, dithers: int, frames: int) -> dict[int, float]:
    """Median design-family T_BF bound (degC) per plateau count for this design, from the
    limits benchmark's JSON (``per_field`` aberrations); empty if absent or not matching."""
    if not path or not Path(path).is_file():
        return {}
    rows = json.loads(Path(path).read_text()).get("rows", [])
    return {
        int(r["plateaux"]): float(r["median_bound_degC"])
        for r in rows
        if (r.get("fields"), r.get("dithers"), r.get("frames")) == (fields, dithers, frames)
        and r.get("aberrations") == "per_field"
        and r.get("median_bound_degC") is not None
    }


def fisher_medians(evals: list[dict]) -> dict[int, float]:
    """Median Fisher bound of the forward model's fit (``sigma_stat``) per plateau count."""
    out = {}
    for k, (_l, method, _f, n_pl) in enumerate(ROWS):
        if method != "forward":
            continue
        v = [r["sigma_stat"] for ev in evals for r in ev["results"]
             if r["row"] == k and "sigma_stat" in r]  # fmt: skip
        if v:
            out[n_pl] = float(np.median(v))
    return out


def build_rows(evals: list[dict], rows: list[int], family: str, crb: dict[int, float]) -> list:
    """One row of statistics per estimator and plateau count, for one family."""
    truth = np.asarray([ev["truth"] for ev in evals])
    out = []
    for k in rows:
        label, _m, fit, n_pl = ROWS[k]
        res = [next(r for r in ev["results"] if r["row"] == k) for ev in evals]
        st = row_stats(res, truth)
        bound = crb.get(n_pl)
        rms = st["rms_error_degC"]
        flags = [r["outside"] for r in res if "outside" in r]
        out.append(
            dict(family=family, estimator=label, fit=fit, plateaux=n_pl, **st,
                 frac_flagged=float(np.mean(flags)) if flags else None,
                 crb_median_degC=bound,
                 rms_over_crb=None if bound is None or rms is None else rms / bound)
        )  # fmt: skip
    return out


def markdown(result: dict) -> str:
    """The rows of a result (as written to ``--json``) as a Markdown table."""
    cols = [
        ("family", "family", ""),
        ("estimator", "estimator", ""),
        ("plateaux", "plateaux", "d"),
        ("rms_error_degC", "RMS error (degC)", ".2f"),
        ("rms_error_sd_degC", "its spread (bootstrap)", ".2f"),
        ("bias_degC", "bias (degC)", "+.2f"),
        ("median_sigma_degC", "median sigma (degC)", ".2f"),
        ("frac_within_sigma", "|error| <= sigma", percent),
        ("frac_within_sigma_sd", "its spread", percent),
        ("frac_flagged", "flagged outside model", percent),
        ("n_cameras", "cameras", "d"),
        ("failures", "failures", "d"),
        ("rms_over_crb", "RMS / CRB", ".3g"),
    ]
    return markdown_table(result["rows"], cols)


def _oof_kwargs(args: argparse.Namespace) -> dict:
    return dict(seed=args.oof_seed, bft_range_degC=tuple(args.oof_bft_range),
                n_sub_truth=args.n_sub_truth, plateaux_degC=SUBSETS[5])  # fmt: skip


def _oof_folders(args: argparse.Namespace) -> list[Path]:
    from plato_sim.scenes.out_of_family import out_of_family_folders

    return out_of_family_folders(args.oof_cache, args.oof_cameras, **_oof_kwargs(args))


def _emulate_missing(args: argparse.Namespace, jobs: list[dict], out_jobs: list[dict]) -> None:
    """Set each job's ``truth``, emulating (or reading) its campaign, except for the cameras
    whose results are all kept under ``--keep-dir`` (their truth is read from the kept file)
    and, with ``--kept-only``, any camera not kept (it is not scored)."""
    from plato_sim.scenes.out_of_family import emulate_out_of_family

    need = []
    for j in jobs + out_jobs:
        kept = _kept_complete(j) if args.keep_dir else None
        if kept is not None:
            j["truth"] = kept["truth"]
        elif not (args.keep_dir and args.kept_only):
            need.append(j)
    log.info("%d of %d campaigns to emulate or read", len(need), len(jobs) + len(out_jobs))
    need_in = [j for j in need if j["family"] == "in"]
    for j, tr in zip(need_in, map_jobs(_emulate, need_in, args.workers), strict=True):
        j["truth"] = tr["bft_degC"]
    need_out = [j for j in need if j["family"] == "out"]
    if need_out:
        done = emulate_out_of_family(
            args.oof_cache, args.oof_cameras, workers=args.workers,
            only=[j["i"] for j in need_out], **_oof_kwargs(args),
        )  # fmt: skip
        for j, (d, tr) in zip(need_out, done, strict=True):
            if Path(j["dir"]) != d:
                raise RuntimeError(f"nodal camera {j['i']}: folder {d}, expected {j['dir']}")
            j["truth"] = tr["bft_degC"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_campaign_arguments(ap)  # in family: the cameras, seeds and cache of classical_bft.py
    ap.add_argument("--model", default=None, help="CNN model directory (default: shipped)")
    ap.add_argument(
        "--field-head",
        default=None,
        help="field head directory of the field rows (default: shipped); it must have been "
        "trained on --model's FocusNet",
    )
    ap.add_argument("--oof-cameras", type=int, default=50, help="nodal-family cameras")
    ap.add_argument("--oof-seed", type=int, default=1, help="nodal evaluation-set seed")
    ap.add_argument(
        "--oof-bft-range",
        type=lambda s: [float(v) for v in s.split(",")],
        default=list(TRUTH_RANGE_DEGC),
        help="true T_BF range (degC) out of family",
    )
    ap.add_argument("--oof-cache", default="out/out_of_family_cache")
    ap.add_argument(
        "--keep-dir",
        default=None,
        help="keep each camera's results in this folder (default: next to its campaign); a "
        "camera kept there is scored without emulating its campaign, so a run can go on from "
        "kept results on a machine without the campaigns",
    )
    ap.add_argument("--skip-forward", action="store_true", help="leave out the forward method")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="recompute every camera (default: reuse each camera's kept results, so that an "
        "interrupted run resumes)",
    )
    ap.add_argument(
        "--kept-only",
        action="store_true",
        help="evaluate nothing: score the cameras whose rows are all kept (a stopped run; "
        "campaigns not emulated yet are still emulated)",
    )
    ap.add_argument(
        "--methods",
        type=lambda s: s.split(","),
        default=["eef", "cnn", "forward", "field"],
        help="estimators to score: any of eef (cubic and gauss), cnn, forward, field (the "
        "CNN field head)",
    )
    ap.add_argument(
        "--plateaux",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[5, 3, 2, 1],
        help="plateau counts to score (of 5, 3, 2, 1)",
    )
    ap.add_argument("--bounds", default=str(REPO_ROOT / "results" / "limits.json"),
                    help="limits benchmark JSON with the design family's bounds")  # fmt: skip
    return parse_with_quick(ap, argv, QUICK)


def _systematic_table() -> dict:
    from plato_cnn.forward import MISFIT_SIGMA_DEGC, SYSTEMATIC_SIGMA_DEGC

    return {"within": dict(SYSTEMATIC_SIGMA_DEGC), "misfit": dict(MISFIT_SIGMA_DEGC)}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    methods = set(args.methods) - ({"forward"} if args.skip_forward else set())
    use_forward = "forward" in methods
    rows = [k for k, r in enumerate(ROWS) if r[1] in methods and r[3] in args.plateaux]
    scored = rows + [k for k, (a, b) in CHECKS.items() if a in rows and b in rows]
    t0 = time.perf_counter()
    common = dict(model=args.model, rows=rows, fresh=args.fresh, kept_only=args.kept_only,
                  keep_dir=args.keep_dir, field_head=args.field_head)  # fmt: skip
    if args.keep_dir:
        Path(args.keep_dir).mkdir(parents=True, exist_ok=True)
    jobs = campaign_jobs(args, family="in", **common)
    out_jobs = [dict(i=i, dir=str(d), family="out", **common)
                for i, d in enumerate(_oof_folders(args))]  # fmt: skip
    _emulate_missing(args, jobs, out_jobs)
    t_emul = time.perf_counter() - t0
    t1 = time.perf_counter()
    # the two families alternate, so that a run stopped early has scored both alike
    order = [j for pair in zip_longest(jobs, out_jobs) for j in pair if j is not None]
    order = [j for j in order if "truth" in j or args.kept_only]
    evals = [e for e in map_jobs(_evaluate, order, args.workers) if e is not None]
    if args.kept_only:
        log.warning(
            "--kept-only: %d of %d cameras have all their rows kept", len(evals), len(order)
        )
    t_eval = time.perf_counter() - t1
    crb = crb_medians(args.bounds, args.fields, args.dithers, args.frames)
    table = build_rows([e for e in evals if e["family"] == "in"], scored, "in", crb)
    oof = [e for e in evals if e["family"] == "out"]
    table += build_rows(oof, scored, "out", fisher_medians(oof))
    info = dict(
        machine=machine_info(),
        command=script_argv(),
        config=vars(args),
        plateau_subsets={str(k): list(v) for k, v in SUBSETS.items()},
        forward_method=use_forward,
        forward_systematic_sigma_degC=_systematic_table() if use_forward else None,
        bounds_used={str(k): v for k, v in crb.items()},
        seconds_emulation=t_emul,
        seconds_evaluation=t_eval,
        rows=table,
        per_camera=evals,
    )
    print(
        f"in family: {args.cameras} cameras ({args.fields} fields x {args.dithers} dithers x "
        f"{args.frames} frames); out of family: {args.oof_cameras} nodal cameras (random "
        f"designs); emulation {t_emul:.0f} s, evaluation {t_eval:.0f} s"
    )
    report(info, markdown(info), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
