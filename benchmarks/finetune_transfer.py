"""The CNN fine-tuned on a few cameras of an unseen optical family, scored on the others.

The family is the nodal one (:mod:`plato_sim.optics.family_nodal`), which neither the shipped
model's pretraining, its plateau head nor its calibration saw (``benchmarks/out_of_family.py``
says how that is ensured).  ``--finetune-cameras`` cameras of the family (evaluation-set seed
``--finetune-seed``) are the test house's earlier cameras: the model is fine-tuned on their
campaigns (:func:`plato_cnn.pipelines.finetune.finetune`) with the physics labels of the
forward fit (``--labels forward``: each frame's focal offset from its field's best focus under
the optics the forward method measured on that camera's images; their T_BFs are never used)
or the EEF-anchored pseudo-labels (``--labels eef``).  The scored cameras are other cameras of
the same family (seed ``--oof-seed``, the out-of-family benchmark's, so the two benchmarks score
the same cameras): whole cameras held out, with their own random test designs.  Rows: the
pretrained model before fine-tuning (``pretrained``: the shipped one, or ``--model``) and the
fine-tuned model, each with 5, 3, 2 and 1 plateaux
(the plateau subsets of the other benchmarks), RMS error, bias, median sigma and coverage.

``--resimulate`` also trains on each fitted camera imaged again, ``--variants N`` on ``N``
cameras like each (:func:`plato_cnn.resimulate.varied_camera`).

Each forward fit of a fine-tuning camera is kept next to its campaign
(``*.forward_ff.<model tag>.v<fit version>.json``), the fine-tuned model in ``--out``.

Usage::

    python -m benchmarks.finetune_transfer [--quick] [--json out/finetune_transfer.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/finetune_transfer.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    parse_with_quick,
    percent,
    report,
    row_stats,
    script_argv,
)
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS as SUBSETS  # noqa: E402
from plato_cnn.pipelines.calibrate import TRUTH_RANGE_DEGC  # noqa: E402
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

QUICK = dict(oof_cameras=4)
PLATEAUX = (5, 3, 2, 1)


def _nodal(cache: str, n: int, seed: int, workers: int) -> list[tuple[Path, dict]]:
    from plato_sim.scenes.out_of_family import emulate_out_of_family

    return emulate_out_of_family(
        cache, n, seed=seed, bft_range_degC=TRUTH_RANGE_DEGC, workers=workers,
        plateaux_degC=SUBSETS[5],
    )  # fmt: skip


def _forward_report(job: dict) -> dict:
    """The forward fit (with ``field_focus``) of one fine-tuning camera, kept next to it."""
    pin_one_thread()
    from plato_cnn.forward import (
        FIT_VERSION,
        MODEL_TAG,
        earlier_kept,
        forward_bft,
        same_fit_as_current,
    )
    from plato_cnn.reader import read_campaign
    from plato_sim.io.atomic import atomic_write_text

    cache = Path(f"{job['dir']}.forward_ff.{MODEL_TAG}.v{FIT_VERSION}.json")
    if cache.is_file():
        return json.loads(cache.read_text())
    for v, r in earlier_kept(lambda v: f"{job['dir']}.forward_ff.{MODEL_TAG}.v{v}.json"):
        if same_fit_as_current(v, r["chi2"]["reduced"], r["n_plateaux"]):
            return r  # a fit the current procedure reproduces
    fr = read_campaign(job["dir"])
    r = forward_bft(fr.select(fr.usable), seed=job["i"], field_focus=True)
    r = {k: v for k, v in r.items() if k != "examples"}
    atomic_write_text(cache, json.dumps(r))
    return r


def _score(job: dict) -> dict:
    """Both models on one held-out camera, every plateau count."""
    pin_one_thread()
    from plato_cnn.predict import cnn_bft
    from plato_cnn.reader import read_campaign

    fr = read_campaign(job["dir"])
    fr = fr.select(fr.usable)
    out = []
    for name, model in (("pretrained", job["base"]), ("fine-tuned", job["tuned"])):
        for n_pl in PLATEAUX:
            try:
                f, _ = cnn_bft(fr.select(fr.plateau_mask(SUBSETS[n_pl])), model, n_boot=100,
                               seed=job["i"])  # fmt: skip
                out.append(dict(model=name, plateaux=n_pl, bft=f.bft_degC, sigma=f.sigma_degC))
            except Exception as exc:  # counted as a failure of that row
                out.append(dict(model=name, plateaux=n_pl, error=f"{type(exc).__name__}: {exc}"))
    return {"i": job["i"], "camera": job["camera"], "truth": job["truth"], "results": out}


def s_floor(held: list[tuple[Path, dict]]) -> dict:
    """The one-plateau floor of the scored cameras (:func:`plato_sim.bounds.one_plateau_floor_degC`:
    the focal shift to best focus known exactly, converted with the prior ``s``), on the
    1-plateau subset's plateau: the error an image-only estimator keeps even when it reads the
    shift exactly."""
    from plato_sim.bounds import one_plateau_floor_degC
    from plato_sim.optics.thermal import S_PRIOR_UM_PER_DEGC, ThermalModel

    (t_pl,) = SUBSETS[1]
    err = np.array([
        one_plateau_floor_degC(ThermalModel(**tr["thermal"]), tr["bft_degC"], t_pl)
        for _, tr in held
    ])  # fmt: skip
    return dict(plateau_degC=t_pl, s_prior_um_per_degC=S_PRIOR_UM_PER_DEGC[0],
                rms_degC=float(np.sqrt(np.mean(err**2))),
                median_abs_degC=float(np.median(np.abs(err))), n_cameras=len(err))  # fmt: skip


def build_rows(evals: list[dict], models=("pretrained", "fine-tuned"), key="model") -> list[dict]:
    """One row per model (each result's ``key``) and plateau count."""
    truth = np.asarray([e["truth"] for e in evals])
    rows = []
    for name in models:
        for n_pl in PLATEAUX:
            res = [
                next(r for r in e["results"] if r[key] == name and r["plateaux"] == n_pl)
                for e in evals
            ]
            rows.append({key: name, "plateaux": n_pl, **row_stats(res, truth)})
    return rows


def markdown(result: dict, first: tuple[str, str] = ("model", "CNN model")) -> str:
    """The rows as a table; ``first``: the key and title of the first column."""
    cols = [
        (*first, ""),
        ("plateaux", "plateaux", "d"),
        ("rms_error_degC", "RMS error (degC)", ".3f"),
        ("rms_error_sd_degC", "its spread (bootstrap)", ".2f"),
        ("bias_degC", "bias (degC)", "+.3f"),
        ("median_sigma_degC", "median sigma (degC)", ".3f"),
        ("frac_within_sigma", "|error| <= sigma", percent),
        ("frac_within_sigma_sd", "its spread", percent),
        ("n_cameras", "cameras", "d"),
        ("failures", "failures", "d"),
    ]
    return markdown_table(result["rows"], cols)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finetune-cameras", type=int, default=4, help="cameras fine-tuned on")
    ap.add_argument("--finetune-seed", type=int, default=2, help="their evaluation-set seed")
    ap.add_argument("--oof-cameras", type=int, default=50, help="held-out cameras scored")
    ap.add_argument("--oof-seed", type=int, default=1, help="their evaluation-set seed")
    ap.add_argument("--labels", choices=("forward", "eef"), default="forward")
    ap.add_argument("--epochs", type=int, default=16, help="most fine-tuning epochs")
    ap.add_argument(
        "--patience", type=int, default=2, help="early stopping on the label fit (0: off)"
    )
    ap.add_argument(
        "--resimulate",
        action="store_true",
        help="also train on each fitted camera re-simulated (plato_cnn.resimulate)",
    )
    ap.add_argument(
        "--variants",
        type=int,
        default=0,
        help="with --resimulate: also this many cameras like each fitted one "
        "(plato_cnn.resimulate.varied_camera)",
    )
    ap.add_argument(
        "--variant-share",
        type=float,
        default=None,
        help="at most this fraction of each epoch's frames from the variants (resampled each "
        "epoch; default all)",
    )
    ap.add_argument(
        "--no-cv-sigma",
        action="store_true",
        help="skip the leave-one-camera-out sigma (one fine-tuning instead of one per camera "
        "plus one; the fine-tuned sigma is then the base calibration's, widened)",
    )
    ap.add_argument("--model", default=None, help="base model (default: the shipped one)")
    ap.add_argument("--synthetic", default=None, help="pretraining dataset replayed")
    ap.add_argument("--out", default="out/finetune_transfer", help="fine-tuned model folder")
    ap.add_argument("--oof-cache", default="out/out_of_family_cache")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    ap.add_argument("--json", default=None, help="write the result here")
    args = parse_with_quick(ap, argv, QUICK)
    if args.variants and not args.resimulate:
        ap.error("--variants needs --resimulate")
    if args.finetune_seed == args.oof_seed:
        ap.error("--finetune-seed must differ from --oof-seed: the scored cameras are held out")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from plato_cnn.nn.card import default_model_dir
    from plato_cnn.pipelines.finetune import FinetuneConfig, finetune
    from plato_cnn.reader import read_campaign

    base = str(args.model or default_model_dir())
    t0 = time.perf_counter()
    ft = _nodal(args.oof_cache, args.finetune_cameras, args.finetune_seed, args.workers)
    held = _nodal(args.oof_cache, args.oof_cameras, args.oof_seed, args.workers)
    t_emul = time.perf_counter() - t0
    t1 = time.perf_counter()
    reports = None
    if args.labels == "forward":
        jobs = [dict(i=i, dir=str(d)) for i, (d, _) in enumerate(ft)]
        reports = map_jobs(_forward_report, jobs, args.workers)
    t_fit = time.perf_counter() - t1
    frames = []
    for d, _ in ft:
        fr = read_campaign(d)
        frames.append(fr.select(fr.usable))
    synthetic = None
    if args.synthetic:
        from plato_cnn.nn.data import ShardFocusDataset

        synthetic = ShardFocusDataset(args.synthetic)
    t2 = time.perf_counter()
    cfg = FinetuneConfig(epochs=args.epochs, seed=args.seed, labels=args.labels,
                         resimulate=args.resimulate, patience=args.patience,
                         resim_variants=args.variants, variant_share=args.variant_share,
                         cv_sigma=not args.no_cv_sigma)  # fmt: skip
    summary = finetune(frames, args.out, base, cfg, synthetic, forward_reports=reports)
    t_train = time.perf_counter() - t2
    t3 = time.perf_counter()
    jobs = [
        dict(i=i, dir=str(d), camera=tr["camera"], truth=tr["bft_degC"], base=base,
             tuned=args.out)
        for i, (d, tr) in enumerate(held)
    ]  # fmt: skip
    evals = map_jobs(_score, jobs, args.workers)
    t_score = time.perf_counter() - t3
    floor = s_floor(held)
    fw_err = None
    if reports is not None:
        fw_err = [r["bft_degC"] - tr["bft_degC"] for r, (_, tr) in zip(reports, ft, strict=True)]
    result = dict(
        machine=machine_info(),
        command=script_argv(),
        config=vars(args),
        finetune_cameras=[tr["camera"] for _, tr in ft],
        forward_errors_on_finetune_cameras_degC=fw_err,
        finetune_summary={k: summary[k] for k in ("history", "before", "after")},
        seconds=dict(emulation=t_emul, forward_fits=t_fit, finetune=t_train, scoring=t_score),
        rows=build_rows(evals),
        one_plateau_s_floor=floor,
        per_camera=evals,
    )
    print(
        f"fine-tuned on {args.finetune_cameras} nodal cameras (seed {args.finetune_seed}, "
        f"labels {args.labels}); scored on {args.oof_cameras} others (seed {args.oof_seed}); "
        f"emulation {t_emul:.0f} s, forward fits {t_fit:.0f} s, fine-tuning {t_train:.0f} s, "
        f"scoring {t_score:.0f} s\n"
        f"one plateau ({floor['plateau_degC']:g} degC) knowing all but s (s = "
        f"{floor['s_prior_um_per_degC']:g} um/degC assumed): RMS {floor['rms_degC']:.3f} degC, "
        f"median |error| {floor['median_abs_degC']:.3f} degC (a floor under every 1-plateau row)"
    )
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
