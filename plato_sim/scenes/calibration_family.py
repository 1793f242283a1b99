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

import numpy as np

from plato_sim.optics.family_highorder import HighOrderCamera
from plato_sim.scenes.family_campaigns import emulate_family, family_jobs, random_design
from plato_sim.truth.bestfocus import TRUTH_N_SUB

__all__ = [
    "HIGHORDER_SEED_TAG",
    "CALIB_BFT_RANGE_DEGC",
    "highorder_camera_job",
    "emulate_calibration_family",
]

log = logging.getLogger(__name__)

#: First entropy word of every high-order-family random stream.
HIGHORDER_SEED_TAG = 0x0CA1_1B
#: Range of the calibration cameras' true best-focus temperatures (degC): the
#: evaluation range of the nodal family, so that extrapolation is calibrated too.
CALIB_BFT_RANGE_DEGC = (-92.0, -68.0)


def highorder_camera_job(seed: int, i: int, bft_range_degC=CALIB_BFT_RANGE_DEGC, **fixed) -> dict:
    """Camera ``i`` of calibration set ``seed``: its camera, design, true T_BF and the
    emulator's seed, all from ``SeedSequence([HIGHORDER_SEED_TAG, seed, i])``."""
    ss = np.random.SeedSequence([HIGHORDER_SEED_TAG, int(seed), int(i)])
    r_cam, r_design, r_bft, r_emul = (np.random.default_rng(s) for s in ss.spawn(4))
    return dict(
        i=int(i),
        camera=HighOrderCamera.random(r_cam, camera_id=i),
        design=random_design(r_design, **fixed),
        bft_degC=float(r_bft.uniform(*bft_range_degC)),
        emulator_seed=int(r_emul.integers(0, 2**31 - 1)),
    )


def emulate_calibration_family(
    out_dir: str | Path,
    n_cameras: int,
    seed: int = 0,
    bft_range_degC: tuple[float, float] = CALIB_BFT_RANGE_DEGC,
    n_sub_truth: int = TRUTH_N_SUB,
    workers: int = 1,
    **fixed,
) -> list[tuple[Path, dict]]:
    """Write (or reuse) ``n_cameras`` high-order-family campaigns under ``out_dir``.

    Args:
        out_dir: parent folder; camera ``i`` goes to ``highorder_s<seed>_c<i>_n<n_sub>[_<key>]``.
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
    jobs = family_jobs(highorder_camera_job, "highorder", out_dir, n_cameras, seed, bft_range_degC,
                       CALIB_BFT_RANGE_DEGC, n_sub_truth, fixed)  # fmt: skip
    done = emulate_family(jobs, workers, desc="high-order-family campaigns")
    log.info("%d high-order-family campaigns under %s", len(done), out_dir)
    return done
