"""Calibration of the CNN's thermal-residual check (docs/cnn.md, "Uncertainty").

The network predicts each frame's focal offset; the thermal-model fit explains them by one
``s`` and one ``T_f`` per field position.  On a camera like those it was trained on, the
offsets follow that model up to frame noise; on a camera unlike them the network's bias
depends on field and defocus, and part of it is left in the residuals
(:func:`plato_cnn.fit.thermal_residual_um`).  Two numbers per plateau count (5, 3, 2; one
plateau leaves no residual) make the check:

* the **threshold**: the largest residual among **in-family** calibration cameras (design
  cameras with random test designs, :func:`plato_sim.scenes.calibration_family`,
  ``family="design"``): a camera above it is outside what the calibration saw.  With ``n``
  in-family cameras a new in-family camera exceeds the largest of them with probability
  ``1 / (n + 1)``;
* ``k``, the widening: on cameras of **other optical families** (the high-order family at
  strength 1 and at 0.05-0.3, calibration only) that exceed the threshold, the smallest ``k``
  for which ``|error| <= hypot(sigma, k * residual / |s|)`` holds for 68.27 % of them, ``sigma``
  being the model's in-family calibrated sigma.  The residual over ``|s|`` is the part of the
  network's bias the thermal model could not absorb, in degC; ``k`` says how much bias it did
  absorb for each unit left over.

The nodal family, which scores, is never used: ``tests/test_architecture.py`` checks that no
pipeline imports it.  The campaigns are those of :mod:`plato_cnn.pipelines.calibrate_forward`
(same folders and seeds); each camera's results are kept next to its campaign, named by the
model's card, so an interrupted run resumes.

Usage::

    plato-cnn calibrate-residual --model DIR --workdir out/calibration_families [--cameras 12]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from plato_cnn.nn.card import update_model_json
from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS
from plato_cnn.pipelines.calibrate_forward import family_campaigns
from plato_sim.io.atomic import atomic_write_text
from plato_sim.workers import map_jobs, pin_one_thread

__all__ = [
    "RESIDUAL_PLATEAUX",
    "camera_residuals",
    "residual_check_from",
    "calibrate_residual_check",
]

log = logging.getLogger(__name__)

#: Plateau counts the check is calibrated for (one plateau: every residual is absorbed).
RESIDUAL_PLATEAUX = (5, 3, 2)
#: In-family and outside calibration families (names of ``calibrate_forward``).
IN_FAMILY = ("design-random",)
OUTSIDE = ("highorder", "highorder-mild")


def camera_residuals(job: tuple[str, float, str]) -> dict[str, tuple[float, float, float, float]]:
    """``{"5"|"3"|"2": (error degC, in-family sigma degC, thermal residual um, s um/degC)}`` of
    one camera (``job = (folder, true T_BF, model dir)``), the check itself not applied;
    kept in ``folder + ".cnn_residual.<card sha256[:12]>.json"``."""
    pin_one_thread()
    from plato_cnn.nn.card import ModelCard, read_model_json
    from plato_cnn.predict import cnn_bft
    from plato_cnn.reader import read_campaign

    folder, truth, model_dir = job
    # the card without this check's own entry: calibrating it must not invalidate the results
    raw = {k: v for k, v in read_model_json(model_dir).items() if k != "thermal_residual_check"}
    cache = Path(f"{folder}.cnn_residual.{ModelCard.from_dict(raw).sha256()[:12]}.json")
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("truth_degC") == truth:
            return {k: tuple(v) for k, v in kept["results"].items()}
    fr = read_campaign(folder)
    fr = fr.select(fr.usable)
    out = {}
    for n in RESIDUAL_PLATEAUX:
        fit, _ = cnn_bft(fr.select(fr.plateau_mask(PLATEAU_SUBSETS[n])), model_dir, n_boot=100,
                         residual_check=False)  # fmt: skip
        out[str(n)] = (fit.bft_degC - truth, fit.sigma_degC, fit.thermal_residual_um,
                       fit.s_um_per_degC)  # fmt: skip
    atomic_write_text(cache, json.dumps({"truth_degC": truth, "results": out}))
    return out


def residual_check_from(inside: list[dict], outside: list[dict]) -> dict:
    """The check's threshold and ``k`` per plateau count from per-camera results of
    :func:`camera_residuals`, with what they give on the calibration cameras."""
    thr, kk, stats = {}, {}, {}
    for n in (str(c) for c in RESIDUAL_PLATEAUX):
        r_in = np.asarray([c[n][2] for c in inside])
        threshold = float(np.nanmax(r_in))
        e, sig, res, s = (np.asarray(v, float) for v in zip(*[c[n] for c in outside], strict=True))
        flag = res > threshold
        x = res / np.maximum(np.abs(s), 1e-9)
        need = np.sqrt(np.maximum(0.0, e**2 - sig**2))
        k = float(np.percentile(need[flag] / x[flag], 68.27)) if flag.any() else 0.0
        widened = np.where(flag, np.hypot(sig, k * x), sig)
        e_in = np.asarray([c[n][0] for c in inside])
        s_in = np.asarray([c[n][1] for c in inside])
        thr[n], kk[n] = threshold, k
        stats[n] = {
            "in_family": {"n_cameras": len(inside), "residual_um_median": float(np.median(r_in)),
                          "rms_error_degC": float(np.sqrt(np.mean(e_in**2))),
                          "coverage": float(np.mean(np.abs(e_in) <= s_in))},
            "outside": {"n_cameras": len(outside), "frac_flagged": float(np.mean(flag)),
                        "residual_um_median": float(np.median(res)),
                        "rms_error_degC": float(np.sqrt(np.mean(e**2))),
                        "coverage_before": float(np.mean(np.abs(e) <= sig)),
                        "coverage_after": float(np.mean(np.abs(e) <= widened * (1 + 1e-9)))},
        }  # fmt: skip
    return {"threshold_um": thr, "sigma_per_residual": kk, "by_plateaux": stats}


def calibrate_residual_check(
    model_dir: str | Path,
    workdir: str | Path,
    n_cameras: int = 12,
    workers: int = 2,
    write: bool = True,
) -> dict:
    """Emulate (or reuse) ``n_cameras`` cameras of each calibration family under ``workdir``,
    measure the check (:func:`residual_check_from`) and, with ``write``, store it in the
    model's ``model.json`` (``thermal_residual_check``)."""
    work = Path(workdir)
    sets = {}
    for fam in IN_FAMILY + OUTSIDE:
        cams = family_campaigns(fam, work, n_cameras, workers)
        sets[fam] = map_jobs(camera_residuals, [(str(f), t, str(model_dir)) for f, t in cams],
                             workers, desc=f"residual check: {fam} cameras")  # fmt: skip
    inside = [c for f in IN_FAMILY for c in sets[f]]
    outside = [c for f in OUTSIDE for c in sets[f]]
    result = residual_check_from(inside, outside)
    result["families"] = {"in_family": list(IN_FAMILY), "outside": list(OUTSIDE)}
    result["per_camera"] = sets
    if write:
        entry = {k: v for k, v in result.items() if k != "per_camera"}
        update_model_json(model_dir, thermal_residual_check=entry)
    log.info("thermal-residual check: thresholds %s um, k %s", result["threshold_um"],
             result["sigma_per_residual"])  # fmt: skip
    return result
