"""In-orbit cameras of the nodal family, for EVALUATION ONLY.

The in-orbit check (``plato_cnn.focuscheck``) and its ground correction are calibrated on the
design family and the mild high-order family (``plato_sim.scenes.inorbit.make_camera``).  Its
out-of-family claims are scored here on a family that none of that saw: the nodal cameras of
:mod:`plato_sim.optics.family_nodal` (nodal aberration fields, CCD height steps, focal-plane
tilt, quadratic thermal response, their own charge diffusion and detected OGSE spectrum).

A :class:`NodalInorbitCamera` offers what :func:`plato_sim.scenes.inorbit.emulate_imagettes`
needs of a camera (``model()``, ``bft_degC``, ``dz_bf_um``, ``field_best_focus_um``,
``field_radius_deg``, ``camera_id``) and what a ground campaign of the same camera needs
(``engine()``: its charge diffusion; ``spectrum(n)``: the OGSE spectrum as it detects it).
Its truths follow the definition of docs/facts.md ("Best-focus temperature"): T_BF maximises
the field-averaged expected EEF over the 40 ground-test positions, with the camera's own
detected OGSE spectrum and diffusion, as the ground campaign emulator computes it.

In orbit the stars are blackbodies through the design band and transmission and the camera's
own QE (the design's times its droop, :meth:`NodalCamera.qe_factor`, as on the ground: with
the family's strong chromatic focal shift the QE's shape moves the focus a star is seen at);
its charge diffusion acts on both; the OGSE lamp's tilt acts on the ground only; its
vignetting, a flux loss of at most 15 % at the field edge, is not applied to the stars.

Draws: ``SeedSequence([NODAL_SEED_TAG, seed], spawn_key=(INORBIT_SPAWN_KEY,))``, a stream no
ground-test evaluation set of the family uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.family_nodal import NodalCamera
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.inorbit import inorbit_config_path
from plato_sim.scenes.out_of_family import NODAL_SEED_TAG
from plato_sim.scenes.sampling import (
    best_focus_map_basis,
    camera_best_focus_map,
    load_config,
    make_engine,
)

__all__ = ["INORBIT_SPAWN_KEY", "NodalInorbitCamera", "draw_nodal_camera", "make_nodal_camera"]

log = logging.getLogger(__name__)

#: Spawn key of the in-orbit cameras' streams under the nodal family's tag.
INORBIT_SPAWN_KEY = 0x0B17
#: True T_BF range of the in-orbit cameras (degC): the in-orbit bench's draw.
BFT_RANGE_DEGC = (-84.0, -72.0)


@dataclass(frozen=True)
class NodalInorbitCamera:
    """A nodal-family camera with the truths the in-orbit emulator records.

    Attributes:
        camera: the :class:`~plato_sim.optics.family_nodal.NodalCamera`, its thermal zero
            ``T0`` placed so that its best-focus temperature is ``bft_degC``.
        bft_degC: best-focus temperature (degC, docs/facts.md definition).
        dz_bf_um: thermal focal shift at best focus (um).
        map_coef_um: the smooth remainder of the per-field EEF-optimal focus on the best-focus
            map's polynomials (:func:`plato_sim.scenes.sampling.best_focus_map_basis`, um).
        field_radius_deg: radius normalising the map's field position (deg).
        camera_id: the camera's id.
    """

    camera: NodalCamera
    bft_degC: float
    dz_bf_um: float
    map_coef_um: tuple[float, ...]
    field_radius_deg: float
    camera_id: int

    family = "nodal"

    def model(self) -> NodalCamera:
        """The camera (it duck-types :class:`plato_sim.optics.model.CameraModel`)."""
        return self.camera

    def engine(self, **kwargs) -> FastEngine:
        """A fast engine with the camera's charge diffusion (``kwargs``: other settings)."""
        return self.camera.engine(**kwargs)

    def spectrum(self, n: int = 10):
        """The OGSE spectrum as the camera detects it, ``n`` bins (ground campaigns)."""
        return self.camera.spectrum(n)

    def field_best_focus_um(self, theta_deg, phi_deg, optics=None) -> np.ndarray:
        """EEF-optimal thermal focal shift (um) at field positions: the map's smooth part
        minus the optics' achromatic field offset (curvature, tilt, CCD steps)."""
        optics = optics or self.camera.optics
        rest = best_focus_map_basis(theta_deg, phi_deg, self.field_radius_deg).T @ np.asarray(
            self.map_coef_um
        )
        return rest - optics.field_focal_offset_um(theta_deg, phi_deg)


def draw_nodal_camera(seed: int) -> tuple[NodalCamera, float]:
    """In-orbit nodal camera ``seed``'s draws: the camera (its ``T0`` not yet placed) and a
    best-focus temperature (degC) uniform in :data:`BFT_RANGE_DEGC`.

    Raises:
        ParameterError: a negative seed.
    """
    if int(seed) < 0:
        raise ParameterError(f"seed={seed}: must be >= 0")
    ss = np.random.SeedSequence([NODAL_SEED_TAG, int(seed)], spawn_key=(INORBIT_SPAWN_KEY,))
    r_cam, r_bft = (np.random.default_rng(s) for s in ss.spawn(2))
    cam = NodalCamera.random(r_cam, camera_id=int(seed))
    return cam, float(r_bft.uniform(*BFT_RANGE_DEGC))


def make_nodal_camera(
    seed: int, bft_degC: float | None = None, n_wavelengths: int | None = None
) -> NodalInorbitCamera:
    """In-orbit nodal camera ``seed`` (deterministic; ~10 s on one core).

    Args:
        seed: the camera's seed (its own stream: module docstring).
        bft_degC: its best-focus temperature (degC); default the draw of
            :func:`draw_nodal_camera`.
        n_wavelengths: OGSE samples of the best-focus search (default the in-orbit
            config's, 10; fewer: a cheaper camera for tests).

    Raises:
        ParameterError: a negative seed.
    """
    cam, t_drawn = draw_nodal_camera(seed)
    t_bf = t_drawn if bft_degC is None else float(bft_degC)
    cfg = load_config(inorbit_config_path())
    bf = cfg["best_focus"]
    engine = make_engine(cfg).replace(diffusion_sigma_px=cam.diffusion_sigma_px)
    sp = cam.spectrum(int(n_wavelengths or bf["n_wavelengths"]))
    radius = float(cfg["fields"]["radius_deg"])
    _, _, coef, dz_bf = camera_best_focus_map(cfg, cam.optics, sp, engine, exact=True)
    t0 = t_bf - float(cam.thermal.with_t0(0.0).temperature_degC(dz_bf))
    log.debug("nodal in-orbit camera %d: T_BF %.3f degC, dz_bf %.2f um", seed, t_bf, dz_bf)
    return NodalInorbitCamera(
        camera=cam.with_t0(t0),
        bft_degC=t_bf,
        dz_bf_um=float(dz_bf),
        map_coef_um=tuple(float(v) for v in coef),
        field_radius_deg=radius,
        camera_id=int(seed),
    )
