"""Calibration campaigns of the high-order family: random cameras, random test designs.

:func:`emulate_calibration_family` writes ``n_cameras`` campaigns in format v1 of
:class:`plato_sim.optics.family_highorder.HighOrderCamera` cameras, each with its truth
sidecar (``"family": "highorder"``), cached like the nodal family's
(:mod:`plato_sim.scenes.family_campaigns`: the same random designs, 10-40 fields, 5-25
dithers, 1-4 frames; true T_BF uniform in :data:`CALIB_BFT_RANGE_DEGC`).

Calibration only: every random draw comes from ``SeedSequence([HIGHORDER_SEED_TAG, seed, i])``,
a stream no other emulation uses; the nodal family, which scores what this family
calibrates, is never imported here (``tests/test_architecture.py`` checks both ways).
"""

from __future__ import annotations

import logging
from pathlib import Path

from plato_sim.errors import ParameterError
from plato_sim.optics.family_highorder import HighOrderCamera
from plato_sim.optics.model import CameraModel
from plato_sim.scenes.family_campaigns import (
    camera_job,
    emulate_family,
    family_jobs,
    recheck_job,
)
from plato_sim.truth.bestfocus import TRUTH_N_SUB

__all__ = [
    "HIGHORDER_SEED_TAG",
    "HIGHORDER_MILD_SEED_TAG",
    "HIGHORDER_MILD_STRENGTH",
    "CALIB_BFT_RANGE_DEGC",
    "DESIGN_SEED_TAG",
    "highorder_camera_job",
    "highorder_mild_camera_job",
    "design_camera_job",
    "emulate_calibration_family",
    "emulate_calibration_recheck",
]

log = logging.getLogger(__name__)

#: First entropy word of every high-order-family random stream.
HIGHORDER_SEED_TAG = 0x0CA1_1B
#: First entropy word of the design-family calibration set with random test designs.
DESIGN_SEED_TAG = 0x0DE5_1A
#: First entropy word of the mild high-order calibration set.
HIGHORDER_MILD_SEED_TAG = 0x0CA1_1C
#: Strength range (uniform, per camera) of the mild high-order set: at strength 1 the terms
#: beyond the forward fit's basis give reduced chi^2 3-60 (every fit flagged); at 0.05-0.3 most
#: stay below the chi^2 test (chi^2 - 1 grows as strength squared) while the T_BF still feels
#: them: the cameras slightly outside a model, which its chi^2 cannot see, that a systematic
#: term for unflagged fits must cover.  An assumed range, not a measured one.
HIGHORDER_MILD_STRENGTH = (0.05, 0.3)
#: Range of the calibration cameras' true best-focus temperatures (degC): the
#: evaluation range of the nodal family, so that extrapolation is calibrated too.
CALIB_BFT_RANGE_DEGC = (-92.0, -68.0)


def highorder_camera_job(seed: int, i: int, bft_range_degC=CALIB_BFT_RANGE_DEGC, **fixed) -> dict:
    """Camera ``i`` of high-order calibration set ``seed``: its camera, design, true T_BF and
    the emulator's seed, all from ``SeedSequence([HIGHORDER_SEED_TAG, seed, i])``."""
    return camera_job(HIGHORDER_SEED_TAG, lambda rng, k: HighOrderCamera.random(rng, camera_id=k),
                      seed, i, bft_range_degC, **fixed)  # fmt: skip


def highorder_mild_camera_job(
    seed: int, i: int, bft_range_degC=CALIB_BFT_RANGE_DEGC, **fixed
) -> dict:
    """Camera ``i`` of mild high-order calibration set ``seed``: a high-order camera at a
    strength drawn uniformly in :data:`HIGHORDER_MILD_STRENGTH`, from
    ``SeedSequence([HIGHORDER_MILD_SEED_TAG, seed, i])``."""

    def camera(rng, k):
        return HighOrderCamera.random(
            rng, camera_id=k, strength=float(rng.uniform(*HIGHORDER_MILD_STRENGTH))
        )

    return camera_job(HIGHORDER_MILD_SEED_TAG, camera, seed, i, bft_range_degC, **fixed)


def design_camera_job(seed: int, i: int, bft_range_degC=CALIB_BFT_RANGE_DEGC, **fixed) -> dict:
    """Camera ``i`` of design-family calibration set ``seed`` (random perturbation at strength
    1, random test design), all from ``SeedSequence([DESIGN_SEED_TAG, seed, i])``."""
    return camera_job(DESIGN_SEED_TAG, lambda rng, k: CameraModel.random(rng, k + 1, strength=1.0),
                      seed, i, bft_range_degC, **fixed)  # fmt: skip


