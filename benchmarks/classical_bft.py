"""Accuracy of the classical best-focus estimators on emulated cameras.

For ``--cameras`` random cameras (random perturbations, true T_BF uniform in [-84, -72] degC)
an emulated campaign (format v1, small: ``--fields`` x ``--dithers`` x ``--frames``) is
written, read back with :func:`plato_cnn.reader.read_campaign` and fed to each estimator
with 5, 4 and 3 plateaux.  Printed and saved: RMS error against the truth, mean bias, the
calibration of sigma (fraction of cameras with |error| <= sigma), beside a prior-only row
that always answers the middle of the range.

Plateau subsets: 5 = -90..-70 every 5 degC; 4 = -85..-70 (covers the truth range);
3 = -90, -80, -70.

Usage::

    python -m benchmarks.classical_bft [--quick] --json out/classical_bft.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/classical_bft.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    error_stats,
    machine_info,
    markdown_table,
    parse_with_quick,
    percent,
    report,
)
from plato_sim.truth.bestfocus import TRUTH_N_SUB  # noqa: E402
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

PLATEAUX = (-90.0, -85.0, -80.0, -75.0, -70.0)
SUBSETS = {5: PLATEAUX, 4: (-85.0, -80.0, -75.0, -70.0), 3: (-90.0, -80.0, -70.0)}
TRUTH_RANGE_DEGC = (-84.0, -72.0)
#: ``--quick``: fewer and smaller campaigns (their own folders in the same cache)
QUICK_CAMPAIGNS = dict(cameras=8, fields=20, dithers=3)
#: (label, fit, EEF variant, plateaux)
ROWS = [
    ("test houses: cubic (baseline)", "cubic", "2x2", 5),
    ("test houses: quartic", "quartic", "2x2", 5),
    ("test houses: cubic, 8x8 EEF", "cubic", "8x8", 5),
    ("test houses: cubic, 3x3 EEF", "cubic", "3x3", 5),
    ("test houses: cubic", "cubic", "2x2", 4),
    ("test houses: quadratic", "quadratic", "2x2", 3),
    ("improved: gauss, mean EEF", "gauss", "2x2", 5),
    ("improved: gauss, mean EEF", "gauss", "2x2", 4),
    ("improved: gauss, mean EEF", "gauss", "2x2", 3),
]


def _emulate(job: dict) -> dict:
    pin_one_thread()
    from plato_sim.scenes.ground_test import emulate_or_load

    return emulate_or_load(
        job["dir"],
        camera_name=f"bench{job['i']:03d}",
        bft_degC=job["bft"],
        plateaux_degC=PLATEAUX,
        n_fields=job["fields"],
        n_dithers=job["dithers"],
        frames_per_dither=job["frames"],
        window_px=job["window"],
        seed=job["seed"],
        perturbation_strength=1.0,
        n_sub_truth=job["n_sub_truth"],
    )


def _evaluate(job: dict) -> dict:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from plato_cnn.classical import estimate_bft
    from plato_cnn.metrics import frame_eef
    from plato_cnn.reader import read_campaign

    t0 = time.perf_counter()
    frames = read_campaign(job["dir"])
    t_read = time.perf_counter() - t0
    eefs = {v: frame_eef(frames.stamps, v) for v in ("2x2", "3x3", "8x8")}
    out = []
    for k, (_label, fit, variant, n_pl) in enumerate(ROWS):
        m = frames.plateau_mask(SUBSETS[n_pl])
        try:
            r = estimate_bft(
                frames.select(m), fit, variant, eefs[variant][m], seed=job["i"], n_boot=job["boot"]
            )
            out.append({"row": k, "bft": r.bft_degC, "sigma": r.sigma_degC, "edge": r.at_edge})
        except Exception as exc:  # counted as a failure of that row
            out.append({"row": k, "error": f"{type(exc).__name__}: {exc}"})
    return {"i": job["i"], "truth": job["truth"], "results": out, "read_s": t_read}


def add_campaign_arguments(ap: argparse.ArgumentParser) -> None:
    """The emulated-camera set shared by the accuracy benchmarks (classical_bft, cnn_bft)."""
    ap.add_argument("--cameras", type=int, default=50)
    ap.add_argument("--fields", type=int, default=40)
    ap.add_argument("--dithers", type=int, default=5)
    ap.add_argument("--frames", type=int, default=2, help="frames per dither")
    ap.add_argument("--window", type=int, default=48)
    ap.add_argument(
        "--n-sub-truth",
        type=int,
        default=TRUTH_N_SUB,
        help="sub-pixel grid (n x n) of the truth's expected EEF (3 is off by up to 0.6 degC)",
    )
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="out/classical_bft_cache", help="emulated campaigns")
    ap.add_argument("--json", default=None, help="write rows and machine info here")
    ap.add_argument("--quick", action="store_true", help=f"small: {QUICK_CAMPAIGNS}")


def campaign_jobs(args: argparse.Namespace, **extra) -> list[dict]:
    """One job per camera: its campaign folder in the cache, true T_BF and seeds."""
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    bfts = rng.uniform(*TRUTH_RANGE_DEGC, args.cameras)
    return [
        dict(
            i=i,
            dir=str(
                cache
                / f"cam{i:03d}_d{args.dithers}x{args.frames}_f{args.fields}_n{args.n_sub_truth}"
            ),
            bft=float(bfts[i]),
            seed=args.seed * 1000 + i,
            fields=args.fields,
            dithers=args.dithers,
            frames=args.frames,
            window=args.window,
            n_sub_truth=args.n_sub_truth,
            **extra,
        )
        for i in range(args.cameras)
    ]


def prior_only_stats(truth: np.ndarray) -> dict:
    """:func:`error_stats` of always answering the middle of the truth range (sigma: its SD)."""
    n = len(truth)
    mid = 0.5 * sum(TRUTH_RANGE_DEGC)
    prior_sigma = (TRUTH_RANGE_DEGC[1] - TRUTH_RANGE_DEGC[0]) / np.sqrt(12.0)
    return error_stats(np.full(n, mid), np.full(n, prior_sigma), truth)


def build_rows(
    evals: list[dict], heads: list[dict], counts: dict[str, str], prior_head: dict
) -> list[dict]:
    """One row of statistics per estimator over cameras, then the prior-only row.

    ``evals[c]["results"][k]`` is camera c's answer for estimator k (``bft``, ``sigma`` or
    ``error``); row k starts with ``heads[k]``; ``counts`` maps a row key to the result flag
    it counts (e.g. ``at_edge`` -> ``edge``).
    """
    truth = np.asarray([e["truth"] for e in evals])
    rows = []
    for k, head in enumerate(heads):
        res = [ev["results"][k] for ev in evals]
        fails = [r["error"] for r in res if "error" in r]
        est = [r.get("bft", np.nan) for r in res]
        sig = [r.get("sigma", np.nan) for r in res]
        rows.append(
            head
            | error_stats(est, sig, truth)
            | dict(failures=len(fails))
            | {key: sum(bool(r.get(flag)) for r in res) for key, flag in counts.items()}
            | dict(first_failure=fails[0] if fails else None)
        )
    zeros = dict(failures=0) | dict.fromkeys(counts, 0) | dict(first_failure=None)
    rows.append(prior_head | prior_only_stats(truth) | zeros)
    return rows


def markdown(result: dict) -> str:
    """The rows of a result (as written to ``--json``) as a Markdown table."""
    cols = [
        ("estimator", "estimator", ""),
        ("fit", "fit", ""),
        ("eef_variant", "EEF", ""),
        ("plateaux", "plateaux", "d"),
        ("rms_error_degC", "RMS error (degC)", ".2f"),
        ("bias_degC", "bias (degC)", "+.2f"),
        ("max_abs_error_degC", "max abs (degC)", ".2f"),
        ("median_sigma_degC", "median sigma (degC)", ".2f"),
        ("frac_within_sigma", "|error| <= sigma", percent),
        ("n_cameras", "cameras", "d"),
        ("failures", "failures", "d"),
        ("at_edge", "at edge", "d"),
    ]
    return markdown_table(result["rows"], cols)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_campaign_arguments(ap)
    ap.add_argument("--boot", type=int, default=100, help="bootstrap draws (improved)")
    args = parse_with_quick(ap, argv, QUICK_CAMPAIGNS)
    jobs = campaign_jobs(args, boot=args.boot)
    from plato_sim.scenes.ground_test import truth_path

    n_cached = sum(truth_path(j["dir"]).is_file() for j in jobs)
    t0 = time.perf_counter()
    truths = map_jobs(_emulate, jobs, args.workers)
    t_emul = time.perf_counter() - t0
    for j, tr in zip(jobs, truths, strict=True):
        j["truth"] = tr["bft_degC"]
    t1 = time.perf_counter()
    evals = map_jobs(_evaluate, jobs, args.workers)
    t_eval = time.perf_counter() - t1

    heads = [dict(estimator=lb, fit=f, eef_variant=v, plateaux=n) for lb, f, v, n in ROWS]
    prior = dict(estimator="prior only (middle of the range)", fit="-", eef_variant="-")
    rows = build_rows(evals, heads, dict(at_edge="edge"), prior | dict(plateaux=0))
    info = dict(
        machine=machine_info(),
        config=vars(args),
        plateau_subsets={str(k): list(v) for k, v in SUBSETS.items()},
        truth_range_degC=list(TRUTH_RANGE_DEGC),
        seconds_emulation=t_emul,
        campaigns_cached=n_cached,
        seconds_evaluation=t_eval,
        rows=rows,
        per_camera=[dict(i=e["i"], truth_degC=e["truth"], results=e["results"]) for e in evals],
    )
    print(
        f"{len(evals)} cameras, {args.fields} fields x {args.dithers} dithers x {args.frames} "
        f"frames, window {args.window} px; emulation {t_emul:.0f} s ({n_cached} campaigns "
        f"were cached), evaluation {t_eval:.0f} s"
    )
    report(info, markdown(info), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
