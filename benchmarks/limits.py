"""Cramér–Rao bounds: the focal shift of one stamp, and T_BF for a whole campaign.

Two tables (method: :mod:`plato_sim.bounds`):

* single stamp: the bound on the focal shift (um, 1 sigma) of one frame of the nominal camera,
  against its offset ``delta`` from the field position's EEF-optimal focus, at three field
  angles and three fluxes, RMS over a 3 x 3 grid of sub-pixel offsets: with every nuisance
  unknown (flux, background, offset, Z5-Z11 and the chromatic-shift scale), with the
  chromatic scale known, and with the aberrations known; and against the sub-pixel offset at
  one state.  A single stamp hardly tells a focus change from a change of the chromatic
  scale; the campaign bound shows that this costs T_BF little (both move the EEF optimum);
* campaign: the bound on T_BF (degC) for 5, 3, 2 and 1 plateaux (the subsets of
  :data:`plato_cnn.pipelines.calibrate.PLATEAU_SUBSETS`) on random cameras (true T_BF uniform in
  :data:`plato_cnn.pipelines.calibrate.TRUTH_RANGE_DEGC`), for the campaign design of the accuracy
  benchmarks (``classical_bft`` / ``cnn_bft``: fields x dithers x frames, ``--quick`` the same
  as theirs) and for the emulator's default 25 dithers, under the three nuisance models
  (aberrations per field, per frame, known).  ``rms_bound_degC`` (root mean square over the
  cameras) is the number to divide an RMS error by; the median is also given.

Usage::

    python -m benchmarks.limits [--quick] [--json OUT] [--cameras N] [--workers 2]
    python -m benchmarks.limits --truths 'out/classical_bft_cache/*.truth.json'  # those cameras
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/limits.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    parse_with_quick,
    report,
    script_argv,
)
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS, TRUTH_RANGE_DEGC  # noqa: E402
from plato_sim.truth.bestfocus import TRUTH_N_SUB  # noqa: E402
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

MODES = ("per_field", "per_frame", "known")
#: ``--quick``: fewer cameras and states (the campaign design follows classical_bft --quick)
QUICK = dict(cameras=2, deltas="-50,0,50", fluxes="1e5,8e5", thetas="2.5,17.5")


def accuracy_design(quick: bool) -> dict:
    """Fields, dithers and frames of the accuracy benchmarks' campaigns (classical_bft)."""
    from benchmarks.classical_bft import QUICK_CAMPAIGNS, add_campaign_arguments

    ap = argparse.ArgumentParser()
    add_campaign_arguments(ap)
    d = vars(ap.parse_args([]))
    if quick:
        d.update(QUICK_CAMPAIGNS)
    return {k: int(d[k]) for k in ("fields", "dithers", "frames")}


