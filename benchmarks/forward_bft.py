"""Accuracy and speed of the physics forward-model fit (:func:`plato_cnn.forward.forward_bft`).

Cameras: the emulated campaigns of ``benchmarks/classical_bft.py`` (same seed, same sizes,
same cache; emulated here when absent): random camera perturbations drawn by the emulator,
true T_BF uniform in [-84, -72] degC.  Each camera is fitted with 5, 3, 2 and 1 plateaux
(:data:`plato_cnn.pipelines.calibrate.PLATEAU_SUBSETS`: -90..-70; -90, -80, -70; -85, -75;
-80).  Per row: RMS error, bias, median sigma, coverage (|error| <= sigma), failures, cameras
flagged ``outside_model``, mean wall time per camera.

Timing row: the default 10,000-frame campaign (40 fields x 25 dithers x 2 frames x 5 plateaux,
``plato-sim campaign --camera cam10k --bft-degC -78.5 --seed 3``), read and fitted in this
process with ``--timing-threads`` torch threads (2 = the project's machine), on
``--timing-device`` (``cuda``: the fit's engine and linear algebra on the GPU; a campaign
absent from the cache is then emulated with the engine on the GPU too).

Usage::

    python -m benchmarks.forward_bft [--quick] [--cameras 50] [--skip-timing] \
        --json out/forward_bft.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/forward_bft.py
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
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS as SUBSETS  # noqa: E402
from plato_sim.truth.bestfocus import TRUTH_N_SUB  # noqa: E402
from plato_sim.workers import map_jobs  # noqa: E402

#: (label, plateaux)
ROWS = [("forward-model fit", n) for n in (5, 3, 2, 1)]
#: The 10,000-frame timing campaign (the ``plato-sim campaign`` defaults).
TIMING_CAMPAIGN = dict(camera_name="cam10k", bft_degC=-78.5, seed=3, n_sub_truth=TRUTH_N_SUB)


def _evaluate(job: dict) -> dict:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(job["threads"])
    from plato_cnn.forward import forward_bft
    from plato_cnn.reader import read_campaign

    t0 = time.perf_counter()
    frames = read_campaign(job["dir"])
    t_read = time.perf_counter() - t0
    out = []
    rows = [r for r in ROWS if r[1] in job["subsets"]]
    for k, (_label, n_pl) in enumerate(rows):
        t1 = time.perf_counter()
        c1 = time.process_time()
        try:
            r = forward_bft(frames, plateaux=SUBSETS[n_pl], max_iter=job["max_iter"],
                            **job.get("spectrum", {}))  # fmt: skip
            out.append(
                {
                    "row": k,
                    "bft": r["bft_degC"],
                    "sigma": r["sigma_degC"],
                    "outside": r["outside_model"],
                    "chi2": r["chi2"]["reduced"],
                    "s": r["s_um_per_degC"],
                    "iterations": r["diagnostics"]["iterations"],
                    "wall_s": time.perf_counter() - t1,
                    "cpu_s": time.process_time() - c1,
                }
            )
        except Exception as exc:  # counted as a failure of that row
            out.append(
                {
                    "row": k,
                    "error": f"{type(exc).__name__}: {exc}",
                    "wall_s": time.perf_counter() - t1,
                    "cpu_s": time.process_time() - c1,
                }
            )
    return {"i": job["i"], "truth": job["truth"], "results": out, "read_s": t_read}


def _timing(args: argparse.Namespace) -> dict:
    """Read + fit the 10,000-frame campaign in this process."""
    import json

    import torch

    from plato_cnn.forward import forward_bft
    from plato_cnn.reader import read_campaign
    from plato_sim.psf import FastEngine
    from plato_sim.scenes.ground_test import emulate_or_load

    device = args.timing_device
    folder = Path(args.cache) / f"forward_c10k_n{TRUTH_N_SUB}"  # the truth's grid names it
    t_em = time.perf_counter()
    # emulated on the fit's device when absent (a GPU makes it seconds, not minutes); the
    # folder then serves the other device's timing as it is
    engine = FastEngine(device=device) if device != "cpu" else None
    truth = emulate_or_load(folder, engine=engine, **TIMING_CAMPAIGN)
    t_em = time.perf_counter() - t_em
    torch.set_num_threads(args.timing_threads)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    c0 = time.process_time()
    frames = read_campaign(folder)
    t_read = time.perf_counter() - t0
    r = forward_bft(frames, max_iter=args.max_iter, device=device, **_spectrum(args))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return dict(
        device=device,
        gpu=torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        emulation_or_load_s=t_em,
        frames=len(frames),
        cpu_s=time.process_time() - c0,
        threads=args.timing_threads,
        read_s=t_read,
        fit_s=wall - t_read,
        total_s=wall,
        error_degC=r["bft_degC"] - truth["bft_degC"],
        sigma_degC=r["sigma_degC"],
        chi2_reduced=r["chi2"]["reduced"],
        iterations=r["diagnostics"]["iterations"],
        load_avg_before=list(load0),
        load_avg_after=list(os.getloadavg()),
        truth_n_sub=truth.get("n_sub_truth"),
        report=json.loads(json.dumps({k: v for k, v in r.items() if k != "wavefront"})),
    )


def _spectrum(args: argparse.Namespace) -> dict:
    """The fit's spectrum options (``forward_bft``'s defaults unless given)."""
    out = {"spectrum_rule": args.spectrum_rule}
    if args.n_wavelengths is not None:
        out["n_wavelengths"] = args.n_wavelengths
    return out


def markdown(result: dict) -> str:
    cols = [
        ("estimator", "estimator", ""),
        ("plateaux", "plateaux", "d"),
        ("rms_error_degC", "RMS error (degC)", ".3f"),
        ("bias_degC", "bias (degC)", "+.3f"),
        ("max_abs_error_degC", "max abs (degC)", ".3f"),
        ("median_sigma_degC", "median sigma (degC)", ".3f"),
        ("frac_within_sigma", "|error| <= sigma", percent),
        ("n_cameras", "cameras", "d"),
        ("failures", "failures", "d"),
        ("outside_model", "outside model", "d"),
        ("wall_s_per_camera", "wall s / camera", ".0f"),
        ("cpu_s_per_camera", "CPU s / camera", ".0f"),
    ]
    text = markdown_table(result["rows"], cols)
    t = result.get("timing")
    if t:
        text += (
            f"\n\n10,000-frame campaign ({t['frames']} frames, {t.get('device', 'cpu')}, "
            f"{t['threads']} torch threads): "
            f"read {t['read_s']:.0f} s + fit {t['fit_s']:.0f} s = **{t['total_s']:.0f} s**; "
            f"error {t['error_degC']:+.3f} degC, sigma {t['sigma_degC']:.3f}, chi2_red "
            f"{t['chi2_reduced']:.2f}; load {t['load_avg_before'][0]:.1f} -> "
            f"{t['load_avg_after'][0]:.1f}"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_campaign_arguments(ap)
    ap.add_argument("--max-iter", type=int, default=40, help="Levenberg-Marquardt iterations")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--timing-threads", type=int, default=2)
    ap.add_argument(
        "--timing-device", default="cpu", help="torch device of the timing row (cpu, cuda)"
    )
    ap.add_argument("--skip-timing", action="store_true", help="no 10,000-frame timing row")
    ap.add_argument(
        "--spectrum-rule", default="midpoint", choices=("midpoint", "gauss"),
        help="the fit's quadrature of the OGSE band (plato_sim.optics.spectra)",
    )  # fmt: skip
    ap.add_argument(
        "--n-wavelengths", type=int, default=None,
        help="samples of the fit's spectrum (default forward_bft's, 10)",
    )  # fmt: skip
    ap.add_argument("--skip-accuracy", action="store_true", help="only the timing row")
    ap.add_argument(
        "--subsets", default="5,3,2,1", help="plateau counts to fit (of 5, 3, 2, 1; comma list)"
    )
    args = parse_with_quick(ap, argv, QUICK_CAMPAIGNS)
    wanted = [int(x) for x in args.subsets.split(",")]
    ROWS[:] = [r for r in ROWS if r[1] in wanted]
    rows, evals, t_emul, t_eval = [], [], 0.0, 0.0
    if not args.skip_accuracy and args.cameras > 0:
        jobs = campaign_jobs(args, threads=args.threads, max_iter=args.max_iter, subsets=wanted,
                             spectrum=_spectrum(args))  # fmt: skip
        t0 = time.perf_counter()
        truths = map_jobs(_emulate, jobs, args.workers)
        t_emul = time.perf_counter() - t0
        for j, tr in zip(jobs, truths, strict=True):
            j["truth"] = tr["bft_degC"]
        t1 = time.perf_counter()
        evals = map_jobs(_evaluate, jobs, args.workers)
        t_eval = time.perf_counter() - t1
        heads = [dict(estimator=lb, plateaux=n) for lb, n in ROWS]
        rows = build_rows(
            evals, heads, dict(outside_model="outside"), dict(estimator="prior only", plateaux=0)
        )
        for k, row in enumerate(rows[: len(ROWS)]):
            walls = [e["results"][k].get("wall_s", float("nan")) for e in evals]
            row["wall_s_per_camera"] = sum(walls) / max(len(walls), 1)
            cpus = [e["results"][k].get("cpu_s", float("nan")) for e in evals]
            row["cpu_s_per_camera"] = sum(cpus) / max(len(cpus), 1)
    timing = None if args.skip_timing else _timing(args)
    info = dict(
        machine=machine_info(),
        config=vars(args),
        plateau_subsets={str(k): list(v) for k, v in SUBSETS.items()},
        seconds_emulation=t_emul,
        seconds_evaluation=t_eval,
        rows=rows,
        timing=timing,
        per_camera=[dict(i=e["i"], truth_degC=e["truth"], results=e["results"]) for e in evals],
    )
    if evals:
        print(
            f"{len(evals)} cameras, {args.fields} fields x {args.dithers} dithers x "
            f"{args.frames} frames; emulation {t_emul:.0f} s, evaluation {t_eval:.0f} s"
        )
    report(info, markdown(info), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
