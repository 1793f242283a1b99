"""The CNN cross-checked by the forward fit, scored on the calibration families.

For each calibration camera of ``--families`` under ``--workdir`` (the folders that
``python -m plato_cnn.pipelines.calibrate_forward`` and ``plato-cnn calibrate-residual`` use;
their kept per-camera results are reused, missing ones computed): the CNN's estimate with 5,
3 and 2 plateaux and its in-family calibrated sigma, widened by the model's thermal-residual
check (``thermal_residual_check`` of its ``model.json``), then cross-checked against the forward
fit of the same frames (its sigma with the calibrated term, as the method reports it) under
two rules: the plain one (:data:`plato_cnn.crosscheck.DISAGREE_SIGMAS` combined sigmas) and
the command line's (one combined sigma once the residual check flagged the estimate,
:func:`plato_cnn.crosscheck.forward_threshold`).  Rows per family and plateau count:
cameras, fraction flagged by the residual check, RMS error, coverage (``|error| <= sigma``) of
the CNN's sigma raw, after the residual check and after each cross-check rule.

The nodal family, the out-of-family benchmark's, is never used here.  The calibration
families are those the residual check was calibrated on (its threshold on the in-family
cameras, its widening on the high-order ones): this measures what the cross-check rule adds
on those cameras, not an out-of-family coverage.

Usage::

    python -m benchmarks.crosscheck_rule --workdir DIR [--cameras 12] [--kept-only] [--json F]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/crosscheck_rule.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    percent,
    report,
    script_argv,
)
from plato_sim.workers import map_jobs  # noqa: E402

FAMILIES = ("design-random", "highorder-mild", "highorder")
PLATEAUX = (5, 3, 2)


def camera_rows(cnn: dict, fw: dict, truth: float, card) -> dict[int, dict]:
    """Per plateau count: the CNN's error and its sigma at each stage for one camera, from
    :func:`plato_cnn.pipelines.calibrate_residual.camera_residuals` (``cnn``) and
    :func:`plato_cnn.pipelines.calibrate_forward.forward_camera_errors` (``fw``)."""
    from plato_cnn.crosscheck import DISAGREE_SIGMAS, disagreement, forward_threshold
    from plato_cnn.forward import systematic_term_degC

    out = {}
    for n in PLATEAUX:
        e, sig, res, s = cnn[str(n)]
        entry = card.residual_check.entry(n) if card.residual_check else None
        flag = entry is not None and res > entry[0]
        sig_res = math.hypot(sig, entry[1] * res / max(abs(s), 1e-9)) if flag else sig
        fe, fs, _wall, chi2, fout = fw[str(n)][:5]
        f_sig = math.hypot(fs, systematic_term_degC(n, chi2, fout) or 0.0)
        row = {"error": e, "flagged": flag, "sigma": sig, "sigma_residual": sig_res}
        for name, thr in (("plain", DISAGREE_SIGMAS), ("cli", forward_threshold(flag))):
            _d, _n, widened = disagreement(truth + e, sig_res, truth + fe, f_sig, thr)
            row[f"sigma_{name}"] = sig_res if widened is None else widened
        out[n] = row
    return out


def build_rows(per_family: dict[str, list[dict]]) -> list[dict]:
    """One row per family and plateau count."""
    rows = []
    for fam, cams in per_family.items():
        for n in PLATEAUX:
            r = [c[n] for c in cams]
            if not r:
                continue
            e = np.asarray([x["error"] for x in r])

            def cov(key, r=r, e=e):
                return float(np.mean(np.abs(e) <= np.asarray([x[key] for x in r]) * (1 + 1e-9)))

            rows.append({
                "family": fam, "plateaux": n, "n_cameras": len(r),
                "frac_flagged": float(np.mean([x["flagged"] for x in r])),
                "rms_error_degC": float(np.sqrt(np.mean(e**2))),
                "coverage_raw": cov("sigma"), "coverage_residual": cov("sigma_residual"),
                "coverage_plain": cov("sigma_plain"), "coverage_cli": cov("sigma_cli"),
            })  # fmt: skip
    return rows


def markdown(result: dict) -> str:
    cols = [
        ("family", "family", ""),
        ("plateaux", "plateaux", "d"),
        ("n_cameras", "cameras", "d"),
        ("frac_flagged", "flagged by the residual check", percent),
        ("rms_error_degC", "CNN RMS error (degC)", ".3f"),
        ("coverage_raw", "coverage: sigma", percent),
        ("coverage_residual", "+ residual check", percent),
        ("coverage_plain", "+ forward check, 3 sigma", percent),
        ("coverage_cli", "+ forward check, 1 sigma once flagged", percent),
    ]
    return markdown_table(result["rows"], cols)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="calibration families' folders")
    ap.add_argument("--model", default=None, help="CNN model directory (default: shipped)")
    ap.add_argument("--cameras", type=int, default=12, help="cameras of each family")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--kept-only",
        action="store_true",
        help="use only the forward fits already kept (cameras without them are left out; the "
        "CNN's results are computed where missing, seconds each)",
    )
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)
    from plato_cnn.nn.card import default_model_dir, load_model
    from plato_cnn.pipelines.calibrate_forward import (
        family_campaigns,
        forward_camera_errors,
        kept_camera_errors,
    )
    from plato_cnn.pipelines.calibrate_residual import camera_residuals

    model = str(args.model or default_model_dir())
    _, card = load_model(model)
    t0 = time.perf_counter()
    per_family = {}
    for fam in args.families:
        cams = family_campaigns(fam, Path(args.workdir), args.cameras, args.workers)
        if args.kept_only:
            fw = [kept_camera_errors(str(f), t) for f, t in cams]
            cams = [c for c, w in zip(cams, fw, strict=True) if w is not None]
            fw = [w for w in fw if w is not None]
        else:
            fw = map_jobs(forward_camera_errors, [(str(f), t) for f, t in cams], args.workers)
        cnn = map_jobs(camera_residuals, [(str(f), t, model) for f, t in cams], args.workers)
        per_family[fam] = [
            camera_rows(c, w, t, card) for c, w, (_, t) in zip(cnn, fw, cams, strict=True)
        ]
    result = {
        "machine": machine_info(),
        "command": script_argv(),
        "config": vars(args),
        "model": model,
        "seconds": time.perf_counter() - t0,
        "rows": build_rows(per_family),
        "per_camera": {
            f: [{str(n): r for n, r in c.items()} for c in cs] for f, cs in per_family.items()
        },  # fmt: skip
    }
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
