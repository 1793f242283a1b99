"""The field head fine-tuned on 4 cameras of an unseen family, scored on 50 others of it.

The family is the nodal one (:mod:`plato_sim.optics.family_nodal`), which neither the shipped
FocusNet, nor the shipped field head, nor any calibration has seen.  ``--finetune-cameras``
cameras of it (their own seed, ``--finetune-seed``) are fitted with the forward method
(``field_focus``; kept next to their campaigns, as ``benchmarks/finetune_transfer.py`` keeps
them); the field head is fine-tuned on cameras like the fitted ones
(:func:`plato_cnn.pipelines.field_head_finetune.finetune_field_head`: physics labels, no
true T_BF), its systematic term measured on the fine-tuning cameras themselves,
leave-one-camera-out (:func:`plato_cnn.pipelines.field_head_finetune.cross_validated_terms`,
3 fine-tuning cameras or more) and, on a copy of the same weights, on the calibration families
(:func:`plato_cnn.pipelines.field_head.calibrate_field_head`, never the nodal family), and
the shipped head and the fine-tuned one with each sigma are scored on ``--oof-cameras`` other
nodal cameras (``--oof-seed``: the out-of-family benchmark's cameras) with 5, 3, 2 and 1
plateaux (:data:`plato_cnn.pipelines.calibrate.PLATEAU_SUBSETS`).

Usage::

    python -m benchmarks.field_head_transfer [--quick] [--variants N] [--out DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/field_head_transfer.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    parse_with_quick,
    report,
    script_argv,
)
from benchmarks.finetune_transfer import _forward_report, _nodal, build_rows  # noqa: E402
from benchmarks.finetune_transfer import markdown as _markdown  # noqa: E402
from plato_cnn.cli import calibration_set_arg  # noqa: E402
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS as SUBSETS  # noqa: E402
from plato_cnn.pipelines.field_head import CALIBRATION_SETS  # noqa: E402
from plato_cnn.pipelines.field_head_finetune import (  # noqa: E402
    FOCI_MODES,
    LR_SCHEDULES,
    FieldHeadFinetuneConfig,
)
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

log = logging.getLogger(__name__)

QUICK = dict(oof_cameras=4, variants=2, steps=200, calibrate=[("design", 1, 4)])
PLATEAUX = (5, 3, 2, 1)


def _score(job: dict) -> dict:
    """Every head on one held-out camera, every plateau count (features read once per kind)."""
    pin_one_thread()
    from plato_cnn.field_bft import estimate_from_features, field_head_inputs
    from plato_cnn.nn.field_head import load_field_head
    from plato_cnn.reader import read_campaign

    fr = read_campaign(job["dir"])
    fr = fr.select(fr.usable)
    feats_for = {}  # read once per kind of input (with or without the image moments)
    out = []
    for name, head_dir in job["heads"].items():
        head, card = load_field_head(head_dir)
        if head.config.moments not in feats_for:
            feats_for[head.config.moments] = field_head_inputs(fr, None, head_dir)[3]
        feats = feats_for[head.config.moments]
        for n_pl in PLATEAUX:
            m = fr.plateau_mask(SUBSETS[n_pl])
            try:
                r = estimate_from_features(fr.select(m), feats[m], head, card.systematic_for)
                out.append(dict(head=name, plateaux=n_pl, bft=r["bft_degC"], sigma=r["sigma_degC"]))
            except Exception as exc:  # counted as a failure of that row
                out.append(dict(head=name, plateaux=n_pl, error=f"{type(exc).__name__}: {exc}"))
    return {"i": job["i"], "camera": job["camera"], "truth": job["truth"], "results": out}


def markdown(result: dict) -> str:
    """The rows as a table, one per head and plateau count."""
    return _markdown(result, ("head", "field head"))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finetune-cameras", type=int, default=4, help="cameras fine-tuned on")
    ap.add_argument("--finetune-seed", type=int, default=2, help="their evaluation-set seed")
    ap.add_argument("--oof-cameras", type=int, default=50, help="held-out cameras scored")
    ap.add_argument("--oof-seed", type=int, default=1, help="their evaluation-set seed")
    ap.add_argument("--variants", type=int, default=24, help="cameras like each fitted one")
    ap.add_argument("--steps", type=int, default=1500, help="fine-tuning steps")
    ap.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate")
    ap.add_argument("--l2sp", type=float, default=1e-2, help="pull towards the shipped head")
    ap.add_argument(
        "--own-repeats",
        type=int,
        default=0,
        help="the fitted cameras' own series join the variants', each drawn as often as this "
        "many series (0: the variants alone)",
    )
    ap.add_argument(
        "--foci",
        choices=FOCI_MODES,
        default=FieldHeadFinetuneConfig.foci,
        help="the variants' foci: around best focus in um (focus) or a test design's TRP1 "
        "window with the T_BF anywhere in it (campaign)",
    )
    ap.add_argument(
        "--draw-window-degC",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="fine-tuning reads half of the series within a TRP1 window of width LO-HI degC "
        "holding the field's focus (as plato-cnn field-head --window-degC)",
    )
    ap.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=FieldHeadFinetuneConfig.lr_schedule,
        help="the fine-tuning's learning rate: constant, or cosine down to 0 (a trial)",
    )
    ap.add_argument(
        "--rehearsal",
        default=None,
        metavar="DS",
        help="the starting head's training dataset: about half of every fine-tuning batch "
        "drawn from its series (rehearsal: a trial, not the default; docs/cnn.md section 7)",
    )
    ap.add_argument(
        "--calibrate",
        nargs="+",
        type=calibration_set_arg,
        default=list(CALIBRATION_SETS),
        help="calibration sets FAMILY:SEED:CAMERAS of the fine-tuned head's systematic term",
    )
    ap.add_argument(
        "--field-head",
        default=None,
        help="the head to fine-tune (default: the shipped one; scored beside it)",
    )
    ap.add_argument("--out", default="out/field_head_transfer", help="variants and tuned head")
    ap.add_argument("--oof-cache", default="out/out_of_family_cache")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="variants' and fine-tuning seed")
    ap.add_argument("--json", default=None, help="write the result here")
    args = parse_with_quick(ap, argv, QUICK)
    if args.finetune_seed == args.oof_seed:
        ap.error("--finetune-seed must differ from --oof-seed: the scored cameras are held out")
    return args


# Long because: one run (forward fits, fine-tuning, calibration, scoring) whose paths and
# timings all go into one result record.
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from plato_cnn.nn.field_head import default_field_head_dir
    from plato_cnn.pipelines.field_head import calibrate_field_head, calibration_campaigns
    from plato_cnn.pipelines.field_head_finetune import finetune_field_head
    from plato_cnn.reader import read_campaign

    out = Path(args.out)
    own = f"_own{args.own_repeats}" if args.own_repeats else ""
    foci = "" if args.foci == FieldHeadFinetuneConfig.foci else f"_{args.foci}"
    win = args.draw_window_degC
    foci += "" if win is None else f"_win{win[0]:g}-{win[1]:g}"
    start = "" if args.field_head is None else f"_from_{Path(args.field_head).name}"
    start += "" if args.rehearsal is None else f"_rehearse_{Path(args.rehearsal).name}"
    start += (
        "" if args.lr_schedule == FieldHeadFinetuneConfig.lr_schedule else f"_{args.lr_schedule}"
    )
    tuned = out / f"head_v{args.variants}_st{args.steps}_s{args.seed}{own}{foci}{start}"
    t0 = time.perf_counter()
    ft = _nodal(args.oof_cache, args.finetune_cameras, args.finetune_seed, args.workers)
    held = _nodal(args.oof_cache, args.oof_cameras, args.oof_seed, args.workers)
    t_emul = time.perf_counter() - t0
    t1 = time.perf_counter()
    jobs = [dict(i=i, dir=str(d)) for i, (d, _) in enumerate(ft)]
    reports = map_jobs(_forward_report, jobs, args.workers)
    t_fit = time.perf_counter() - t1
    t2 = time.perf_counter()
    cfg = FieldHeadFinetuneConfig(variants=args.variants, steps=args.steps, lr=args.lr,
                                  l2sp=args.l2sp, seed=args.seed,
                                  own_repeats=args.own_repeats, foci=args.foci,
                                  draw_window_degC=None if win is None else tuple(win),
                                  rehearsal_dataset=args.rehearsal,
                                  lr_schedule=args.lr_schedule)  # fmt: skip
    frames = [read_campaign(d) for d, _ in ft]
    frames = [fr.select(fr.usable) for fr in frames]
    summary = finetune_field_head(reports, tuned, out / "variants", head_dir=args.field_head,
                                  cfg=cfg, workers=args.workers,
                                  frames_list=frames if len(frames) >= 3 else None)  # fmt: skip
    t_train = time.perf_counter() - t2
    t3 = time.perf_counter()
    # the same weights, their sigma measured on the calibration families instead
    tuned_cal = tuned.with_name(tuned.name + "_calibrated")
    shutil.rmtree(tuned_cal, ignore_errors=True)
    shutil.copytree(tuned, tuned_cal)
    campaigns = calibration_campaigns(args.oof_cache, args.calibrate, args.workers)
    calib = calibrate_field_head(tuned_cal, campaigns)
    t_cal = time.perf_counter() - t3
    t4 = time.perf_counter()
    own_sigma = "leave-one-camera-out" if "cross_validation" in summary else "the shipped head's"
    heads = {"shipped": str(default_field_head_dir())}
    if args.field_head is not None:
        heads["start"] = str(args.field_head)
    heads |= {
        f"fine-tuned, sigma: {own_sigma}": str(tuned),
        "fine-tuned, sigma: calibration families": str(tuned_cal),
    }
    jobs = [dict(i=i, dir=str(d), camera=tr["camera"], truth=tr["bft_degC"], heads=heads)
            for i, (d, tr) in enumerate(held)]  # fmt: skip
    evals = map_jobs(_score, jobs, args.workers)
    t_score = time.perf_counter() - t4
    fw_err = [r["bft_degC"] - tr["bft_degC"] for r, (_, tr) in zip(reports, ft, strict=True)]
    result = dict(
        machine=machine_info(),
        command=script_argv(),
        config=vars(args),
        finetune_cameras=[tr["camera"] for _, tr in ft],
        forward_errors_on_finetune_cameras_degC=fw_err,
        finetune_summary=summary,
        calibration={k: v["systematic_sigma_degC"] for k, v in calib["per_count"].items()},
        cross_validation={
            k: v["systematic_sigma_degC"] for k, v in summary.get("cross_validation", {}).items()
        },  # fmt: skip
        seconds=dict(
            emulation=t_emul,
            forward_fits=t_fit,
            finetune=t_train,
            calibration=t_cal,
            scoring=t_score,
        ),  # fmt: skip
        rows=build_rows(evals, tuple(heads), key="head"),
        per_camera=evals,
    )
    print(
        f"field head fine-tuned on {args.finetune_cameras} nodal cameras (seed "
        f"{args.finetune_seed}, {args.variants} variants each); scored on {args.oof_cameras} "
        f"others (seed {args.oof_seed}); forward fits {t_fit:.0f} s, fine-tuning {t_train:.0f} "
        f"s, calibration {t_cal:.0f} s, scoring {t_score:.0f} s"
    )
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
