"""A camera known by a table: one wavefront per field position, a thermal model, a diffusion.

Where the other optical models describe the wavefront as functions of field position (the
design's, :mod:`plato_sim.optics.model`; the families'), a :class:`TabulatedOptics` holds it at
a finite set of field positions only: each position's achromatic focal offset (um) and its
Noll Z5..Z22 (nm RMS, :mod:`plato_sim.optics.wavefront` conventions), with one chromatic focal
shift for the camera, written as a scale of the design's secondary spectrum plus a linear term
(the form the forward-model fit measures, docs/forward.md).  That is what a fit of a real
camera's images gives (:func:`plato_cnn.resimulate.fitted_camera`), so that the camera can be
imaged again, by the campaign emulator and the truth code, at temperatures, dithers and
frames its campaign did not have.

Asked for a position that is not in its table (beyond :data:`FIELD_MATCH_DEG`), it raises
:class:`~plato_sim.errors.ParameterError`: it does not interpolate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG, PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.family_base import FamilyCamera
from plato_sim.optics.thermal import ThermalModel
from plato_sim.optics.wavefront import FieldAberrations, dz_to_z4_nm

__all__ = ["FIELD_MATCH_DEG", "N_TAB_ZERNIKE", "TabulatedOptics", "TabulatedCamera"]

#: Largest distance (deg, in the focal plane's angular coordinates) at which a requested field
#: position is taken as a tabulated one.
FIELD_MATCH_DEG = 1e-3
#: Highest Noll index held per position (Z5..Z22, as the forward-model fit).
N_TAB_ZERNIKE = 22


def _tuple2(a, name: str, shape: tuple[int, int]) -> tuple[tuple[float, ...], ...]:
    arr = np.asarray(a, dtype=float)
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise ParameterError(f"TabulatedOptics.{name}: shape {arr.shape}, expected finite {shape}")
    return tuple(tuple(float(v) for v in r) for r in arr)


@dataclass(frozen=True)
class TabulatedOptics:
    """Wavefront of one camera at ``F`` field positions.

    Attributes:
        theta_deg, phi_deg: ``(F,)`` field positions (deg).
        focal_offset_um: ``(F,)`` achromatic focal offset of each position (um, > 0 behind
            focus): focal-plane shape, tilt, CCD height; the thermal shift is added to it.
        zernike_nm: ``(F, 18)`` Noll Z5..Z22 of each position (nm RMS).
        chrom_scale: scale of the design's chromatic focal shift
            (:meth:`~plato_sim.optics.wavefront.FieldAberrations.chromatic_shift_um`).
        chrom_lin_um: linear chromatic term, um per 100 nm from ``design.chrom_ref_nm``.
        chrom_cub_um: cubic chromatic term, um per (100 nm)^3 from ``design.chrom_ref_nm``.
        camera: geometry, band, pixel.
        field_radius_deg: ``theta`` at ``h = 1`` (used by nothing here but the emulator's
            field bookkeeping).
        design: the design whose chromatic shape ``chrom_scale`` scales.
    """

    theta_deg: tuple[float, ...]
    phi_deg: tuple[float, ...]
    focal_offset_um: tuple[float, ...]
    zernike_nm: tuple[tuple[float, ...], ...]
    chrom_scale: float = 1.0
    chrom_lin_um: float = 0.0
    chrom_cub_um: float = 0.0
    camera: Camera = PLATO_NORMAL_CAMERA
    field_radius_deg: float = FIELD_RADIUS_DEG
    design: FieldAberrations = field(default_factory=FieldAberrations)

    def __post_init__(self) -> None:
        n = len(self.theta_deg)
        if n == 0:
            raise ParameterError("TabulatedOptics: no field position")
        for name in ("theta_deg", "phi_deg", "focal_offset_um"):
            a = np.asarray(getattr(self, name), dtype=float).reshape(-1)
            if a.shape != (n,) or not np.all(np.isfinite(a)):
                raise ParameterError(f"TabulatedOptics.{name}: need {n} finite values")
            object.__setattr__(self, name, tuple(float(v) for v in a))
        shape = (n, N_TAB_ZERNIKE - 4)
        object.__setattr__(self, "zernike_nm", _tuple2(self.zernike_nm, "zernike_nm", shape))
        for name in ("chrom_scale", "chrom_lin_um", "chrom_cub_um"):
            if not np.isfinite(getattr(self, name)):
                raise ParameterError(f"TabulatedOptics.{name} must be finite")

    # ------------------------------------------------------------------ lookup
    def field_index(self, theta_deg, phi_deg) -> np.ndarray:
        """Index of each requested position in the table; ParameterError if one is not there."""
        t = np.atleast_1d(np.asarray(theta_deg, dtype=float)).ravel()
        p = np.radians(np.atleast_1d(np.asarray(phi_deg, dtype=float)).ravel())
        tt, pp = np.asarray(self.theta_deg), np.radians(np.asarray(self.phi_deg))
        # distance in the plane of (theta cos phi, theta sin phi)
        dx = t[:, None] * np.cos(p[:, None]) - tt[None] * np.cos(pp[None])
        dy = t[:, None] * np.sin(p[:, None]) - tt[None] * np.sin(pp[None])
        d = np.hypot(dx, dy)
        k = np.argmin(d, axis=1)
        far = d[np.arange(len(k)), k] > FIELD_MATCH_DEG
        if np.any(far):
            i = int(np.flatnonzero(far)[0])
            raise ParameterError(
                f"field position (theta {t[i]:.4f}, phi {np.degrees(p[i]):.3f}) deg is not in "
                f"the table of {len(tt)} positions"
            )
        return k

    # ------------------------------------------------------------------ focal offsets
    def field_focal_offset_um(self, theta_deg, phi_deg) -> np.ndarray:
        """Achromatic focal offset (um) of tabulated positions."""
        shape = np.broadcast(np.asarray(theta_deg), np.asarray(phi_deg)).shape
        k = self.field_index(*np.broadcast_arrays(theta_deg, phi_deg))
        return np.asarray(self.focal_offset_um)[k].reshape(shape)

    def chromatic_shift_um(self, wavelength_nm) -> np.ndarray:
        """Chromatic focal shift (um) at ``wavelength_nm``."""
        lam = np.asarray(wavelength_nm, dtype=float)
        x = (lam - self.design.chrom_ref_nm) / 100.0
        poly = self.chrom_lin_um * x + self.chrom_cub_um * x**3
        return self.chrom_scale * self.design.chromatic_shift_um(lam) + poly

    def local_focal_offset_um(self, theta_deg, phi_deg, dz_th_um=0.0, wavelength_nm=None):
        """Total focal offset (um) at tabulated positions; chromatic term if a wavelength is
        given."""
        dz = np.asarray(dz_th_um, dtype=float) + self.field_focal_offset_um(theta_deg, phi_deg)
        if wavelength_nm is not None:
            dz = dz + self.chromatic_shift_um(wavelength_nm)
        return dz

    # ------------------------------------------------------------------ wavefront
    def zernikes_nm(self, theta_deg, phi_deg, dz_th_um, wavelengths_nm) -> np.ndarray:
        """Noll coefficients (nm RMS) per star and wavelength, ``(B, L, 22)``; Z4 holds the
        star's total local focal offset (thermal + field + chromatic)."""
        t, ph, dz = np.broadcast_arrays(
            np.atleast_1d(np.asarray(theta_deg, dtype=float)),
            np.atleast_1d(np.asarray(phi_deg, dtype=float)),
            np.atleast_1d(np.asarray(dz_th_um, dtype=float)),
        )
        lam = np.atleast_1d(np.asarray(wavelengths_nm, dtype=float))
        k = self.field_index(t, ph)
        out = np.zeros((t.size, lam.size, N_TAB_ZERNIKE))
        out[:, :, 4:] = np.asarray(self.zernike_nm)[k][:, None, :]
        dz_local = (dz.ravel() + np.asarray(self.focal_offset_um)[k])[:, None]
        out[..., 3] = dz_to_z4_nm(dz_local + self.chromatic_shift_um(lam)[None, :],
                                  self.camera.f_number)  # fmt: skip
        return out

    # ------------------------------------------------------------------ symmetries
    def turned(self, quarter_turns: int = 0, mirror: bool = False) -> TabulatedOptics:
        """The same optics turned about the optical axis by ``quarter_turns`` x 90 deg (towards
        +phi), after a mirror across the focal-plane x axis when ``mirror``.

        The field positions move with the optics (``phi -> -phi``, then ``+ 90 k`` deg) and
        each position's wavefront turns with it: a mirror negates the sine terms (odd Noll
        ``j``, ``m != 0``); a turn by ``a`` maps each pair ``(c, s)`` of order ``m`` (even, odd
        ``j``) to ``(c cos ma - s sin ma, c sin ma + s cos ma)`` (the wavefront at pupil azimuth
        ``t`` is the original's at ``t - a``).  Quarter turns and the mirror map the four-CCD
        focal plane and its square pixels onto themselves, so every position stays on a CCD.
        The focal offsets and the chromatic shift are scalars and move unchanged.
        """
        from plato_sim.optics.wavefront import noll_to_nm

        z = np.array(self.zernike_nm, dtype=float)  # (F, 18): Noll 5..22
        js = np.arange(5, N_TAB_ZERNIKE + 1)
        nm = [noll_to_nm(int(j)) for j in js]
        ms = np.array([m for _, m in nm])
        phi = np.asarray(self.phi_deg, dtype=float)
        if mirror:
            z[:, ms < 0] *= -1.0
            phi = -phi
        a = 0.5 * math.pi * int(quarter_turns)
        out = z.copy()
        for ic in np.flatnonzero(ms > 0):
            i_s = nm.index((nm[ic][0], -ms[ic]))  # the sine partner: same n, same |m|
            ca, sa = math.cos(ms[ic] * a), math.sin(ms[ic] * a)
            out[:, ic] = z[:, ic] * ca - z[:, i_s] * sa
            out[:, i_s] = z[:, ic] * sa + z[:, i_s] * ca
        phi = np.mod(phi + 90.0 * int(quarter_turns), 360.0)
        return replace(self, phi_deg=tuple(float(v) for v in phi), zernike_nm=out)

    def scaled(self, factors_by_noll: dict[int, float]) -> TabulatedOptics:
        """The optics with Noll term ``j`` (5..22) multiplied by ``factors_by_noll[j]`` at
        every position (terms not given unchanged): the same field dependence, another
        amplitude."""
        z = np.array(self.zernike_nm, dtype=float)
        for j, f in factors_by_noll.items():
            if not 5 <= int(j) <= N_TAB_ZERNIKE or not np.isfinite(f):
                raise ParameterError(f"scaled: Noll {j} (5..{N_TAB_ZERNIKE}), factor {f}")
            z[:, int(j) - 5] *= float(f)
        return replace(self, zernike_nm=z)

    def to_dict(self) -> dict:
        """JSON-ready parameters (camera and design are the project's defaults)."""
        return {
            "theta_deg": list(self.theta_deg),
            "phi_deg": list(self.phi_deg),
            "focal_offset_um": list(self.focal_offset_um),
            "zernike_nm": [list(r) for r in self.zernike_nm],
            "chrom_scale": float(self.chrom_scale),
            "chrom_lin_um": float(self.chrom_lin_um),
            "chrom_cub_um": float(self.chrom_cub_um),
            "field_radius_deg": float(self.field_radius_deg),
        }

    @classmethod
    def from_dict(cls, d: dict, camera: Camera = PLATO_NORMAL_CAMERA) -> TabulatedOptics:
        """Inverse of :meth:`to_dict`."""
        return cls(camera=camera, **d)


@dataclass(frozen=True)
class TabulatedCamera(FamilyCamera):
    """A tabulated camera: optics, thermal model and charge diffusion (the OGSE spectrum).

    Duck-types :class:`~plato_sim.optics.model.CameraModel` for the truth code and the
    campaign emulator, as the family cameras do (:mod:`plato_sim.optics.family_base`).

    Attributes:
        optics: the tabulated wavefront.
        thermal: thermal focus model (``q`` may be non-zero).
        diffusion_sigma_px: Gaussian charge-diffusion sigma (pixels).
        camera_id: an identifier kept in truth records.
    """

    family = "tabulated"
    optics_cls = TabulatedOptics

    optics: TabulatedOptics
    thermal: ThermalModel
    diffusion_sigma_px: float
    camera_id: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.diffusion_sigma_px) and self.diffusion_sigma_px >= 0):
            raise ParameterError(f"diffusion_sigma_px={self.diffusion_sigma_px}: must be >= 0")
