"""Accuracy of the CNN best-focus estimate against the classical one, on the same files.

Cameras: the emulated campaigns of ``benchmarks/classical_bft.py`` (same seed, same cache):
random camera perturbations drawn by the emulator, true T_BF uniform in [-84, -72] degC.
None of them is in the pretraining set (whose cameras come from the dataset's own seed
stream): evaluation holds out whole cameras.

Plateau subsets: 5 = -90..-70 every 5 degC; 3 = -90, -80, -70; 2 = -85, -75; 1 = -80.
Rows: the test houses' cubic (5 plateaux, the baseline), their quadratic (3), the improved
classical estimator, the CNN (``--model``, default the shipped one) with 5, 3, 2 and 1
plateaux, and the prior-only answer (middle of the range).  RMS error, bias, median sigma
and the fraction of cameras with |error| <= sigma (target 60-80 %).

Usage::

    python benchmarks/cnn_bft.py --json out/cnn_bft.json [--model DIR] [--cameras 50]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classical_bft import (  # noqa: E402
    TRUTH_RANGE_DEGC,
    _emulate,
    add_campaign_arguments,
    campaign_jobs,
)

from plato_cnn.calibrate import PLATEAU_SUBSETS as SUBSETS  # noqa: E402  (one definition)

#: (label, method, fit, plateaux)
ROWS = [
    ("classical: test houses' cubic (baseline)", "eef", "cubic", 5),
    ("classical: test houses' quadratic", "eef", "quadratic", 3),
    ("classical: improved (gauss)", "eef", "gauss", 5),
    ("classical: improved (gauss)", "eef", "gauss", 3),
    ("CNN + thermal-model fit", "cnn", "-", 5),
    ("CNN + thermal-model fit", "cnn", "-", 3),
    ("CNN + thermal-model fit", "cnn", "-", 2),
    ("CNN + thermal-model fit", "cnn", "-", 1),
]


def _evaluate(job: dict) -> dict:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from plato_cnn.campaign import read_campaign
    from plato_cnn.classical import estimate_bft
    from plato_cnn.metrics import frame_eef
    from plato_cnn.predict import cnn_bft

    t0 = time.perf_counter()
    frames = read_campaign(job["dir"])
    frames = frames.select(frames.usable)
    e = frame_eef(frames.stamps, "2x2")
    temps = np.asarray([o.temperature_mean_degC for o in frames.observations])
    ids = [o.obsid for o in frames.observations]
    out = []
    for k, (_label, method, fit, n_pl) in enumerate(ROWS):
        want = [ids[int(np.argmin(np.abs(temps - t)))] for t in SUBSETS[n_pl]]
        m = np.isin(frames.obsid, want)
        try:
            if method == "eef":
                r = estimate_bft(frames.select(m), fit, "2x2", e[m], seed=job["i"], n_boot=100)
                out.append({"row": k, "bft": r.bft_degC, "sigma": r.sigma_degC})
            else:
                f, _ = cnn_bft(frames.select(m), job["model"], n_boot=100, seed=job["i"])
                out.append(
                    {
                        "row": k,
                        "bft": f.t_bf_degC,
                        "sigma": f.sigma_degC,
                        "ambiguous": f.sign_ambiguous,
                    }
                )
        except Exception as exc:  # counted as a failure of that row
            out.append({"row": k, "error": f"{type(exc).__name__}: {exc}"})
    return {"i": job["i"], "truth": job["truth"], "results": out, "s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    add_campaign_arguments(ap)  # the same cameras, seeds and cache as classical_bft.py
    args = ap.parse_args(argv)
    jobs = campaign_jobs(args, boot=100, model=args.model)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        truths = pool.map(_emulate, jobs, chunksize=1)
    t_emul = time.perf_counter() - t0
    for j, tr in zip(jobs, truths, strict=True):
        j["truth"] = tr["t_bf_degC"]
    t1 = time.perf_counter()
    with ctx.Pool(args.workers) as pool:
        evals = pool.map(_evaluate, jobs, chunksize=1)
    t_eval = time.perf_counter() - t1

    truth = np.asarray([ev["truth"] for ev in evals])
    rows = []
    for k, (label, method, fit, n_pl) in enumerate(ROWS):
        res = [ev["results"][k] for ev in evals]
        ok = np.asarray(["error" not in r for r in res])
        est = np.asarray([r.get("bft", np.nan) for r in res])
        sig = np.asarray([r.get("sigma", np.nan) for r in res])
        err = est[ok] - truth[ok]
        fails = [r["error"] for r in res if "error" in r]
        rows.append(
            dict(
                estimator=label,
                method=method,
                fit=fit,
                plateaux=n_pl,
                n_cameras=int(ok.sum()),
                failures=len(fails),
                rms_error_degC=float(np.sqrt(np.mean(err**2))) if err.size else None,
                bias_degC=float(np.mean(err)) if err.size else None,
                median_sigma_degC=float(np.median(sig[ok])) if err.size else None,
                frac_within_sigma=float(np.mean(np.abs(err) <= sig[ok])) if err.size else None,
                sign_ambiguous=int(sum(bool(r.get("ambiguous")) for r in res)),
                first_failure=fails[0] if fails else None,
            )
        )
    mid = 0.5 * sum(TRUTH_RANGE_DEGC)
    prior_sigma = (TRUTH_RANGE_DEGC[1] - TRUTH_RANGE_DEGC[0]) / np.sqrt(12.0)
    perr = mid - truth
    rows.append(
        dict(
            estimator="prior only (middle of the range)",
            method="-",
            fit="-",
            plateaux=0,
            n_cameras=int(truth.size),
            failures=0,
            rms_error_degC=float(np.sqrt(np.mean(perr**2))),
            bias_degC=float(np.mean(perr)),
            median_sigma_degC=float(prior_sigma),
            frac_within_sigma=float(np.mean(np.abs(perr) <= prior_sigma)),
            sign_ambiguous=0,
            first_failure=None,
        )
    )
    print(
        f"{len(evals)} held-out cameras, {args.fields} fields x {args.dithers} dithers x "
        f"{args.frames} frames; emulation {t_emul:.0f} s, evaluation {t_eval:.0f} s"
    )
    print(f"{'estimator':42s} {'pl':>2s} {'RMS':>6s} {'bias':>6s} {'med.sig':>7s} {'|e|<=s':>6s} "
          f"{'fail':>4s} {'ambig':>5s}")  # fmt: skip

    def f(v, w=6):
        return f"{v:{w}.2f}" if v is not None else " " * (w - 1) + "-"

    for r in rows:
        print(
            f"{r['estimator']:42s} {r['plateaux']:2d} {f(r['rms_error_degC'])} "
            f"{f(r['bias_degC'])} {f(r['median_sigma_degC'], 7)} {f(r['frac_within_sigma'])} "
            f"{r['failures']:4d} {r['sign_ambiguous']:5d}"
        )
    if args.json:
        import torch

        info = dict(
            machine=dict(
                platform=platform.platform(),
                processor=platform.processor(),
                cpu_count=os.cpu_count(),
                python=sys.version.split()[0],
                torch=torch.__version__,
            ),
            config=vars(args),
            plateau_subsets={str(k): list(v) for k, v in SUBSETS.items()},
            seconds_emulation=t_emul,
            seconds_evaluation=t_eval,
            rows=rows,
            per_camera=[dict(i=e["i"], truth_degC=e["truth"], results=e["results"]) for e in evals],
        )
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(info, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
