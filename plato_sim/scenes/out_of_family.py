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
from pathlib import Path

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.family_nodal import NodalCamera
from plato_sim.scenes.design import CampaignDesign
from plato_sim.scenes.ground_test import emulate_or_load
from plato_sim.truth.bestfocus import TRUTH_N_SUB

__all__ = [
    "NODAL_SEED_TAG",
    "OOF_BFT_RANGE_DEGC",
    "random_design",
    "nodal_camera_job",
    "emulate_out_of_family",
]

log = logging.getLogger(__name__)

#: First entropy word of every nodal-family random stream ("OOF" evaluation tag).
NODAL_SEED_TAG = 0x00F_F00D
#: Range of the nodal cameras' true best-focus temperatures (degC).
OOF_BFT_RANGE_DEGC = (-92.0, -68.0)


def random_design(rng: np.random.Generator, **fixed) -> CampaignDesign:
    """A test design unlike the reference 40 x 25 x 2: 10-40 fields, 5-25 dithers, 1-4 frames,
    2-6 plateaux 3-6 degC apart centred in -84..-76 degC (rounded to 0.5 degC), window 48 px.
    ``fixed`` design fields replace the drawn ones (e.g. ``plateaux_degC``)."""
    n_fields = int(rng.integers(10, 41))
    n_dithers = int(rng.integers(5, 26))
    frames = int(rng.integers(1, 5))
    n_pl = int(rng.integers(2, 7))
    spacing = float(rng.choice([3.0, 4.0, 5.0, 6.0]))
    centre = float(rng.uniform(-84.0, -76.0))
    plateaux = np.round(2.0 * (centre + spacing * (np.arange(n_pl) - (n_pl - 1) / 2.0))) / 2.0
    design = CampaignDesign(
        plateaux_degC=tuple(float(t) for t in plateaux), n_fields=n_fields, n_dithers=n_dithers,
        frames_per_dither=frames, window_px=48,
    )  # fmt: skip
    return design.with_(**fixed)


def nodal_camera_job(seed: int, i: int, bft_range_degC=OOF_BFT_RANGE_DEGC, **fixed) -> dict:
    """Camera ``i`` of the evaluation set ``seed``: its camera, design, true T_BF and the
    emulator's seed, all from ``SeedSequence([NODAL_SEED_TAG, seed, i])``."""
    ss = np.random.SeedSequence([NODAL_SEED_TAG, int(seed), int(i)])
    r_cam, r_design, r_bft, r_emul = (np.random.default_rng(s) for s in ss.spawn(4))
    camera = NodalCamera.random(r_cam, camera_id=i)
    design = random_design(r_design, **fixed)
    return dict(
        i=int(i),
        camera=camera,
        design=design,
        bft_degC=float(r_bft.uniform(*bft_range_degC)),
        emulator_seed=int(r_emul.integers(0, 2**31 - 1)),
    )


def _emulate_one(job: dict) -> dict:
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    cam: NodalCamera = job["camera"]
    design: CampaignDesign = job["design"]
    return emulate_or_load(
        job["dir"], design, camera_name=f"nodal{job['i']:03d}", bft_degC=job["bft_degC"],
        seed=job["emulator_seed"], camera_model=cam, engine=cam.engine(),
        spectrum=cam.spectrum(design.n_wavelengths), n_sub_truth=job["n_sub_truth"],
    )  # fmt: skip


def emulate_out_of_family(
    out_dir: str | Path,
    n_cameras: int,
    seed: int = 0,
    bft_range_degC: tuple[float, float] = OOF_BFT_RANGE_DEGC,
    n_sub_truth: int = TRUTH_N_SUB,
    workers: int = 1,
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
        **fixed: design fields that replace the drawn ones for every camera (e.g.
            ``plateaux_degC=(-90, -85, -80, -75, -70)`` to allow plateau subsets); they are
            part of the folder name so that different settings never share a folder.

    Returns:
        ``(folder, truth)`` per camera, in camera order.
    """
    if n_cameras < 1:
        raise ParameterError(f"n_cameras={n_cameras}: outside the allowed range [1, inf)")
    lo, hi = bft_range_degC
    if not -120.0 <= lo <= hi <= -40.0:
        raise ParameterError(f"bft_range_degC={bft_range_degC}: outside [-120, -40] or reversed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = ""
    if fixed or tuple(bft_range_degC) != OOF_BFT_RANGE_DEGC:
        import hashlib

        text = repr((sorted(fixed.items()), tuple(bft_range_degC)))
        key = "_" + hashlib.sha256(text.encode()).hexdigest()[:8]
    jobs = []
    for i in range(n_cameras):
        job = nodal_camera_job(seed, i, bft_range_degC, **fixed)
        job.update(dir=str(out / f"nodal_s{seed}_c{i:03d}_n{n_sub_truth}{key}"),
                   n_sub_truth=int(n_sub_truth))  # fmt: skip
        jobs.append(job)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            truths = pool.map(_emulate_one, jobs, chunksize=1)
    else:
        truths = [_emulate_one(j) for j in jobs]
    log.info("%d nodal-family campaigns under %s", len(truths), out)
    return [(Path(j["dir"]), t) for j, t in zip(jobs, truths, strict=True)]