# ---------------------------------------------------------------- single stamp
def stamp_tables(thetas, deltas_um, fluxes_e, n_offsets: int = 3) -> dict:
    """Single-stamp bounds of the nominal camera (see the module docstring)."""
    import torch

    from plato_sim.bounds import CHROM_SCALE, FRAME_NUISANCES, stamp_fisher
    from plato_sim.optics.model import OpticalModel
    from plato_sim.psf.fast import FastEngine
    from plato_sim.scenes.fields import ground_test_fields
    from plato_sim.truth.bestfocus import field_best_focus_um, subpixel_grid

    optics = OpticalModel()
    th_table, ph_table = ground_test_fields()
    phis = [float(ph_table[int(np.argmin(np.abs(th_table - t)))]) for t in thetas]
    dz_opt, _ = field_best_focus_um(optics, np.asarray(thetas), np.asarray(phis), n_sub=TRUTH_N_SUB)
    eng = FastEngine(camera=optics.camera, dtype=torch.float64)
    offs = subpixel_grid(n_offsets)
    rows = []
    for t, p, z0 in zip(thetas, phis, dz_opt, strict=True):
        dz = z0 + np.asarray(deltas_um)
        for f in fluxes_e:
            sf = stamp_fisher(optics, t, p, dz, offs, f, engine=eng)
            models = (
                ("all unknown", None),
                ("chromatic scale known", [q for q in sf.params[1:] if q != CHROM_SCALE]),
                ("aberrations known", FRAME_NUISANCES),
            )
            for label, nuis in models:
                crb = sf.crb("dz_um", nuis)  # (deltas, offsets)
                rows.append(
                    dict(
                        theta_deg=float(t),
                        phi_deg=p,
                        flux_e=float(f),
                        nuisances=label,
                        crb_rms_over_offsets_um=np.sqrt(np.mean(crb**2, axis=1)).tolist(),
                        max_expected_e=float(sf.max_e.max()),
                    )
                )
    # against the sub-pixel offset: the middle field angle, delta = +50 um, the highest flux
    t, p, z0 = thetas[len(thetas) // 2], phis[len(thetas) // 2], dz_opt[len(thetas) // 2]
    off_grid = np.array([[0.0, 0.0], [0.25, 0.0], [0.5, 0.0], [0.25, 0.25], [0.5, 0.5]])
    sf = stamp_fisher(optics, t, p, z0 + 50.0, off_grid, max(fluxes_e), engine=eng)
    by_offset = dict(
        theta_deg=float(t),
        phi_deg=p,
        delta_um=50.0,
        flux_e=float(max(fluxes_e)),
        offsets_px=off_grid.tolist(),
        crb_all_unknown_um=sf.crb("dz_um")[0].tolist(),
        crb_aberrations_known_um=sf.crb("dz_um", FRAME_NUISANCES)[0].tolist(),
    )
    return dict(
        deltas_um=[float(d) for d in deltas_um],
        field_optimum_dz_th_um=[float(v) for v in dz_opt],
        n_offsets=n_offsets * n_offsets,
        rows=rows,
        by_offset=by_offset,
    )


# ---------------------------------------------------------------- campaign
def _camera_job(job: dict) -> dict:
    """One camera: its campaign information on all plateaux, then every bound."""
    pin_one_thread()
    from dataclasses import replace

    from plato_sim.bounds import CampaignDesign, camera_from_truth, campaign_information
    from plato_sim.optics.model import CameraModel
    from plato_sim.optics.spectra import ogse_spectrum
    from plato_sim.scenes.fields import ground_test_fields
    from plato_sim.scenes.ground_test import read_truth
    from plato_sim.truth.bestfocus import t0_for_best_focus

    t0, c0 = time.perf_counter(), time.process_time()
    n_dith = max(job["dithers_list"])
    if job.get("truth"):
        truth = read_truth(job["truth"])
        camera = camera_from_truth(truth)
        design = CampaignDesign.from_truth(truth, n_dithers=n_dith)
        t_bf = float(truth["bft_degC"])
    else:
        theta, phi = ground_test_fields(job["fields"])
        design = CampaignDesign(
            theta_deg=tuple(theta), phi_deg=tuple(phi), n_dithers=n_dith,
            frames_per_dither=job["frames"], offsets_seed=job["seed"],
        )  # fmt: skip
        rng = np.random.default_rng(job["seed"])
        camera = CameraModel.random(rng, job["i"])
        camera, bf = t0_for_best_focus(
            camera, job["bft"], theta_deg=theta, phi_deg=phi,
            spectrum=ogse_spectrum(camera.optics.camera), n_sub=TRUTH_N_SUB,
        )  # fmt: skip
        t_bf = bf.bft_degC
    design = replace(design, plateaux_degC=tuple(sorted(set(design.plateaux_degC))))
    info = campaign_information(camera, design)
    out = []
    for n_d in job["dithers_list"]:
        for mode in MODES:
            for n_pl, sub in PLATEAU_SUBSETS.items():
                b = info.bound(sub, n_dithers=n_d, aberrations=mode)
                out.append(dict(b.to_dict(), dithers=n_d, plateaux=n_pl))
    return dict(
        i=job["i"],
        bft_degC=t_bf,
        bft_linearised_degC=info.bft_degC,
        s_um_per_degC=info.s_um_per_degC,
        fields=design.n_fields,
        frames=design.frames_per_dither,
        max_expected_e=float(info.max_e.max()),
        bounds=out,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
    )


def campaign_rows(cams: list[dict]) -> list[dict]:
    """Statistics over cameras, one row per (dithers, nuisance model, plateaux)."""
    keys = [(b["dithers"], b["aberrations"], b["plateaux"]) for b in cams[0]["bounds"]]
    rows = []
    for k, (n_d, mode, n_pl) in enumerate(keys):
        bs = [c["bounds"][k] for c in cams]
        sig = np.asarray([b["sigma_tbf_degC"] for b in bs])
        rows.append(
            dict(
                fields=cams[0]["fields"],
                dithers=n_d,
                frames=cams[0]["frames"],
                aberrations=mode,
                plateaux=n_pl,
                rms_bound_degC=float(np.sqrt(np.mean(sig**2))),
                median_bound_degC=float(np.median(sig)),
                max_bound_degC=float(np.max(sig)),
                median_bound_s_known_degC=float(
                    np.median([b["sigma_tbf_s_known_degC"] for b in bs])
                ),
                median_sigma_s_um_per_degC=float(np.median([b["sigma_s_um_per_degC"] for b in bs])),
                prior_dominated=int(sum(b["prior_dominated"] for b in bs)),
                n_cameras=len(bs),
            )
        )
    # the accuracy benchmarks' design and the default nuisance model first: the runner's
    # accuracy table takes the first row of each plateau count
    first = cams[0]["bounds"][0]["dithers"]
    rows.sort(key=lambda r: (r["dithers"] != first, MODES.index(r["aberrations"])))
    return rows


# ---------------------------------------------------------------- Markdown
def _um(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def markdown(result: dict) -> str:
    """The two tables of a result (single stamp, campaign)."""
    parts = []
    st = result.get("stamp")
    if st:
        deltas = st["deltas_um"]
        cols = [("theta_deg", "theta (deg)", ".1f"), ("flux_e", "flux (e-)", ".0e"),
                ("nuisances", "nuisances", "")]  # fmt: skip
        rows = []
        for r in st["rows"]:
            row = dict(r)
            for d, v in zip(deltas, r["crb_rms_over_offsets_um"], strict=True):
                row[f"d{d:+g}"] = v
            rows.append(row)
        cols += [(f"d{d:+g}", f"delta {d:+g} um", _um) for d in deltas]
        parts.append(
            "Single stamp, nominal camera: Cramér–Rao bound on the focal shift (um, 1 sigma), "
            f"RMS over {st['n_offsets']} sub-pixel offsets, against the offset delta from the "
            "field position's EEF-optimal focus.\n\n" + markdown_table(rows, cols)
        )
        bo = st["by_offset"]
        orow = [
            {"nuisances": lab, **{f"o{k}": v for k, v in enumerate(bo[key])}}
            for lab, key in (("all unknown", "crb_all_unknown_um"),
                             ("aberrations known", "crb_aberrations_known_um"))
        ]  # fmt: skip
        ocols = [("nuisances", "nuisances", "")] + [
            (f"o{k}", f"offset ({o[0]:g}, {o[1]:g}) px", _um)
            for k, o in enumerate(bo["offsets_px"])
        ]
        parts.append(
            f"Against the sub-pixel offset (theta {bo['theta_deg']:g} deg, delta "
            f"{bo['delta_um']:+g} um, flux {bo['flux_e']:.0e} e-), bound in um.\n\n"
            + markdown_table(orow, ocols)
        )
    rows = result.get("rows") or []
    if rows:
        cols = [
            ("fields", "fields", "d"),
            ("dithers", "dithers", "d"),
            ("frames", "frames", "d"),
            ("aberrations", "aberrations", ""),
            ("plateaux", "plateaux", "d"),
            ("rms_bound_degC", "RMS bound (degC)", ".4f"),
            ("median_bound_degC", "median bound (degC)", ".4f"),
            ("max_bound_degC", "max bound (degC)", ".4f"),
            ("median_bound_s_known_degC", "median, s known (degC)", ".4f"),
            ("median_sigma_s_um_per_degC", "median sigma(s) (um/degC)", ".4f"),
            ("prior_dominated", "prior-dominated cameras", "d"),
        ]
        parts.append(
            f"Campaign: Cramér–Rao bound on T_BF over {rows[0]['n_cameras']} cameras "
            "(every frame's flux, background and offset unknown; the aberration nuisances "
            "Z5-Z11 and chromatic scale unknown per field position (with their effect on the "
            "field's EEF-optimal focus), per frame, or known; s unknown, its prior "
            "10 +- 3 um/degC used only with one plateau, where s cannot be measured: those "
            "rows are prior-dominated).\n\n" + markdown_table(rows, cols)
        )
    return "\n\n".join(parts)


# ---------------------------------------------------------------- main
def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=8, help="random cameras (campaign table)")
    ap.add_argument("--seed", type=int, default=61_000, help="seed of the random cameras")
    ap.add_argument("--truths", default=None,
                    help="glob of emulated campaigns' *.truth.json: bound those cameras and "
                    "designs instead of random ones")  # fmt: skip
    ap.add_argument("--deltas", default="-100,-50,-20,0,20,50,100", help="stamp table (um)")
    ap.add_argument("--fluxes", default="1e4,1e5,8e5", help="stamp table (e-)")
    ap.add_argument("--thetas", default="2.5,8.5,17.5", help="stamp table field angles (deg)")
    ap.add_argument("--skip-stamp", action="store_true", help="campaign table only")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the result here")
    args = parse_with_quick(ap, argv, QUICK)
    t_start = time.perf_counter()
    result: dict = dict(
        machine=machine_info(), command=script_argv(), config=vars(args),
        plateau_subsets={str(k): list(v) for k, v in PLATEAU_SUBSETS.items()},
    )  # fmt: skip

    if not args.skip_stamp:
        t0 = time.perf_counter()
        result["stamp"] = stamp_tables(
            _floats(args.thetas), _floats(args.deltas), _floats(args.fluxes)
        )
        result["seconds_stamp"] = time.perf_counter() - t0

    acc = accuracy_design(args.quick)
    result["accuracy_design"] = acc
    dithers_list = [acc["dithers"], 25] if acc["dithers"] != 25 else [25]
    if args.truths:
        from plato_sim.scenes.ground_test import read_truth

        paths = sorted(glob.glob(args.truths))
        if not paths:
            raise SystemExit(f"--truths {args.truths!r}: no file matches")
        # the truths' own dithers first (one design per glob), then the emulator's 25
        n_truth = int(read_truth(paths[0])["n_dithers"])
        dithers_list = [n_truth, 25] if n_truth != 25 else [25]
        jobs = [dict(i=i, truth=p, dithers_list=dithers_list) for i, p in enumerate(paths)]
    else:
        bfts = np.random.default_rng(args.seed).uniform(*TRUTH_RANGE_DEGC, args.cameras)
        jobs = [
            dict(i=i, bft=float(b), seed=args.seed * 1000 + i, fields=acc["fields"],
                 frames=acc["frames"], dithers_list=dithers_list)
            for i, b in enumerate(bfts)
        ]  # fmt: skip
    t0 = time.perf_counter()
    cams = map_jobs(_camera_job, jobs, max(1, args.workers))
    result["seconds_campaign"] = time.perf_counter() - t0
    result["rows"] = campaign_rows(cams)
    result["per_camera"] = cams
    result["seconds_total"] = time.perf_counter() - t_start
    print(
        f"{len(cams)} cameras, campaign {result['seconds_campaign']:.0f} s "
        f"(per camera {np.median([c['seconds'] for c in cams]):.0f} s wall, "
        f"{np.median([c['cpu_seconds'] for c in cams]):.0f} s CPU on one core), "
        f"total {result['seconds_total']:.0f} s"
    )
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
