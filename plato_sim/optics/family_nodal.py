"""An out-of-family optical model for EVALUATION ONLY: a "nodal" camera, independent of the design.

Why: every estimator of this project leans, directly (pretraining, calibration) or indirectly
(templates, priors), on the design optical model of :mod:`plato_sim.optics.model`
(:class:`~plato_sim.optics.wavefront.FieldAberrations` scaled by a
:class:`~plato_sim.optics.wavefront.CameraPerturbation`).  A real camera is not drawn from
that family.  This module is a second family, built differently, used only to *score*
estimators (``benchmarks/out_of_family.py``); nothing that trains or calibrates imports it.

What a :class:`NodalCamera` models, with the physical reason and the ASSUMED range of each
effect (amplitudes: nm RMS of optical path; ``h = theta / theta_max`` the normalised field
height, ``phi`` the field azimuth; ranges at ``strength = 1``):

1. Wavefront Z5-Z22 (Noll) with the field dependence of nodal aberration theory (NAT,
   Thompson 2005).  In a rotationally symmetric system an aberration of azimuthal order
   ``m`` grows as ``h^k`` with ``k >= m``, ``k - m`` even, and rotates with the field
   (orientation ``m phi``).  Decentred and tilted elements (alignment tolerances of a
   6-lens refractive TOU, tens of um and arcsec) add terms that break this: a constant
   (field-independent) part and field powers of the "wrong" parity, each with its own
   orientation.  Per pair of Noll terms of order ``m > 0`` (cos ``j`` even, sin ``j`` odd)
   the complex coefficient is ``a = A_0 e^{i a_0} + sum_{k=1..4} A_k h^k e^{i (m phi + a_k)}``
   (``Z_cos = Re a``, ``Z_sin = Im a``); a term with ``m = 0`` (Z11, Z22) is
   ``A_0 + A_2 h^2 + A_4 h^4 + (A_1 h + A_3 h^3) cos(phi - a)`` (the odd powers are NAT's
   ``sigma . H`` misalignment terms).  Ranges: astigmatism ``h^2`` 250-500, coma ``h``
   150-350, spherical constant 200-420, secondary terms (``h^4`` astigmatism, ``h^3`` coma,
   trefoil, secondary astigmatism, quadrafoil, secondary coma, secondary spherical) N(0,
   30-80); NAT-symmetric orientations within N(0, 5 deg); constant misalignment terms N(0, 20)
   (orders 1-2) and N(0, 8) (higher orders); other wrong-parity powers N(0, 10), random
   orientations.  Z2/Z3 (distortion) only move the image and are left out; Z1 is piston.
2. Field curvature ``c2 h^2 + c4 h^4`` with c2 in 20-60 um and c4 in -45..-15 um (the
   field flattener's residual, camera to camera), and a focal-plane tilt of 0-20 um at the
   field edge (|N(0, 10)|) in a random azimuth (detector mounting, TOU-FPA interface).
3. CCD height steps: a piston per CCD, N(0, 6) um (four CCD270 glued on the focal-plane
   plate: package and flatness tolerances of order 10 um peak).  The field position's CCD is
   found by :func:`plato_sim.optics.camera.ccd_of_field` (0 between CCDs: no step).
4. Chromatic focal shift ``lin t + quad t^2 + cub t^3`` with ``t = (lambda - 700 nm) / 100
   nm``: lin N(0, 2) um, quad 2-7 um, cub N(0, 1) um (secondary spectrum of the glass pair,
   differing melts).
5. Thermal response ``dz = s dT + q dT^2`` (``dT = T - T0``): s 7-13 um/degC, q N(0, 0.04)
   um/degC^2 (non-linear expansion of the titanium/glass stack over tens of degC).
6. Charge diffusion sigma 0.12-0.35 px (CCD270 depletion, bias voltages, temperature; the
   design family uses 0.2 px).
7. Source spectrum as detected: OGSE photon rate ``lambda (1 + beta (lambda - 750)/250)`` with
   beta in -0.3..0.3 (lamp ageing, fibre transmission), times a QE shape change
   ``1 - gamma ((lambda - 500)/500)^2`` with gamma in 0-0.3 (a thinner or warmer CCD loses
   red response).
8. Vignetting: relative illumination ``1 - v h^4`` with v in 0.03-0.15 (lens-barrel clipping at
   the field edge).  Modelled as flux loss only; the change of pupil *shape* it would also
   bring is NOT modelled (the fast engine's pupil is a fixed unobstructed disk).

Not modelled: pupil obscuration or vignetted pupil shape, polarisation, ghosts and stray
light, detector non-linearity beyond the detector model, the OGSE collimator's own focus
error (a constant defocus, absorbed into ``T0``).

The camera duck-types :class:`~plato_sim.optics.model.CameraModel` where the truth code and
the campaign emulator need it (``optics.camera``, ``optics.zernikes_nm``,
``optics.local_focal_offset_um``, ``thermal``, ``with_t0``), so the true T_BF is computed by
the very definition used for the design family (:mod:`plato_sim.truth.bestfocus`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG, PLATO_NORMAL_CAMERA, Camera, ccd_of_field
from plato_sim.optics.family_base import FamilyCamera, binned_rate_spectrum
from plato_sim.optics.spectra import Spectrum
from plato_sim.optics.thermal import ThermalModel
from plato_sim.optics.wavefront import dz_to_z4_nm, noll_to_nm

__all__ = ["N_NODAL", "NODAL_TERMS", "NodalOptics", "NodalCamera", "FAMILY"]

#: Noll terms carried by the nodal family's wavefront arrays (Z1 .. Z22).
N_NODAL = 22
#: Name of the family in truth sidecars.
FAMILY = "nodal"
#: The aberration terms: (cos Noll index, sin Noll index) for m > 0, (j,) for m = 0.
NODAL_TERMS = ((6, 5), (8, 7), (10, 9), (11,), (12, 13), (14, 15), (16, 17), (18, 19), (20, 21),
               (22,))  # fmt: skip
_N_POW = 5  # field powers h^0 .. h^4
#: ASSUMED NAT-natural amplitudes per term: {term index: {power: (kind, a, b)}}, "u" uniform
#: in [a, b], "n" normal N(a, b) (nm RMS).
_NATURAL = {
    0: {2: ("u", 250.0, 500.0), 4: ("n", 0.0, 80.0)},  # astigmatism Z5/Z6
    1: {1: ("u", 150.0, 350.0), 3: ("n", 0.0, 60.0)},  # coma Z7/Z8
    2: {3: ("n", 0.0, 60.0)},  # trefoil Z9/Z10
    3: {0: ("u", 200.0, 420.0), 2: ("n", 0.0, 60.0), 4: ("n", 0.0, 40.0)},  # spherical Z11
    4: {2: ("n", 0.0, 50.0), 4: ("n", 0.0, 50.0)},  # secondary astigmatism Z12/Z13
    5: {4: ("n", 0.0, 30.0)},  # quadrafoil Z14/Z15
    6: {1: ("n", 0.0, 40.0), 3: ("n", 0.0, 40.0)},  # secondary coma Z16/Z17
    7: {3: ("n", 0.0, 30.0)},  # secondary trefoil Z18/Z19
    8: {},  # pentafoil Z20/Z21: no NAT-natural power <= 4
    9: {0: ("n", -40.0, 30.0), 2: ("n", 0.0, 30.0), 4: ("n", 0.0, 20.0)},  # sec. spherical
}


def _order(term: tuple[int, ...]) -> int:
    return abs(noll_to_nm(term[0])[1])


@dataclass(frozen=True)
class NodalOptics:
    """Optics of one nodal-family camera (see the module docstring for every effect).

    Attributes:
        camera: geometry, band, pixel (the PLATO normal camera).
        field_radius_deg: ``theta`` at ``h = 1``.
        amp_nm: ``len(NODAL_TERMS) x 5`` amplitudes ``A_k`` (nm RMS) per term and power.
        angle_deg: same shape, orientations ``a_k`` (deg).
        curvature_c2_um, curvature_c4_um: field curvature (um at ``h = 1``).
        tilt_um, tilt_phi_deg: focal-plane tilt (um at the field edge) and its azimuth.
        ccd_piston_um: height step of each of the 4 CCDs (um, > 0 behind focus).
        chrom_um: chromatic shift coefficients (lin, quad, cub) in um per (100 nm)^k.
        chrom_ref_nm: reference wavelength of the chromatic shift.
    """

    camera: Camera = PLATO_NORMAL_CAMERA
    field_radius_deg: float = FIELD_RADIUS_DEG
    amp_nm: tuple[tuple[float, ...], ...] = ((0.0,) * _N_POW,) * len(NODAL_TERMS)
    angle_deg: tuple[tuple[float, ...], ...] = ((0.0,) * _N_POW,) * len(NODAL_TERMS)
    curvature_c2_um: float = 40.0
    curvature_c4_um: float = -30.0
    tilt_um: float = 0.0
    tilt_phi_deg: float = 0.0
    ccd_piston_um: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    chrom_um: tuple[float, float, float] = (0.0, 4.0, 0.0)
    chrom_ref_nm: float = 700.0

    def __post_init__(self) -> None:
        shape = (len(NODAL_TERMS), _N_POW)
        for name in ("amp_nm", "angle_deg"):
            a = np.asarray(getattr(self, name), dtype=float)
            if a.shape != shape:
                raise ParameterError(f"NodalOptics.{name}: shape {a.shape}, expected {shape}")
            object.__setattr__(self, name, tuple(tuple(float(v) for v in r) for r in a))

    # ------------------------------------------------------------------ focal offsets
    def field_focal_offset_um(self, theta_deg, phi_deg) -> np.ndarray:
        """Achromatic focal offset (um): curvature, tilt and the CCD height step."""
        t, p = np.broadcast_arrays(np.asarray(theta_deg, float), np.asarray(phi_deg, float))
        h = t / self.field_radius_deg
        phi = np.radians(p)
        dz = self.curvature_c2_um * h**2 + self.curvature_c4_um * h**4
        dz = dz + self.tilt_um * h * np.cos(phi - math.radians(self.tilt_phi_deg))
        ccd = np.asarray(ccd_of_field(self.camera, t.ravel(), p.ravel())[0]).reshape(t.shape)
        steps = np.concatenate([[0.0], np.asarray(self.ccd_piston_um, dtype=float)])
        return dz + steps[ccd]

    def chromatic_shift_um(self, wavelength_nm) -> np.ndarray:
        """Chromatic focal shift (um) at ``wavelength_nm``, zero at ``chrom_ref_nm``."""
        x = (np.asarray(wavelength_nm, dtype=float) - self.chrom_ref_nm) / 100.0
        lin, quad, cub = self.chrom_um
        return lin * x + quad * x * x + cub * x**3

    def local_focal_offset_um(self, theta_deg, phi_deg, dz_th_um=0.0, wavelength_nm=None):
        """Total focal offset (um) at field positions; chromatic term if a wavelength is given."""
        dz = np.asarray(dz_th_um, dtype=float) + self.field_focal_offset_um(theta_deg, phi_deg)
        if wavelength_nm is not None:
            dz = dz + self.chromatic_shift_um(wavelength_nm)
        return dz

    # ------------------------------------------------------------------ wavefront
    def aberrations_nm(self, theta_deg, phi_deg) -> np.ndarray:
        """Noll coefficients Z5-Z22 (nm RMS) without defocus: ``(*field.shape, N_NODAL)``."""
        t, p = np.broadcast_arrays(np.asarray(theta_deg, float), np.asarray(phi_deg, float))
        h = t / self.field_radius_deg
        phi = np.radians(p)
        amp = np.asarray(self.amp_nm)
        ang = np.radians(np.asarray(self.angle_deg))
        z = np.zeros(t.shape + (N_NODAL,))
        for i, term in enumerate(NODAL_TERMS):
            m = _order(term)
            if m == 0:
                v = amp[i, 0] + amp[i, 2] * h**2 + amp[i, 4] * h**4
                v = v + amp[i, 1] * h * np.cos(phi - ang[i, 1])
                v = v + amp[i, 3] * h**3 * np.cos(phi - ang[i, 3])
                z[..., term[0] - 1] = v
                continue
            a = amp[i, 0] * np.exp(1j * ang[i, 0]) + 0.0 * h
            for k in range(1, _N_POW):
                a = a + amp[i, k] * h**k * np.exp(1j * (m * phi + ang[i, k]))
            z[..., term[0] - 1] = a.real
            z[..., term[1] - 1] = a.imag
        return z

    def zernikes_nm(self, theta_deg, phi_deg, dz_th_um, wavelengths_nm) -> np.ndarray:
        """Noll coefficients (nm RMS) per star and wavelength, ``(B, L, N_NODAL)``; Z4 holds
        the star's total local focal offset (thermal + field + CCD step + chromatic)."""
        t, ph, dz = np.broadcast_arrays(
            np.atleast_1d(np.asarray(theta_deg, dtype=float)),
            np.atleast_1d(np.asarray(phi_deg, dtype=float)),
            np.atleast_1d(np.asarray(dz_th_um, dtype=float)),
        )
        lam = np.atleast_1d(np.asarray(wavelengths_nm, dtype=float))
        out = np.repeat(self.aberrations_nm(t, ph)[:, None, :], lam.size, axis=1)
        chrom = self.chromatic_shift_um(lam)[None, :]
        dz_local = (dz + self.field_focal_offset_um(t, ph))[:, None] + chrom
        out[..., 3] = dz_to_z4_nm(dz_local, self.camera.f_number)
        return out

    def to_dict(self) -> dict:
        """JSON-ready parameters (the camera geometry is the PLATO normal camera's)."""
        d = asdict(self)
        d.pop("camera")
        d["amp_nm"] = [list(r) for r in self.amp_nm]
        d["angle_deg"] = [list(r) for r in self.angle_deg]
        d["ccd_piston_um"] = list(self.ccd_piston_um)
        d["chrom_um"] = list(self.chrom_um)
        return d

    @classmethod
    def from_dict(cls, d: dict, camera: Camera = PLATO_NORMAL_CAMERA) -> NodalOptics:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["ccd_piston_um"] = tuple(d["ccd_piston_um"])
        d["chrom_um"] = tuple(d["chrom_um"])
        return cls(camera=camera, **d)


