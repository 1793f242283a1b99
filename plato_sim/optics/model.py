"""The optical model of one camera: design aberrations + per-camera perturbation + thermal.

Composes :mod:`plato_sim.optics.camera`, :mod:`plato_sim.optics.wavefront` and
:mod:`plato_sim.optics.thermal` into the per-star, per-wavelength Noll coefficients that the
PSF engines consume.

The local focal offset of a star (um, > 0 behind focus) at field ``(theta, phi)`` and
wavelength ``lambda`` is::

    dz_local = dz_th(T) + curvature(h) * curvature_scale + tilt(h, phi) + chromatic(lambda)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.thermal import ThermalModel
from plato_sim.optics.wavefront import N_ZERNIKE, CameraPerturbation, FieldAberrations, dz_to_z4_nm

__all__ = ["OpticalModel", "CameraModel"]


@dataclass(frozen=True)
class OpticalModel:
    """Camera design, its residual aberrations and one camera's perturbation."""

    camera: Camera = PLATO_NORMAL_CAMERA
    design: FieldAberrations = field(default_factory=FieldAberrations)
    perturbation: CameraPerturbation = field(default_factory=CameraPerturbation)

    def field_focal_offset_um(self, theta_deg: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
        """Achromatic focal offset (um) of each field position: curvature and tilt."""
        p = self.perturbation
        h = np.asarray(theta_deg, dtype=float) / self.design.field_radius_deg
        phi = np.radians(np.asarray(phi_deg, dtype=float))
        tilt = p.tilt_um * h * np.cos(phi - np.radians(p.tilt_phi_deg))
        return p.curvature_scale * self.design.focal_offset_um(theta_deg, phi_deg) + tilt

    def chromatic_shift_um(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Chromatic focal shift (um) of this camera at ``wavelength_nm``."""
        return self.perturbation.chrom_scale * self.design.chromatic_shift_um(wavelength_nm)

    def local_focal_offset_um(
        self,
        theta_deg: np.ndarray,
        phi_deg: np.ndarray,
        dz_th_um: np.ndarray | float = 0.0,
        wavelength_nm: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Total focal offset (um) at field positions; chromatic term if a wavelength is given."""
        dz = np.asarray(dz_th_um, dtype=float) + self.field_focal_offset_um(theta_deg, phi_deg)
        if wavelength_nm is not None:
            dz = dz + self.chromatic_shift_um(wavelength_nm)
        return dz

    def zernikes_nm(
        self,
        theta_deg: np.ndarray | float,
        phi_deg: np.ndarray | float,
        dz_th_um: np.ndarray | float,
        wavelengths_nm: np.ndarray,
    ) -> np.ndarray:
        """Noll coefficients (nm RMS) per star and wavelength, shape ``(B, L, N_ZERNIKE)``.

        ``theta_deg``, ``phi_deg`` and ``dz_th_um`` broadcast to ``B`` stars; ``dz_th_um`` is
        the thermal focal shift (um).  Z4 carries the star's total local focal offset.
        """
        t, ph, dz = np.broadcast_arrays(
            np.atleast_1d(np.asarray(theta_deg, dtype=float)),
            np.atleast_1d(np.asarray(phi_deg, dtype=float)),
            np.atleast_1d(np.asarray(dz_th_um, dtype=float)),
        )
        lam = np.atleast_1d(np.asarray(wavelengths_nm, dtype=float))
        p = self.perturbation
        base = self.design.zernikes_nm(t, ph)
        base[..., 4:6] *= p.astig_scale
        base[..., 6:8] *= p.coma_scale
        base[..., 10] *= p.spherical_scale
        base[..., 4:N_ZERNIKE] += np.asarray(p.extra_nm)
        out = np.repeat(base[:, None, :], lam.size, axis=1)
        dz_local = (dz + self.field_focal_offset_um(t, ph))[:, None] + self.chromatic_shift_um(lam)[
            None, :
        ]
        out[..., 3] = dz_to_z4_nm(dz_local, self.camera.f_number)
        return out


@dataclass(frozen=True)
class CameraModel:
    """Everything that makes one emulated camera: its optics and its thermal focus."""

    optics: OpticalModel = field(default_factory=OpticalModel)
    thermal: ThermalModel = field(default_factory=ThermalModel)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        camera_id: int,
        strength: float = 1.0,
        s_range_um_per_degC: tuple[float, float] = (8.0, 12.0),
        camera: Camera = PLATO_NORMAL_CAMERA,
        design: FieldAberrations | None = None,
        t0_degC: float = -80.0,
    ) -> CameraModel:
        """A random camera: perturbation of strength ``strength``, ``s`` uniform in range."""
        pert = CameraPerturbation.random(rng, camera_id, strength)
        s = float(rng.uniform(*s_range_um_per_degC))
        return cls(
            OpticalModel(camera, design or FieldAberrations(), pert),
            ThermalModel(s_um_per_degC=s, t0_degC=t0_degC),
        )

    def with_t0(self, t0_degC: float) -> CameraModel:
        """Same camera, thermal zero moved to ``t0_degC``."""
        return replace(self, thermal=self.thermal.with_t0(t0_degC))
