"""Accuracy of the CNN best-focus estimate against the classical one, on the same files.

Cameras: the emulated campaigns of ``benchmarks/classical_bft.py`` (same seed, same cache):
random camera perturbations drawn by the emulator, true T_BF uniform in [-84, -72] degC.
None of them is in the pretraining set (whose cameras come from the dataset's own seed
stream): evaluation holds out whole cameras.

Plateau subsets: 5 = -90..-70 every 5 degC; 3 = -90, -80, -70; 2 = -85, -75; 1 = -80.
Rows: the test houses' cubic (5 plateaux, the baseline), their quadratic (3), the improved
classical estimator, the CNN (``--model``, default the shipped one) with 5, 3, 2 and 1
plateaux (with the model's plateau head, and without it as an ablation), the one-plateau
re-check, and the prior-only answer (middle of the range).  RMS error, bias,
median sigma and the fraction of cameras with |error| <= sigma (target 60-80 %).

Usage::

    python -m benchmarks.cnn_bft [--quick] --json out/cnn_bft.json [--model DIR] [--cameras 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/cnn_bft.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    parse_with_quick,
    percent,
    report,
)
from benchmarks.classical_bft import (  # noqa: E402
    QUICK_CAMPAIGNS,
    _emulate,
    add_campaign_arguments,
    build_rows,
    campaign_jobs,
)
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS as SUBSETS  # noqa: E402  (one definition)
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

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
    # a focus re-check: s taken from an earlier sweep of the same camera (here its 4 other
    # plateaux, fitted by the same network: s in the network's own scale), T_BF from one
    ("CNN, s from an earlier sweep (re-check)", "cnn_s", "-", 1),
    # ablation: without the camera-level correction of each plateau (plato_cnn.nn.plateau_head)
    ("CNN without the plateau head", "cnn_nohead", "-", 1),
    ("CNN without the plateau head", "cnn_nohead", "-", 5),
    ("CNN without the plateau head", "cnn_nohead", "-", 3),
    ("CNN without the plateau head", "cnn_nohead", "-", 2),
]


def _evaluate(job: dict) -> dict:
    pin_one_thread()
    from plato_cnn.classical import estimate_bft
    from plato_cnn.metrics import frame_eef
    from plato_cnn.pipelines.calibrate import earlier_sweep_s_prior
    from plato_cnn.predict import cnn_bft
    from plato_cnn.reader import read_campaign

    t0 = time.perf_counter()
    frames = read_campaign(job["dir"])
    frames = frames.select(frames.usable)
    e = frame_eef(frames.stamps, "2x2")
    out = []
    for k, (_label, method, fit, n_pl) in enumerate(ROWS):
        m = frames.plateau_mask(SUBSETS[n_pl])
        try:
            if method == "eef":
                r = estimate_bft(frames.select(m), fit, "2x2", e[m], seed=job["i"], n_boot=100)
                out.append({"row": k, "bft": r.bft_degC, "sigma": r.sigma_degC})
            else:
                prior = None
                if method == "cnn_s":
                    earlier = [t for t in SUBSETS[5] if t not in SUBSETS[n_pl]]
                    prior = earlier_sweep_s_prior(frames, job["model"], earlier)
                f, _ = cnn_bft(
                    frames.select(m), job["model"], n_boot=100, seed=job["i"], s_prior=prior,
                    plateau_head=method != "cnn_nohead",
                )  # fmt: skip
                out.append(
                    {
                        "row": k,
                        "bft": f.bft_degC,
                        "sigma": f.sigma_degC,
                        "ambiguous": f.sign_ambiguous,
                    }
                )
        except Exception as exc:  # counted as a failure of that row
            out.append({"row": k, "error": f"{type(exc).__name__}: {exc}"})
    return {"i": job["i"], "truth": job["truth"], "results": out, "s": time.perf_counter() - t0}


def markdown(result: dict) -> str:
    """The rows of a result (as written to ``--json``) as a Markdown table."""
    cols = [
        ("estimator", "estimator", ""),
        ("plateaux", "plateaux", "d"),
        ("rms_error_degC", "RMS error (degC)", ".2f"),
        ("bias_degC", "bias (degC)", "+.2f"),
        ("median_sigma_degC", "median sigma (degC)", ".2f"),
        ("frac_within_sigma", "|error| <= sigma", percent),
        ("n_cameras", "cameras", "d"),
        ("failures", "failures", "d"),
        ("sign_ambiguous", "sign ambiguous", "d"),
    ]
    return markdown_table(result["rows"], cols)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    add_campaign_arguments(ap)  # the same cameras, seeds and cache as classical_bft.py
    args = parse_with_quick(ap, argv, QUICK_CAMPAIGNS)
    jobs = campaign_jobs(args, boot=100, model=args.model)
    t0 = time.perf_counter()
    truths = map_jobs(_emulate, jobs, args.workers)
    t_emul = time.perf_counter() - t0
    for j, tr in zip(jobs, truths, strict=True):
        j["truth"] = tr["bft_degC"]
    t1 = time.perf_counter()
    evals = map_jobs(_evaluate, jobs, args.workers)
    t_eval = time.perf_counter() - t1

    heads = [dict(estimator=lb, method=m, fit=f, plateaux=n) for lb, m, f, n in ROWS]
    prior = dict(estimator="prior only (middle of the range)", method="-", fit="-", plateaux=0)
    rows = build_rows(evals, heads, dict(sign_ambiguous="ambiguous"), prior)
    info = dict(
        machine=machine_info(),
        config=vars(args),
        plateau_subsets={str(k): list(v) for k, v in SUBSETS.items()},
        seconds_emulation=t_emul,
        seconds_evaluation=t_eval,
        rows=rows,
        per_camera=[dict(i=e["i"], truth_degC=e["truth"], results=e["results"]) for e in evals],
    )
    print(
        f"{len(evals)} held-out cameras, {args.fields} fields x {args.dithers} dithers x "
        f"{args.frames} frames; emulation {t_emul:.0f} s, evaluation {t_eval:.0f} s"
    )
    report(info, markdown(info), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
