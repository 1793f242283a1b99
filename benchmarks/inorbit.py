"""In-orbit focus check: error of the recommended TRP1 change against the truth, by star count.

For each emulated camera (random perturbation, exact best focus, true T_BF uniform in
[-84, -72] degC; seeds ``--seed`` and up, none of them in the training pool nor in the
calibration of the systematic sigma) and each V range, one field of ``max(--n-stars)`` stars
is emulated at a TRP1 temperature ``T = T_BF - dT`` with ``dT`` uniform in ``+-dt-range``.
The field is cut into disjoint sets of N stars (at most ``--max-subsets`` per N) and each
set goes through the focus check (``plato_cnn.focuscheck.focus_check``, the shipped in-orbit
model unless ``--model``).  Rows: per (N, V range) the RMS and bias of (recommended change -
true change), the fraction with |error| <= sigma, the median sigma, the RMS for the fields
within 1 degC of best focus, and how often the side of focus was ambiguous.

The largest N also gives an error budget (weighted over the stars used, over fields): the
network's mean per-star error, the optical model's field offsets against the camera's own
(``c`` map mismatch), and the prior on ``s`` (10 +- 3 um/degC against the camera's s).

Usage::

    python -m benchmarks.inorbit [--quick] [--json out/inorbit.json] [--model DIR]
        [--family design|highorder|highorder-mild]

``--family highorder`` scores the same check on cameras of the high-order optical family
(``plato_sim.optics.family_highorder``, strength 1), which neither the in-orbit network's
training set nor its calibration holds: the out-of-family figure of the in-orbit check.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/inorbit.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    parse_with_quick,
    percent,
    report,
)
from plato_sim.scenes.inorbit import INORBIT_FAMILIES  # noqa: E402
from plato_sim.workers import pin_one_thread  # noqa: E402

QUICK = dict(cameras=2, v_ranges="8.5-13", max_subsets=10)
TARGET_DEGC = 0.5


def _v_ranges(text: str) -> list[tuple[float, float]]:
    out = []
    for part in text.split(","):
        lo, hi = (float(x) for x in part.split("-"))
        out.append((lo, hi))
    return out


def _job(job: dict) -> list[dict]:
    """One camera: its fields (one per V range) and the focus checks of their star subsets."""
    pin_one_thread()
    from plato_cnn.focuscheck import focus_check, inorbit_model_dir
    from plato_cnn.nn.card import load_model
    from plato_sim.io.imagette_format import ImagetteField
    from plato_sim.scenes.inorbit import emulate_imagettes, make_camera

    rng = np.random.default_rng(job["seed"])
    t_bf = float(rng.uniform(-84.0, -72.0))
    t0 = time.process_time()
    cam = make_camera(job["seed"], bft_degC=t_bf, family=job["family"])
    cpu_camera = time.process_time() - t0
    loaded = load_model(job["model"] or inorbit_model_dir())
    out = []
    for vr in job["v_ranges"]:
        dt_true = float(rng.uniform(-job["dt_range"], job["dt_range"]))
        temp = t_bf - dt_true
        t1 = time.process_time()
        f = emulate_imagettes(cam, temp, max(job["n_stars"]), seed=int(rng.integers(2**31)))
        cpu_field = time.process_time() - t1
        st = f.truth["star_truth"]
        c_true = st["dz_field_best_um"] - f.truth["dz_bf_um"]
        g_true = f.truth["dz_th_um"] - f.truth["dz_bf_um"]
        s_true = f.truth["s_um_per_degC"]
        order = np.random.default_rng(job["seed"] + 7).permutation(len(st))
        for n in job["n_stars"]:
            n_sets = min(len(order) // n, job["max_subsets"])
            for k in range(n_sets):
                idx = np.sort(order[k * n : (k + 1) * n])
                sub = ImagetteField(f.imagettes[idx], f.stars[idx], f.header, None)
                rec = dict(camera_seed=job["seed"], v_range=list(vr), n_stars=n, subset=k)
                rec.update(bft_degC=t_bf, temperature_degC=temp, dt_true_degC=dt_true)
                try:
                    fc = focus_check(sub, temp, loaded=loaded)
                except ValueError as exc:  # e.g. every star of a small set saturated
                    rec.update(failed=str(exc))
                    out.append(rec)
                    continue
                u = fc.star_used
                w = 1.0 / fc.star_sigma_um[u] ** 2
                net = float(
                    np.sum(w * (fc.star_mu_um[u] - st["dz_from_best_um"][idx][u])) / w.sum()
                )
                cmap = float(np.sum(w * (fc.star_offset_um[u] - c_true[idx][u])) / w.sum())
                rec.update(
                    dt_est_degC=fc.delta_t_degC,
                    sigma_degC=fc.delta_t_sigma_degC,
                    error_degC=fc.delta_t_degC - dt_true,
                    shift_est_um=fc.shift_um,
                    shift_true_um=g_true,
                    shift_sigma_stat_um=fc.shift_sigma_stat_um,
                    sign_ambiguous=fc.sign_ambiguous,
                    n_used=fc.n_used,
                    n_saturated=fc.drops["saturated"],
                    network_error_um=net,
                    map_error_um=cmap,
                    s_true=s_true,
                    s_term_degC=-g_true * (1.0 / fc.s_prior_um_per_degC[0] - 1.0 / s_true),
                    cpu_camera_s=cpu_camera,
                    cpu_field_s=cpu_field,
                )
                out.append(rec)
    return out


def _rms(x) -> float | None:
    x = np.asarray(x, float)
    return float(np.sqrt(np.mean(x**2))) if x.size else None


def _camera_bootstrap_rms(ok: list[dict], n_boot: int = 1000) -> list[float] | None:
    """16th and 84th percentiles of the RMS error when the cameras are resampled."""
    cams = sorted({r["camera_seed"] for r in ok})
    if len(cams) < 2:
        return None
    by_cam = [np.array([r["error_degC"] for r in ok if r["camera_seed"] == c]) for c in cams]
    rng = np.random.default_rng(0)
    rms = [
        _rms(np.concatenate([by_cam[i] for i in rng.integers(len(cams), size=len(cams))]))
        for _ in range(n_boot)
    ]
    return [float(np.percentile(rms, 16)), float(np.percentile(rms, 84))]


def summarise(records: list[dict], n_stars: list[int], v_ranges) -> tuple[list[dict], dict]:
    """Rows per (N, V range) and the smallest N reaching the target, per V range."""
    rows = []
    for vr in v_ranges:
        for n in n_stars:
            rs = [r for r in records if r["n_stars"] == n and tuple(r["v_range"]) == tuple(vr)]
            ok = [r for r in rs if "error_degC" in r]
            err = np.array([r["error_degC"] for r in ok])
            sig = np.array([r["sigma_degC"] for r in ok])
            near = [r["error_degC"] for r in ok if abs(r["dt_true_degC"]) <= 1.0]
            rows.append(
                dict(
                    n_stars=n,
                    v_range=f"{vr[0]:g}-{vr[1]:g}",
                    estimates=len(ok),
                    cameras=len({r["camera_seed"] for r in ok}),
                    failures=len(rs) - len(ok),
                    rms_error_degC=_rms(err),
                    rms_ci68_degC=_camera_bootstrap_rms(ok),
                    bias_degC=float(err.mean()) if err.size else None,
                    frac_within_sigma=float(np.mean(np.abs(err) <= sig)) if err.size else None,
                    median_sigma_degC=float(np.median(sig)) if sig.size else None,
                    rms_near_focus_degC=_rms(near),
                    n_near_focus=len(near),
                    sign_ambiguous=int(sum(r["sign_ambiguous"] for r in ok)),
                    rms_network_um=_rms([r["network_error_um"] for r in ok]),
                    rms_map_um=_rms([r["map_error_um"] for r in ok]),
                    rms_s_term_degC=_rms([r["s_term_degC"] for r in ok]),
                    rms_stat_sigma_um=_rms([r["shift_sigma_stat_um"] for r in ok]),
                )
            )
    smallest = {}
    for vr in v_ranges:
        key = f"{vr[0]:g}-{vr[1]:g}"
        hits = [
            r["n_stars"]
            for r in rows
            if r["v_range"] == key
            and r["rms_error_degC"] is not None
            and r["rms_error_degC"] <= TARGET_DEGC
        ]
        best = min(
            (r for r in rows if r["v_range"] == key and r["rms_error_degC"] is not None),
            key=lambda r: r["rms_error_degC"],
            default=None,
        )
        smallest[key] = dict(
            smallest_n=min(hits) if hits else None,
            best_rms_degC=None if best is None else best["rms_error_degC"],
            best_n=None if best is None else best["n_stars"],
        )
    return rows, smallest


def markdown(result: dict) -> str:
    """The rows of a result as Markdown tables: accuracy, then the error budget."""
    acc = [
        ("n_stars", "stars N", "d"),
        ("v_range", "V", ""),
        ("estimates", "estimates", "d"),
        ("cameras", "cameras", "d"),
        ("rms_error_degC", "RMS error (degC)", ".2f"),
        ("rms_ci68_degC", "68 % range, cameras resampled", ".2f"),
        ("bias_degC", "bias (degC)", "+.2f"),
        ("frac_within_sigma", "|err| <= sigma", percent),
        ("median_sigma_degC", "median sigma (degC)", ".2f"),
        ("rms_near_focus_degC", "RMS, |dT| <= 1 degC", ".2f"),
        ("sign_ambiguous", "sign ambiguous", "d"),
    ]
    budget = [
        ("n_stars", "stars N", "d"),
        ("v_range", "V", ""),
        ("rms_stat_sigma_um", "statistical sigma (um)", ".2f"),
        ("rms_network_um", "network mean error (um)", ".2f"),
        ("rms_map_um", "field-offset map error (um)", ".2f"),
        ("rms_s_term_degC", "s-prior term (degC)", ".2f"),
    ]
    lines = [markdown_table(result["rows"], acc), "", markdown_table(result["rows"], budget), ""]
    for vr, s in result["smallest_n_for_target"].items():
        if s["smallest_n"] is not None:
            lines.append(f"V {vr}: smallest N with RMS <= {TARGET_DEGC} degC: {s['smallest_n']}")
        else:
            lines.append(
                f"V {vr}: no N reaches {TARGET_DEGC} degC; best RMS {s['best_rms_degC']:.2f} "
                f"degC at N = {s['best_n']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    ap.add_argument("--cameras", type=int, default=8, help="emulated cameras")
    ap.add_argument("--n-stars", default="10,100,1000", help="star counts N")
    ap.add_argument("--v-ranges", default="8.5-13,8.5-11,11-13", help="V ranges lo-hi,...")
    ap.add_argument("--dt-range", type=float, default=3.0, help="true |T_BF - T| up to (degC)")
    ap.add_argument("--max-subsets", type=int, default=20, help="star sets per N and field")
    ap.add_argument("--seed", type=int, default=2000, help="first camera seed")
    ap.add_argument("--workers", type=int, default=2, help="processes (one per camera)")
    ap.add_argument(
        "--family",
        choices=tuple(INORBIT_FAMILIES),
        default="design",
        help="the cameras' optical family: the in-orbit network's own (design) or the "
        "high-order family, which neither the network nor its calibration saw",
    )
    args = parse_with_quick(ap, argv, QUICK)
    n_stars = sorted(int(x) for x in args.n_stars.split(","))
    v_ranges = _v_ranges(args.v_ranges)
    jobs = [
        dict(
            seed=args.seed + k,
            model=args.model,
            v_ranges=v_ranges,
            n_stars=n_stars,
            dt_range=args.dt_range,
            max_subsets=args.max_subsets,
            family=args.family,
        )
        for k in range(args.cameras)
    ]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(max(1, args.workers)) as pool:
        records = [r for rs in pool.map(_job, jobs, chunksize=1) for r in rs]
    wall = time.perf_counter() - t0
    rows, smallest = summarise(records, n_stars, v_ranges)
    cpu = sum({r["camera_seed"]: r.get("cpu_camera_s", 0.0) for r in records}.values())
    cpu += sum(
        {
            (r["camera_seed"], tuple(r["v_range"])): r.get("cpu_field_s", 0.0) for r in records
        }.values()
    )
    result = dict(
        machine=machine_info(),
        config=vars(args),
        target_degC=TARGET_DEGC,
        seconds_wall=wall,
        seconds_cpu_emulation=cpu,
        rows=rows,
        smallest_n_for_target=smallest,
        records=records,
    )
    print(f"{args.cameras} cameras x {len(v_ranges)} V ranges, N = {n_stars}; {wall:.0f} s wall")
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
