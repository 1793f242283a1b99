"""How far fine-tuning can take the field head on an unseen family: tuned on its true cameras.

A diagnostic, not a product path.  ``benchmarks/field_head_transfer.py`` fine-tunes the field
head on cameras *like* 4 forward-fitted cameras of the nodal family (what a test house can
make) and stays above the accuracy sought.  Two things may hold it there: the fine-tuning
data (4 cameras, variants that carry what the forward fit measured and no more), or the head
itself on the frozen FocusNet's features (what the network under it does not tell apart).
This bench separates them: the shipped head is fine-tuned, with the transfer bench's settings,
on the nodal family's *own* cameras (another set than the scored one), imaged through focus
by the nodal emulator itself (their optics, spectrum, detector and vignetting exactly as the
scored cameras have them; 8 foci over +-200 um of thermal focal shift around each camera's
best focus and 4 dithered frames per field position and focus, as the transfer bench's
variants), each field position labelled exactly (the TRP1 at which it reaches its
EEF-optimal focus with the camera's own detected spectrum and diffusion: the definition of
the truth's T_BF per field).  No test house has such labels.  With ``--cameras 4 12 48`` the
same set's first 4, 12 and 48 cameras give three heads: how the error on the 50 scored
cameras falls with the number of the family's cameras shown, and where it stops.

Scored with the transfer bench's scorer on the out-of-family bench's 50 nodal cameras, with
5, 3, 2 and 1 plateaux.  Only the RMS and bias are the measure: the tuned heads keep the
shipped head's sigma (no calibration here).

Usage::

    python -m benchmarks.field_head_ceiling [--quick] [--cameras 4 12 48] [--json OUT]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/field_head_ceiling.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_info, parse_with_quick, report, script_argv  # noqa: E402
from benchmarks.classical_bft import TRUTH_RANGE_DEGC  # noqa: E402
from benchmarks.field_head_transfer import _score, markdown  # noqa: E402
from benchmarks.finetune_transfer import _nodal, build_rows  # noqa: E402
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

log = logging.getLogger(__name__)

QUICK = dict(cameras=[2], oof_cameras=4, steps=200)
#: First entropy word of the foci drawn for the ceiling's through-focus campaigns.
CEILING_TAG = 0xCE11


def _jobs(n: int, seed: int, out: Path, cfg, span_degC: float | None = None) -> list[dict]:
    """Emulation jobs of the set's first ``n`` nodal cameras, each imaged through focus: foci
    over +-``cfg.focus_half_range_um`` of thermal focal shift, or over +-``span_degC`` of TRP1
    whatever the camera's ``s``."""
    from plato_cnn.pipelines.field_head_finetune import foci_degC
    from plato_sim.scenes.out_of_family import nodal_camera_job

    jobs = []
    for i in range(n):
        job = nodal_camera_job(seed, i, TRUTH_RANGE_DEGC)
        rng = np.random.default_rng(np.random.SeedSequence([CEILING_TAG, seed, i]))
        s = job["camera"].thermal.s_um_per_degC
        if span_degC is not None:  # the same TRP1 span for every s
            s = cfg.focus_half_range_um / span_degC
        foci = foci_degC({"bft_degC": job["bft_degC"]}, s, cfg, rng)
        job["design"] = replace(job["design"], plateaux_degC=foci, n_dithers=cfg.dithers,
                                frames_per_dither=1)  # fmt: skip
        span = "" if span_degC is None else f"_span{span_degC:g}C"
        job.update(dir=str(out / f"nodal_tf_s{seed}_c{i:03d}{span}"), name=f"nodaltf{i:03d}",
                   n_sub_truth=4)  # fmt: skip
        jobs.append(job)
    return jobs


def _labelled(job: dict) -> dict:
    """Per field position of one emulated camera: the TRP1 of its EEF-optimal focus (degC),
    with the camera's detected spectrum and diffusion, and its thermal zero as emulated."""
    pin_one_thread()
    from plato_sim.truth.bestfocus import field_best_focus_um

    cam = job["camera"].with_t0(job["t0_degC"])
    theta, phi = np.asarray(job["theta_deg"]), np.asarray(job["phi_deg"])
    best, _ = field_best_focus_um(cam.optics, theta, phi, spectrum=cam.spectrum(job["n_wl"]),
                                  engine=cam.engine())  # fmt: skip
    return {"i": job["i"], "t_f": np.asarray(cam.thermal.temperature_degC(best), float)}


