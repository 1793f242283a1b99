"""How far the sub-pixel grid of the expected EEF moves T_BF: the definition's discretisation.

The best-focus temperature is defined with the EEF averaged over *uniform* sub-pixel positions
of the star (docs/facts.md); the library evaluates that average on an ``n x n`` grid of cell
centres (:func:`plato_sim.truth.bestfocus.subpixel_grid`).  The EEF of one star is not a smooth
function of its sub-pixel position (the best 2x2 box and its concentric 10x10 box jump from one
pixel to the next), so the grid average converges slowly, and the argmax over temperature of a
flat-topped curve magnifies what is left.  This benchmark measures it: for each camera of an
emulated campaign cache (design family, the truth sidecar's optics, the campaign's own field
table), ``T_BF`` on grids of ``--grids`` and its difference from the finest.

Usage::

    python -m benchmarks.truth_convergence [--quick] [--cache out/classical_bft_cache]
        [--grids 4,8,12,16,24] [--json out/truth_convergence.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/truth_convergence.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    parse_with_quick,
    report,
)
from plato_sim.workers import map_jobs, pin_one_thread  # noqa: E402

QUICK = dict(cameras=2, grids="4,8,16")


def _camera(job: dict) -> dict:
    """T_BF of one camera on every grid."""
    pin_one_thread()
    from plato_sim.bounds import camera_from_truth
    from plato_sim.scenes.ground_test import read_truth
    from plato_sim.truth.bestfocus import best_focus_shift_um

    truth = read_truth(job["truth"])
    cam = camera_from_truth(truth)
    th = np.asarray(truth["fields"]["theta_deg"], float)
    ph = np.asarray(truth["fields"]["phi_deg"], float)
    out = {"camera": truth["camera"], "bft_degC": {}, "seconds": {}}
    for n in job["grids"]:
        t0 = time.perf_counter()
        dz, _ = best_focus_shift_um(cam.optics, th, ph, n_sub=n)
        out["bft_degC"][n] = float(cam.thermal.temperature_degC(dz))
        out["seconds"][n] = time.perf_counter() - t0
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="out/classical_bft_cache", help="emulated campaigns")
    ap.add_argument("--cameras", type=int, default=8, help="cameras (design family) to use")
    ap.add_argument("--grids", default="4,8,12,16,24", help="sub-pixel grids n (n x n)")
    ap.add_argument("--workers", type=int, default=2, help="local processes")
    ap.add_argument("--json", default=None, help="write the result here")
    return parse_with_quick(ap, argv, QUICK)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    grids = sorted({int(x) for x in args.grids.split(",")})
    truths = []
    for p in sorted(Path(args.cache).glob("*.truth.json")):
        if '"family": "nodal"' not in p.read_text():
            truths.append(p)
    truths = truths[: args.cameras]
    if not truths:
        raise SystemExit(f"no design-family truth sidecars in {args.cache}")
    t0 = time.perf_counter()
    cams = map_jobs(_camera, [dict(truth=str(t), grids=grids) for t in truths], args.workers)
    finest = grids[-1]
    rows = []
    for n in grids:
        d = np.array([c["bft_degC"][n] - c["bft_degC"][finest] for c in cams])
        rows.append(
            dict(
                grid=f"{n}x{n}",
                rms_vs_finest_degC=float(np.sqrt(np.mean(d**2))),
                max_abs_degC=float(np.max(np.abs(d))),
                seconds_per_camera=float(np.mean([c["seconds"][n] for c in cams])),
            )
        )
    cols = [
        ("grid", "sub-pixel grid", ""),
        ("rms_vs_finest_degC", f"RMS of T_BF - T_BF({finest}x{finest}) (degC)", ".4f"),
        ("max_abs_degC", "max abs (degC)", ".4f"),
        ("seconds_per_camera", "s / camera", ".1f"),
    ]
    result = dict(
        machine=machine_info(),
        config=vars(args),
        cameras=cams,
        rows=rows,
        seconds=time.perf_counter() - t0,
    )
    report(result, markdown_table(rows, cols), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
