"""Campaigns of cameras from an optical family other than the design: random designs, caching.

The nodal family (evaluation, :mod:`plato_sim.scenes.out_of_family`) and the high-order family
(calibration, :mod:`plato_sim.scenes.calibration_family`) share what is written here: the
random test design of each camera (:func:`random_design`), the folder naming (design fields
fixed by the caller and a non-default T_BF range are hashed into it, so that different
settings never share a folder) and the emulation of every camera through
:func:`plato_sim.scenes.ground_test.emulate_or_load` (cached; a truth of other numerics is
emulated again).  This module imports neither family: each passes its own jobs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.scenes.design import CampaignDesign
from plato_sim.scenes.ground_test import emulate_or_load
from plato_sim.workers import map_jobs, pin_one_thread

__all__ = [
    "random_design",
    "camera_job",
    "recheck_job",
    "folder_key",
    "check_request",
    "family_jobs",
    "emulate_family",
]

log = logging.getLogger(__name__)


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


def camera_job(tag: int, camera_fn, seed: int, i: int, bft_range_degC, **fixed) -> dict:
    """Camera ``i`` of set ``seed`` of a family whose streams start with ``tag``: the camera
    (``camera_fn(rng, i)``), its test design, true T_BF and emulator seed, each from its own
    child of ``SeedSequence([tag, seed, i])``."""
    ss = np.random.SeedSequence([int(tag), int(seed), int(i)])
    r_cam, r_design, r_bft, r_emul = (np.random.default_rng(s) for s in ss.spawn(4))
    return dict(
        i=int(i),
        camera=camera_fn(r_cam, i),
        design=random_design(r_design, **fixed),
        bft_degC=float(r_bft.uniform(*bft_range_degC)),
        emulator_seed=int(r_emul.integers(0, 2**31 - 1)),
    )


def recheck_job(job: dict, tag: int, seed: int, k: int, max_shift_degC: float) -> dict:
    """The ``k``-th later campaign (``k >= 1``) of the camera of ``job`` (a
    :func:`camera_job` of set ``seed`` of the family ``tag``, with its ``dir`` and ``name``):
    the same camera and test design, its best focus moved by a shift uniform in
    ``+-max_shift_degC`` (the focal plane settling between campaigns, as after vibration or
    thermal cycling), a new emulator seed; the same camera name, folder
    ``<dir>_recheck<k>_<shift key>``.  Draws come
    from ``SeedSequence([tag, seed, i, k])``, which no :func:`camera_job` stream uses."""
    if k < 1:
        raise ParameterError(f"k={k}: the first campaign is the camera's own job; k >= 1")
    if not 0.0 <= max_shift_degC <= 10.0:
        raise ParameterError(f"max_shift_degC={max_shift_degC}: outside [0, 10]")
    ss = np.random.SeedSequence([int(tag), int(seed), int(job["i"]), int(k)])
    r_shift, r_emul = (np.random.default_rng(s) for s in ss.spawn(2))
    shift = float(r_shift.uniform(-max_shift_degC, max_shift_degC))
    key = hashlib.sha256(repr(float(max_shift_degC)).encode()).hexdigest()[:6]
    out = dict(job)
    out.update(
        bft_degC=float(job["bft_degC"]) + shift,
        bft_shift_degC=shift,
        emulator_seed=int(r_emul.integers(0, 2**31 - 1)),
        dir=f"{job['dir']}_recheck{int(k)}_{key}",
    )
    return out


def check_request(n_cameras: int, bft_range_degC: tuple[float, float]) -> None:
    """Refuse a camera count below 1 or a T_BF range outside [-120, -40] degC or reversed."""
    if n_cameras < 1:
        raise ParameterError(f"n_cameras={n_cameras}: outside the allowed range [1, inf)")
    lo, hi = bft_range_degC
    if not -120.0 <= lo <= hi <= -40.0:
        raise ParameterError(f"bft_range_degC={bft_range_degC}: outside [-120, -40] or reversed")


def folder_key(fixed: dict, bft_range_degC, default_range_degC) -> str:
    """``""``, or ``"_<8 hex>"`` naming the fixed design fields and a non-default T_BF range."""
    if not fixed and tuple(bft_range_degC) == tuple(default_range_degC):
        return ""
    text = repr((sorted(fixed.items()), tuple(bft_range_degC)))
    return "_" + hashlib.sha256(text.encode()).hexdigest()[:8]


def family_jobs(
    job_fn, prefix: str, out_dir: str | Path, n_cameras: int, seed: int,
    bft_range_degC: tuple[float, float], default_range_degC: tuple[float, float],
    n_sub_truth: int, fixed: dict,
) -> list[dict]:  # fmt: skip
    """The emulation jobs of cameras ``0 .. n_cameras - 1`` of a family's set ``seed``:
    ``job_fn(seed, i, bft_range_degC, **fixed)`` draws each camera; camera ``i`` goes to
    ``<out_dir>/<prefix>_s<seed>_c<i>_n<n_sub_truth>[_<key>]`` (:func:`folder_key`)."""
    check_request(n_cameras, bft_range_degC)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = folder_key(fixed, bft_range_degC, default_range_degC)
    jobs = []
    for i in range(n_cameras):
        job = job_fn(seed, i, bft_range_degC, **fixed)
        job.update(dir=str(out / f"{prefix}_s{seed}_c{i:03d}_n{n_sub_truth}{key}"),
                   name=f"{prefix}{i:03d}", n_sub_truth=int(n_sub_truth))  # fmt: skip
        jobs.append(job)
    return jobs


def _emulate_one(job: dict) -> dict:
    pin_one_thread()  # the same bits whatever the number of workers
    cam, design = job["camera"], job["design"]
    # a family camera brings its own diffusion and detected spectrum; a design camera
    # (CameraModel) takes the emulator's defaults
    engine = cam.engine() if hasattr(cam, "engine") else None
    spectrum = cam.spectrum(design.n_wavelengths) if hasattr(cam, "spectrum") else None
    return emulate_or_load(
        job["dir"], design, camera_name=job["name"], bft_degC=job["bft_degC"],
        seed=job["emulator_seed"], camera_model=cam, engine=engine, spectrum=spectrum,
        n_sub_truth=job["n_sub_truth"],
    )  # fmt: skip


def emulate_family(jobs: list[dict], workers: int = 1, desc: str = "campaigns") -> list:
    """Emulate (or reuse) one campaign per job; returns ``(folder, truth)`` in job order.

    Each job holds ``dir``, ``name``, ``camera`` (a family camera with ``engine()`` and
    ``spectrum(n)``, or a design :class:`~plato_sim.optics.model.CameraModel`),
    ``design``, ``bft_degC``, ``emulator_seed`` and ``n_sub_truth``.
    """
    truths = map_jobs(_emulate_one, jobs, workers, desc=desc)
    return [(Path(j["dir"]), t) for j, t in zip(jobs, truths, strict=True)]