def _series(done: list, jobs: list[dict], workers: int):
    """The cameras' through-focus series as the shipped head reads them, labelled exactly."""
    from plato_cnn.nn.card import default_model_dir, load_model
    from plato_cnn.nn.field_head import default_field_head_dir, load_field_head
    from plato_cnn.pipelines.field_head import SeriesSet
    from plato_cnn.pipelines.field_head_finetune import read_series
    from plato_cnn.reader import read_campaign

    net, _ = load_model(default_model_dir(), "cpu")
    moments = load_field_head(default_field_head_dir())[0].config.moments  # what it reads
    parts, lab_jobs = [], []
    for (folder, truth), job in zip(done, jobs, strict=True):
        fr = read_campaign(folder)
        ser = read_series(fr.select(fr.usable), net, "cpu", moments)
        keep = ser.mask.all(axis=1)
        parts.append((ser, keep))
        lab_jobs.append(dict(i=job["i"], camera=job["camera"], t0_degC=truth["thermal"]["t0_degC"],
                             theta_deg=ser.theta_deg[keep], phi_deg=ser.phi_deg[keep],
                             n_wl=job["design"].n_wavelengths))  # fmt: skip
    labels = map_jobs(_labelled, lab_jobs, workers, desc="field labels")
    return SeriesSet(
        features=np.concatenate([s.features[k] for s, k in parts]).astype(np.float32),
        temperature_degC=np.concatenate([s.temperature_degC[k] for s, k in parts]),
        t_best_degC=np.concatenate([lab["t_f"] for lab in labels]),
        camera_id=np.concatenate([np.full(int(k.sum()), j) for j, (_, k) in enumerate(parts)]),
    )


def _tuned(series, n: int, cfg, out: Path, tag: str = "") -> str:
    """The shipped head fine-tuned on the series of the first ``n`` cameras (saved)."""
    from plato_cnn.nn.card import default_model_dir
    from plato_cnn.nn.field_head import (
        default_field_head_dir,
        load_field_head,
        network_digest,
        save_field_head,
    )
    from plato_cnn.pipelines.field_head_finetune import subset_series, tune_head

    head, card = load_field_head(default_field_head_dir(), network_digest(default_model_dir()))
    losses = tune_head(head, [(subset_series(series, series.camera_id < n), 1)], cfg)
    card.training = {**card.training, "ceiling": {"true_cameras": n, "losses": losses}}
    card.family_sigma_degC, card.family_calibration = {}, {}
    folder = out / f"head_true{n}_st{cfg.steps}_s{cfg.seed}{tag}"
    save_field_head(head, card, folder)
    return str(folder)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[4, 12, 48],
                    help="true cameras of the family tuned on (one head per count)")  # fmt: skip
    ap.add_argument("--ceiling-seed", type=int, default=5, help="their evaluation-set seed")
    ap.add_argument("--oof-cameras", type=int, default=50, help="held-out cameras scored")
    ap.add_argument("--oof-seed", type=int, default=1, help="their evaluation-set seed")
    ap.add_argument("--foci-span-degC", type=float, default=None,
                    help="foci over +- this TRP1 span (degC) for every camera, instead of "
                    "+-200 um of thermal focal shift (a span that follows 1/s)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=1500, help="fine-tuning steps")
    ap.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    ap.add_argument("--out", default="out/field_head_ceiling", help="campaigns and heads")
    ap.add_argument("--oof-cache", default="out/out_of_family_cache")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the result here")
    args = parse_with_quick(ap, argv, QUICK)
    if args.ceiling_seed in (args.oof_seed, 2):
        ap.error("--ceiling-seed must differ from the scored set's and the transfer bench's (2)")
    if min(args.cameras) < 1:
        ap.error("--cameras: at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from plato_cnn.nn.field_head import default_field_head_dir
    from plato_cnn.pipelines.field_head_finetune import FieldHeadFinetuneConfig
    from plato_sim.scenes.family_campaigns import emulate_family

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = FieldHeadFinetuneConfig(steps=args.steps, seed=args.seed)
    t0 = time.perf_counter()
    jobs = _jobs(max(args.cameras), args.ceiling_seed, out, cfg, args.foci_span_degC)
    tag = "" if args.foci_span_degC is None else f"_span{args.foci_span_degC:g}C"
    done = emulate_family(jobs, args.workers, desc="nodal through-focus campaigns")
    t_emul = time.perf_counter() - t0
    t1 = time.perf_counter()
    series = _series(done, jobs, args.workers)
    t_read = time.perf_counter() - t1
    t2 = time.perf_counter()
    heads = {"shipped": str(default_field_head_dir())}
    for n in sorted(set(args.cameras)):
        heads[f"fine-tuned on {n} true cameras"] = _tuned(series, n, cfg, out, tag)
    t_train = time.perf_counter() - t2
    t3 = time.perf_counter()
    held = _nodal(args.oof_cache, args.oof_cameras, args.oof_seed, args.workers)
    score_jobs = [dict(i=i, dir=str(d), camera=tr["camera"], truth=tr["bft_degC"], heads=heads)
                  for i, (d, tr) in enumerate(held)]  # fmt: skip
    evals = map_jobs(_score, score_jobs, args.workers)
    t_score = time.perf_counter() - t3
    result = dict(
        machine=machine_info(),
        command=script_argv(),
        config=vars(args),
        n_series=int(len(series.t_best_degC)),
        seconds=dict(
            emulation=t_emul, reading_and_labels=t_read, finetune=t_train, scoring=t_score
        ),  # fmt: skip
        rows=build_rows(evals, tuple(heads), key="head"),
        per_camera=evals,
    )
    print(
        f"field head fine-tuned on {sorted(set(args.cameras))} true nodal cameras (seed "
        f"{args.ceiling_seed}, {result['n_series']} series); scored on {args.oof_cameras} others "
        f"(seed {args.oof_seed}); emulation {t_emul:.0f} s, reading and labels {t_read:.0f} s, "
        f"fine-tuning {t_train:.0f} s, scoring {t_score:.0f} s"
    )
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
