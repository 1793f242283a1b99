"""Calibration of the improved classical fit's shape term with 3 plateaux.

:data:`plato_cnn.classical.THREE_PLATEAU_SHAPE_SIGMA_DEGC`: with three plateaux the improved
fit's symmetric shape passes through the three plateau means, and its sigma (the bootstrap's)
does not see the asymmetry of the EEF curve.  The term is measured here on the calibration
cameras of :func:`plato_cnn.pipelines.field_head.calibration_campaigns` (random test designs,
their own seed streams; the nodal family never calibrates), restricted to the 3-plateau subset
of :data:`plato_cnn.pipelines.calibrate.PLATEAU_SUBSETS`, by the method of every calibrated
term of the project (:func:`plato_cnn.pipelines.calibrate_forward.systematic_from_errors`).
The result is the value to write into ``THREE_PLATEAU_SHAPE_SIGMA_DEGC``.

Usage::

    python -m plato_cnn.pipelines.calibrate_classical [--cache out/out_of_family_cache]
        [--workers 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS
from plato_cnn.pipelines.field_head import CALIBRATION_SETS
from plato_sim.workers import map_jobs, pin_one_thread

log = logging.getLogger(__name__)

__all__ = ["shape_term_errors", "calibrate_shape_term"]


def shape_term_errors(job: tuple[str, float]) -> dict[str, tuple[float, float, float]]:
    """``{"3": (error, bootstrap sigma, 0)}`` (degC) of the improved fit without its shape term
    on the 3-plateau subset of one ``(campaign folder, true T_BF)``."""
    import warnings

    from plato_cnn.classical import improved_bft
    from plato_cnn.reader import read_campaign
    from plato_sim.errors import PlatoFocusWarning

    pin_one_thread()
    folder, truth = job
    fr = read_campaign(folder)
    fr = fr.select(fr.usable)
    fr = fr.select(fr.plateau_mask(PLATEAU_SUBSETS[3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlatoFocusWarning)
        r = improved_bft(fr, "gauss", n_boot=100, seed=0, shape_term=False)
    return {"3": (r.bft_degC - truth, r.extra["sigma_bootstrap_degC"], 0.0)}


def calibrate_shape_term(campaigns: list[tuple[str, float]], workers: int = 1) -> dict:
    """The term and its statistics (``systematic_sigma_degC``, RMS, bias...) over
    ``campaigns`` (``(folder, true T_BF)``)."""
    from plato_cnn.pipelines.calibrate_forward import systematic_from_errors

    per_cam = map_jobs(shape_term_errors, campaigns, workers)
    stats = systematic_from_errors(per_cam, keys=["3"])["3"]
    return {**stats, "campaigns": [f for f, _ in campaigns],
            "errors_degC": [c["3"][0] for c in per_cam]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from plato_cnn.pipelines.field_head import calibration_campaigns

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="out/out_of_family_cache", help="calibration campaigns")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    campaigns = calibration_campaigns(args.cache, list(CALIBRATION_SETS), args.workers)
    r = calibrate_shape_term(campaigns, args.workers)
    print(
        f"{r['n_fits']} cameras, 3 plateaux: RMS {r['rms_error_degC']:.3f} degC, bias "
        f"{r['bias_degC']:+.3f} degC, shape term {r['systematic_sigma_degC']:.3f} degC"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