def _draw_wavefront(rng: np.random.Generator, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes and orientations of :data:`NODAL_TERMS` (ranges: module docstring)."""
    amp = np.zeros((len(NODAL_TERMS), _N_POW))
    ang = np.zeros_like(amp)
    for i, term in enumerate(NODAL_TERMS):
        m = _order(term)
        for k in range(_N_POW):
            spec = _NATURAL[i].get(k)
            if spec is not None:
                kind, a, b = spec
                v = rng.uniform(a, b) if kind == "u" else rng.normal(a, b)
                nominal = 0.5 * (a + b) if kind == "u" else a
                amp[i, k] = nominal + strength * (v - nominal)
                ang[i, k] = rng.normal(0.0, 5.0 * strength)
            else:
                sigma = (20.0 if m <= 2 else 8.0) if k == 0 else 10.0
                amp[i, k] = rng.normal(0.0, sigma * strength)
                ang[i, k] = rng.uniform(0.0, 360.0)
    return amp, ang


@dataclass(frozen=True)
class NodalCamera(FamilyCamera):
    """One camera of the nodal family: optics, thermal model, detector-side differences.

    Attributes:
        optics: :class:`NodalOptics`.
        thermal: quadratic thermal model (``q`` generally non-zero).
        diffusion_sigma_px: charge-diffusion sigma of this camera's CCDs (px).
        ogse_slope: ``beta`` of the source spectrum's tilt.
        qe_droop: ``gamma`` of the QE shape change.
        vignetting: ``v`` of the relative illumination ``1 - v h^4``.
        camera_id: integer id.
    """

    family = FAMILY
    optics_cls = NodalOptics
    optics: NodalOptics = field(default_factory=NodalOptics)
    thermal: ThermalModel = field(default_factory=ThermalModel)
    diffusion_sigma_px: float = 0.2
    ogse_slope: float = 0.0
    qe_droop: float = 0.0
    vignetting: float = 0.0
    camera_id: int = 0

    @classmethod
    def random(
        cls, rng: np.random.Generator, camera_id: int = 0, strength: float = 1.0,
        t0_degC: float = -80.0,
    ) -> NodalCamera:  # fmt: skip
        """A random camera of the family (ranges: module docstring; ``strength`` scales every
        departure from the family's nominal camera, 0 = nominal)."""
        if not 0.0 <= strength <= 3.0:
            raise ParameterError(f"strength={strength}: outside the allowed range [0, 3]")
        amp, ang = _draw_wavefront(rng, strength)
        u, g = rng.uniform, rng.normal
        optics = NodalOptics(
            amp_nm=amp, angle_deg=ang,
            curvature_c2_um=40.0 + strength * (u(20.0, 60.0) - 40.0),
            curvature_c4_um=-30.0 + strength * (u(-45.0, -15.0) + 30.0),
            tilt_um=abs(g(0.0, 10.0 * strength)), tilt_phi_deg=u(0.0, 360.0),
            ccd_piston_um=tuple(g(0.0, 6.0 * strength, 4)),
            chrom_um=(g(0.0, 2.0 * strength), 4.5 + strength * (u(2.0, 7.0) - 4.5),
                      g(0.0, 1.0 * strength)),
        )  # fmt: skip
        thermal = ThermalModel(
            s_um_per_degC=10.0 + strength * (u(7.0, 13.0) - 10.0),
            t0_degC=t0_degC,
            q_um_per_degC2=g(0.0, 0.04 * strength),
        )
        return cls(
            optics=optics, thermal=thermal,
            diffusion_sigma_px=0.235 + strength * (u(0.12, 0.35) - 0.235),
            ogse_slope=strength * u(-0.3, 0.3), qe_droop=strength * u(0.0, 0.3),
            vignetting=0.09 + strength * (u(0.03, 0.15) - 0.09), camera_id=int(camera_id),
        )  # fmt: skip

    def spectrum(self, n: int = 10) -> Spectrum:
        """The OGSE spectrum as this camera detects it (tilted lamp, drooping QE), ``n`` bins."""

        def lamp(lam):
            return lam * (1.0 + self.ogse_slope * (lam - 750.0) / 250.0)

        return binned_rate_spectrum(self.optics.camera, lamp, n, f"nodal-ogse{n}", self.qe_factor)

    def qe_factor(self, wavelength_nm) -> np.ndarray:
        """This camera's QE over the design's at ``wavelength_nm`` (the droop ``gamma``): it
        acts on every source it detects, the OGSE lamp on the ground and the stars in orbit."""
        lam = np.asarray(wavelength_nm, dtype=float)
        return 1.0 - self.qe_droop * ((lam - 500.0) / 500.0) ** 2

    def relative_illumination(self, theta_deg, phi_deg) -> np.ndarray:
        """Flux factor of vignetting at each field position (1 on axis)."""
        t, _ = np.broadcast_arrays(np.asarray(theta_deg, float), np.asarray(phi_deg, float))
        return 1.0 - self.vignetting * (t / self.optics.field_radius_deg) ** 4