#: The calibration sets: job function and folder / camera-name prefix, by family.
_SETS = {"highorder": (highorder_camera_job, "highorder", HIGHORDER_SEED_TAG),
         "highorder-mild": (highorder_mild_camera_job, "highordermild", HIGHORDER_MILD_SEED_TAG),
         "design": (design_camera_job, "designrandom", DESIGN_SEED_TAG)}  # fmt: skip


def emulate_calibration_family(
    out_dir: str | Path,
    n_cameras: int,
    seed: int = 0,
    bft_range_degC: tuple[float, float] = CALIB_BFT_RANGE_DEGC,
    n_sub_truth: int = TRUTH_N_SUB,
    workers: int = 1,
    family: str = "highorder",
    **fixed,
) -> list[tuple[Path, dict]]:
    """Write (or reuse) ``n_cameras`` calibration campaigns of ``family`` under ``out_dir``:
    ``"highorder"`` cameras, ``"highorder-mild"`` ones (strength
    :data:`HIGHORDER_MILD_STRENGTH`), or ``"design"`` cameras with random test designs.

    Args:
        out_dir: parent folder; camera ``i`` goes to ``<prefix>_s<seed>_c<i>_n<n_sub>[_<key>]``
            (prefix ``highorder``, ``highordermild`` or ``designrandom``).
        n_cameras: number of cameras (the first ``n`` are the same for any larger count).
        seed: calibration-set seed.
        bft_range_degC: range of the true T_BF (uniform, degC).
        n_sub_truth: sub-pixel grid of the truth's expected EEF (n x n).
        workers: processes (spawned) emulating in parallel.
        **fixed: design fields that replace the drawn ones (e.g. ``plateaux_degC``); part of
            the folder name.

    Returns:
        ``(folder, truth)`` per camera, in camera order.
    """
    jobs = _calibration_jobs(out_dir, n_cameras, seed, bft_range_degC, n_sub_truth, family,
                             fixed)  # fmt: skip
    done = emulate_family(jobs, workers, desc=f"{family} calibration campaigns")
    log.info("%d %s calibration campaigns under %s", len(done), family, out_dir)
    return done


def _calibration_jobs(out_dir, n_cameras, seed, bft_range_degC, n_sub_truth, family, fixed):
    if family not in _SETS:
        raise ParameterError(f"family={family!r}: allowed {', '.join(_SETS)}")
    job_fn, prefix, _ = _SETS[family]
    return family_jobs(job_fn, prefix, out_dir, n_cameras, seed, bft_range_degC,
                       CALIB_BFT_RANGE_DEGC, n_sub_truth, fixed)  # fmt: skip


def _recheck_jobs(out_dir, n_cameras, seed, k, max_shift_degC, bft_range_degC, n_sub_truth,
                  family, fixed) -> list[dict]:  # fmt: skip
    """The emulation jobs of :func:`emulate_calibration_recheck` (nothing is written)."""
    jobs = _calibration_jobs(out_dir, n_cameras, seed, bft_range_degC, n_sub_truth, family,
                             fixed)  # fmt: skip
    return [recheck_job(j, _SETS[family][2], seed, k, max_shift_degC) for j in jobs]


def emulate_calibration_recheck(
    out_dir: str | Path,
    n_cameras: int,
    seed: int = 0,
    k: int = 1,
    max_shift_degC: float = 1.0,
    bft_range_degC: tuple[float, float] = CALIB_BFT_RANGE_DEGC,
    n_sub_truth: int = TRUTH_N_SUB,
    workers: int = 1,
    family: str = "highorder",
    **fixed,
) -> list[tuple[Path, dict]]:
    """Write (or reuse) the ``k``-th later campaign of each camera that
    :func:`emulate_calibration_family` draws for the same arguments: the same camera and test
    design, its T_BF moved by up to ``max_shift_degC``
    (:func:`plato_sim.scenes.family_campaigns.recheck_job`, from the family's own stream),
    new noise, dithers and frames.  ``(folder, truth)`` per camera, in camera order."""
    jobs = _recheck_jobs(out_dir, n_cameras, seed, k, max_shift_degC, bft_range_degC,
                         n_sub_truth, family, fixed)  # fmt: skip
    done = emulate_family(jobs, workers, desc=f"{family} re-check campaigns")
    log.info("%d %s re-check campaigns under %s", len(done), family, out_dir)
    return done
