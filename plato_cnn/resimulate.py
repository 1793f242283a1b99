"""A camera fitted by the forward method, imaged again: re-simulated campaigns with exact labels.

The forward-model fit (:mod:`plato_cnn.forward`) measures a camera's optics on its own
images: per field position its focal offset and Z5..Z22, one chromatic focal shift, the
thermal model ``dz_th = b + s (T - T_ref) + q (T - T_ref)^2`` and the charge diffusion.
:func:`fitted_camera` turns a forward report into that camera
(:class:`~plato_sim.optics.tabulated.TabulatedCamera`), and :func:`resimulate_campaign` gives
it to the campaign emulator (:func:`plato_sim.scenes.ground_test.emulate_campaign`): a
campaign of the *fitted* camera at any plateaux, dithers and frames, in format v1, with its
truth.  Its frames' labels are exact for that camera (:func:`resimulated_labels`: each
frame's thermal focal shift less its field's EEF-optimal one, as the synthetic datasets
define ``dz_from_best_um``), so fine-tuning can show the network the fitted camera at focal
offsets its campaign did not visit (near focus, far from it, between plateaux).

:func:`varied_camera` draws cameras *like* a fitted one, for fine-tuning on a family of which
only a few cameras were measured: the fitted optics turned by quarter turns and mirrored (the
symmetries of the four-CCD focal plane), each Noll term's amplitude scaled, the diffusion
scaled.  Their stamps and labels are as exact as the fitted camera's; what they add is the
variety of a family (orientations and strengths of the same aberrations) that four cameras
alone do not show.

What it is not: the real camera.  The re-simulated stamps carry what the fit measured and no
more (an aberration outside the fitted basis is absent from them), and the detector is the
emulator's (docs/forward.md, "Re-simulating a fitted camera").
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.tabulated import N_TAB_ZERNIKE, TabulatedCamera, TabulatedOptics
from plato_sim.optics.thermal import ThermalModel
from plato_sim.truth.bestfocus import TRUTH_N_SUB

__all__ = [
    "VARIANT_AMPLITUDE",
    "VARIANT_DIFFUSION",
    "varied_camera",
    "RESIM_OFFSETS_DEGC",
    "RESIM_WINDOW_PX",
    "fitted_camera",
    "resimulate_campaign",
    "resimulated_labels",
]

log = logging.getLogger(__name__)

#: Default plateaux of a re-simulated campaign, relative to the fitted T_BF (degC): both sides
#: of focus and focus itself, 30 um apart at s = 10 um/degC.
RESIM_OFFSETS_DEGC = (-6.0, -3.0, 0.0, 3.0, 6.0)
#: Readout window of a re-simulated campaign (pixels): the smallest that holds the reader's
#: 32 x 32 stamp (docs/campaign-format.md).
RESIM_WINDOW_PX = 32
#: Range of the factor drawn for each Noll term Z5..Z22 of a varied camera (uniform, one per
#: term for all positions): ASSUMED, the spread of a family's aberration strengths around a
#: measured camera (the high-order family's strengths span 0.3-1.5, docs/datasets.md).
VARIANT_AMPLITUDE = (0.5, 1.5)
#: Range of the factor on a varied camera's charge diffusion (uniform; ASSUMED, CCD to CCD).
VARIANT_DIFFUSION = (0.8, 1.2)


def fitted_camera(report: dict, camera_id: int = 0) -> TabulatedCamera:
    """The camera a forward report describes (:func:`plato_cnn.forward.forward_bft`).

    Per field position of the report's ``wavefront`` table: its focal offset and Z5..Z22;
    the chromatic scale and linear term, the diffusion, and the thermal model rewritten about
    its zero ``t0_degC`` (``s' = s + 2 q (t0 - T_ref)``, ``T_ref`` the mean of the fitted
    plateaux, the fit's reference).

    Raises:
        ParameterError: the report is not a forward report or lacks a key.
    """
    try:
        p = report["params"]
        wf = report["wavefront"]
        t_ref = float(np.mean(report["plateaux_degC"]))
        t0 = float(report["t0_degC"])
        zern = [[row[f"Z{j}_nm"] for j in range(5, N_TAB_ZERNIKE + 1)] for row in wf]
        optics = TabulatedOptics(
            theta_deg=tuple(row["theta_deg"] for row in wf),
            phi_deg=tuple(row["phi_deg"] for row in wf),
            focal_offset_um=tuple(row["focal_offset_um"] for row in wf),
            zernike_nm=zern,
            chrom_scale=float(p["chrom_scale"]),
            chrom_lin_um=float(p["chrom_lin_um"]),
            chrom_cub_um=float(p.get("chrom_cub_um", 0.0)),
        )
        s, q = float(p["s_um_per_degC"]), float(p["q_um_per_degC2"])
        diffusion = float(p["diffusion_sigma_px"])
    except (KeyError, TypeError) as exc:
        raise ParameterError(f"not a forward report (missing {exc})") from exc
    thermal = ThermalModel(s_um_per_degC=s + 2.0 * q * (t0 - t_ref), t0_degC=t0, q_um_per_degC2=q)
    return TabulatedCamera(optics=optics, thermal=thermal, diffusion_sigma_px=max(diffusion, 0.0),
                           camera_id=int(camera_id))  # fmt: skip


def varied_camera(
    camera: TabulatedCamera,
    rng: np.random.Generator,
    amplitude: tuple[float, float] = VARIANT_AMPLITUDE,
    diffusion: tuple[float, float] = VARIANT_DIFFUSION,
) -> TabulatedCamera:
    """A camera like ``camera``: its optics turned by a random number of quarter turns and
    mirrored or not (:meth:`~plato_sim.optics.tabulated.TabulatedOptics.turned`), each Noll
    term Z5..Z22 scaled by a factor uniform in ``amplitude``, the diffusion by one uniform in
    ``diffusion``; thermal model and chromatic shift unchanged."""
    from dataclasses import replace

    turns, mirror = int(rng.integers(4)), bool(rng.random() < 0.5)
    factors = {j: float(rng.uniform(*amplitude)) for j in range(5, N_TAB_ZERNIKE + 1)}
    optics = camera.optics.turned(turns, mirror).scaled(factors)
    sigma = camera.diffusion_sigma_px * float(rng.uniform(*diffusion))
    return replace(camera, optics=optics, diffusion_sigma_px=sigma)


def resimulate_campaign(
    report: dict,
    out_dir: str | Path,
    plateaux_degC: tuple[float, ...] | None = None,
    *,
    n_dithers: int = 5,
    frames_per_dither: int = 2,
    seed: int = 0,
    n_sub_truth: int = TRUTH_N_SUB,
    camera_name: str = "resim",
    camera: TabulatedCamera | None = None,
    **design_overrides,
) -> tuple[TabulatedCamera, dict]:
    """Emulate a campaign of the camera fitted in ``report`` (format v1, with its truth).

    Args:
        report: a forward report.
        out_dir: campaign folder (emulated anew if it has no truth sidecar, else read back:
            :func:`~plato_sim.scenes.ground_test.emulate_or_load`; name it by the report).
        plateaux_degC: nominal plateaux; default the fitted T_BF plus
            :data:`RESIM_OFFSETS_DEGC`, to 0.1 degC.
        n_dithers, frames_per_dither: per field position and plateau.
        seed: seed of the emulator's draws (dithers, noise).
        n_sub_truth: sub-pixel grid of the truth's expected EEF; the emulator places the
            camera's thermal zero so that its true T_BF is the report's.
        camera_name: the CAMERA of the folder names.
        camera: the camera to image (default the report's, :func:`fitted_camera`; e.g. a
            :func:`varied_camera` of it); the plateaux still follow the report's T_BF.
        **design_overrides: other :class:`~plato_sim.scenes.design.CampaignDesign` fields
            (``flux_e``, ``detector``...); ``window_px`` defaults to
            :data:`RESIM_WINDOW_PX`, the smallest window, so that every position the real
            campaign had on a CCD fits there (a larger one may move a position in azimuth off
            the fitted table, which is refused).

    Returns:
        ``(camera, truth)``: the camera as emulated (thermal zero placed by the emulator) and
        the truth dict.
    """
    from plato_sim.scenes.design import CampaignDesign
    from plato_sim.scenes.ground_test import emulate_or_load

    cam = camera if camera is not None else fitted_camera(report)
    design_overrides.setdefault("window_px", RESIM_WINDOW_PX)
    bft = float(report["bft_degC"])
    if plateaux_degC is None:
        plateaux_degC = tuple(round(bft + d, 1) for d in RESIM_OFFSETS_DEGC)
    design = CampaignDesign(
        plateaux_degC=tuple(float(t) for t in plateaux_degC),
        theta_deg=cam.optics.theta_deg,
        phi_deg=cam.optics.phi_deg,
        n_dithers=int(n_dithers),
        frames_per_dither=int(frames_per_dither),
    )
    truth = emulate_or_load(
        out_dir, design, camera_name=camera_name, bft_degC=bft, seed=int(seed),
        camera_model=cam, engine=cam.engine(), n_sub_truth=int(n_sub_truth),
        **design_overrides,
    )  # fmt: skip
    emulated = cam.with_t0(float(truth["thermal"]["t0_degC"]))
    log.info(
        "re-simulated %s: T_BF %.3f degC (fitted %.3f), thermal zero %.3f (fitted %.3f)",
        out_dir, truth["bft_degC"], bft, emulated.thermal.t0_degC, cam.thermal.t0_degC,
    )  # fmt: skip
    return emulated, truth


def resimulated_labels(
    frames, camera: TabulatedCamera, n_sub: int = 4, spectrum=None
) -> np.ndarray:
    """Each frame's focal offset from its field's EEF-optimal focus (um, > 0 behind it):
    ``dz_th(T_i) - dz_th,opt(field)`` for ``camera`` (exact for its re-simulated frames;
    :func:`plato_sim.truth.bestfocus.field_best_focus_um` on an ``n_sub`` x ``n_sub``
    sub-pixel grid, the OGSE ``spectrum`` by default).  Frames at positions not in the
    camera's table raise ParameterError."""
    theta = np.asarray(frames.field_theta_deg, float)
    phi = np.asarray(frames.field_phi_deg, float)
    k = camera.optics.field_index(theta, phi)
    uniq = np.unique(k)
    from plato_sim.truth.bestfocus import field_best_focus_um

    opt, _ = field_best_focus_um(
        camera.optics, np.asarray(camera.optics.theta_deg)[uniq],
        np.asarray(camera.optics.phi_deg)[uniq], spectrum=spectrum, engine=camera.engine(),
        n_sub=n_sub,
    )  # fmt: skip
    best = np.full(len(camera.optics.theta_deg), np.nan)
    best[uniq] = opt
    if not np.all(np.isfinite(best[k])):
        raise ParameterError("resimulated_labels: a field's best focus was not found")
    return camera.thermal.focal_shift_um(np.asarray(frames.temperature_degC, float)) - best[k]
