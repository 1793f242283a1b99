"""Evaluation campaigns of the out-of-family (nodal) cameras: random cameras, random test designs.

:func:`emulate_out_of_family` writes ``n_cameras`` campaigns in format v1, each with its truth
sidecar (``<folder>.truth.json``, with ``"family": "nodal"`` and every camera parameter under
``"nodal"``), cached like :func:`plato_sim.scenes.ground_test.emulate_or_load`.  Each camera
is a :class:`plato_sim.optics.family_nodal.NodalCamera` and each campaign has its own design
(:func:`random_design`): 10-40 field positions, 5-25 dithers, 1-4 frames per dither, 2-6
plateaux 3-6 degC apart around -84..-76 degC, true T_BF uniform in -92..-68 degC (so it may lie
outside the plateaux: extrapolation is part of the test).  The truth T_BF is the exact
definition (argmax over temperature of the field-averaged expected EEF,
:mod:`plato_sim.truth.bestfocus`) on the camera's own spectrum and charge diffusion.

Evaluation only: every random draw comes from ``SeedSequence([NODAL_SEED_TAG, seed, i])``,
a stream no design-family emulation, dataset or calibration uses (they seed with plain
integers), and no training or calibration code imports this module or the family.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

from plato_sim.optics.family_nodal import NodalCamera
from plato_sim.scenes.family_campaigns import (
    camera_job,
    emulate_family,
    family_jobs,
    random_design,
    recheck_job,
)
from plato_sim.truth.bestfocus import TRUTH_N_SUB

__all__ = [
    "NODAL_SEED_TAG",
    "OOF_BFT_RANGE_DEGC",
    "random_design",
    "nodal_camera_job",
    "emulate_out_of_family",
    "emulate_recheck",
    "out_of_family_folders",
]

log = logging.getLogger(__name__)

#: First entropy word of every nodal-family random stream ("OOF" evaluation tag).
NODAL_SEED_TAG = 0x00F_F00D
#: Range of the nodal cameras' true best-focus temperatures (degC).
OOF_BFT_RANGE_DEGC = (-92.0, -68.0)


def nodal_camera_job(seed: int, i: int, bft_range_degC=OOF_BFT_RANGE_DEGC, **fixed) -> dict:
    """Camera ``i`` of the evaluation set ``seed``: its camera, design, true T_BF and the
    emulator's seed, all from ``SeedSequence([NODAL_SEED_TAG, seed, i])``."""
    return camera_job(NODAL_SEED_TAG, lambda rng, k: NodalCamera.random(rng, camera_id=k),
                      seed, i, bft_range_degC, **fixed)  # fmt: skip


def _jobs(out_dir, n_cameras, seed, bft_range_degC, n_sub_truth, only, fixed) -> list[dict]:
    """The emulation jobs of the set's cameras (those in ``only`` when given)."""
    jobs = family_jobs(nodal_camera_job, "nodal", out_dir, n_cameras, seed, bft_range_degC,
                       OOF_BFT_RANGE_DEGC, n_sub_truth, fixed)  # fmt: skip
    if only is not None:
        keep = set(only)
        jobs = [j for i, j in enumerate(jobs) if i in keep]
    return jobs


def emulate_out_of_family(
    out_dir: str | Path,
    n_cameras: int,
    seed: int = 0,
    bft_range_degC: tuple[float, float] = OOF_BFT_RANGE_DEGC,
    n_sub_truth: int = TRUTH_N_SUB,
    workers: int = 1,
    only: Collection[int] | None = None,
    **fixed,
) -> list[tuple[Path, dict]]:
    """Write (or reuse) ``n_cameras`` nodal-family campaigns under ``out_dir``.

    Args:
        out_dir: parent folder; camera ``i`` goes to ``nodal_s<seed>_c<i>_n<n_sub>[_<key>]``.
        n_cameras: number of cameras (the first ``n`` are the same for any larger count).
        seed: evaluation-set seed.
        bft_range_degC: range of the true T_BF (uniform, degC).
        n_sub_truth: sub-pixel grid of the truth's expected EEF (n x n).
        workers: processes (spawned) emulating in parallel.
        only: camera indices to emulate (default: all ``n_cameras``); the others are neither
            written nor returned, and each camera is the same as in the whole set.
        **fixed: design fields that replace the drawn ones for every camera (e.g.
            ``plateaux_degC=(-90, -85, -80, -75, -70)`` to allow plateau subsets); they are
            part of the folder name so that different settings never share a folder.

    Returns:
        ``(folder, truth)`` per camera emulated, in camera order.
    """
    jobs = _jobs(out_dir, n_cameras, seed, bft_range_degC, n_sub_truth, only, fixed)
    done = emulate_family(jobs, workers, desc="nodal-family campaigns")
    log.info("%d nodal-family campaigns under %s", len(done), out_dir)
    return done


def emulate_recheck(
    out_dir: str | Path,
    n_cameras: int,
    seed: int = 0,
    k: int = 1,
    max_shift_degC: float = 1.0,
    bft_range_degC: tuple[float, float] = OOF_BFT_RANGE_DEGC,
    n_sub_truth: int = TRUTH_N_SUB,
    workers: int = 1,
    only: Collection[int] | None = None,
    **fixed,
) -> list[tuple[Path, dict]]:
    """Write (or reuse) the ``k``-th later campaign of each camera :func:`emulate_out_of_family`
    draws for the same arguments: the same camera and test design, its T_BF moved by up to
    ``max_shift_degC`` (:func:`plato_sim.scenes.family_campaigns.recheck_job`), new noise,
    dithers and frames.  The truth sidecar holds the new T_BF; ``(folder, truth)`` per camera,
    in camera order."""
    jobs = _jobs(out_dir, n_cameras, seed, bft_range_degC, n_sub_truth, only, fixed)
    jobs = [recheck_job(j, NODAL_SEED_TAG, seed, k, max_shift_degC) for j in jobs]
    done = emulate_family(jobs, workers, desc="nodal-family re-check campaigns")
    log.info("%d nodal-family re-check campaigns under %s", len(done), out_dir)
    return done


def out_of_family_folders(
    out_dir: str | Path,
    n_cameras: int,
    seed: int = 0,
    bft_range_degC: tuple[float, float] = OOF_BFT_RANGE_DEGC,
    n_sub_truth: int = TRUTH_N_SUB,
    **fixed,
) -> list[Path]:
    """The folders :func:`emulate_out_of_family` uses for the same arguments, one per camera
    in camera order, without emulating anything (the cameras are drawn, which is cheap)."""
    jobs = family_jobs(nodal_camera_job, "nodal", out_dir, n_cameras, seed, bft_range_degC,
                       OOF_BFT_RANGE_DEGC, n_sub_truth, fixed)  # fmt: skip
    return [Path(j["dir"]) for j in jobs]
