"""Wavefront: the Noll Zernike basis, focal shift <-> defocus, field-dependent aberrations.

Conventions (stated once here; every other module imports them)
---------------------------------------------------------------
* Zernike polynomials in **Noll order and normalisation**: ``Z_j`` has unit RMS over the
  unit disk; ``j = 1`` piston, 2 tilt x (``2 rho cos t``), 3 tilt y, 4 defocus
  ``sqrt(3) (2 rho^2 - 1)``, 5 astigmatism ``sqrt(6) rho^2 sin 2t``, 6 ``... cos 2t``, 7 coma y,
  8 coma x, 11 primary spherical.  Even ``j`` carry ``cos(m t)``, odd ``j`` ``sin(m t)``.  The
  pupil azimuth ``t`` is counted from the focal-plane +x axis towards +y.  Coefficients are
  **nanometres RMS of optical path difference** and arrays index ``[..., j - 1]``.
* Image formation: ``PSF(x) = |F[P](x / (lambda f))|^2`` with the kernel ``exp(+2 pi i u.x)``
  and ``P = A exp(2 pi i W / lambda)``.  The image of a ray is displaced by ``-f grad W``: a
  positive Z2 moves the image towards -x.  This is the orientation of poppy and GalSim.
* Sign of defocus: with that convention, a **positive Z4 is extra-focal**: the detector lies
  behind the focus, which is ``dz > 0`` (docs/facts.md).  For a focal shift ``dz`` at
  f-number ``N`` the defocus wavefront is ``W_PV = dz / (8 N^2)`` and
  ``Z4 = dz / (16 sqrt(3) N^2)`` (paraxial; about 8.5 nm RMS per um at f/2.06).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG

__all__ = [
    "noll_to_nm",
    "zernike_noll",
    "zernike_basis",
    "dz_to_z4_nm",
    "z4_nm_to_dz",
    "FieldAberrations",
    "CameraPerturbation",
    "N_ZERNIKE",
]

#: Number of Noll terms carried by every wavefront array (j = 1 .. 11).
N_ZERNIKE = 11


def noll_to_nm(j: int) -> tuple[int, int]:
    """Noll index ``j >= 1`` -> radial order ``n`` and signed azimuthal frequency ``m``.

    ``m > 0`` for the cosine terms (even ``j``), ``m < 0`` for the sine terms (odd ``j``).
    """
    if j < 1:
        raise ParameterError(f"Noll indices start at 1, got {j}")
    n = 0
    j1 = j - 1
    while j1 > n:
        n += 1
        j1 -= n
    m = (n % 2) + 2 * ((j1 + ((n + 1) % 2)) // 2)
    if m != 0 and j % 2 == 1:
        m = -m
    return n, m


def _radial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    m = abs(m)
    out = np.zeros_like(rho)
    for k in range((n - m) // 2 + 1):
        c = (
            (-1) ** k
            * math.factorial(n - k)
            / (
                math.factorial(k)
                * math.factorial((n + m) // 2 - k)
                * math.factorial((n - m) // 2 - k)
            )
        )
        out = out + c * rho ** (n - 2 * k)
    return out


def zernike_noll(j: int, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Noll-normalised Zernike ``Z_j(rho, theta)`` (unit RMS over the unit disk).

    Args:
        j: Noll index (>= 1).
        rho: normalised pupil radius (1 at the pupil edge); values beyond 1 are evaluated
            as polynomials, callers mask them.
        theta: pupil azimuth in radians from +x towards +y.
    """
    n, m = noll_to_nm(j)
    r = _radial(n, m, np.asarray(rho, dtype=float))
    if m == 0:
        return math.sqrt(n + 1) * r
    ang = np.cos(m * theta) if m > 0 else np.sin(-m * theta)
    return math.sqrt(2 * (n + 1)) * r * ang


def zernike_basis(n_terms: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``Z_1 .. Z_n_terms`` at normalised pupil coordinates ``(x, y)``: ``(n, *x.shape)``."""
    rho = np.hypot(x, y)
    theta = np.arctan2(y, x)
    return np.stack([zernike_noll(j, rho, theta) for j in range(1, n_terms + 1)])


def dz_to_z4_nm(dz_um: np.ndarray | float, f_number: float) -> np.ndarray:
    """Focal shift (um, > 0 behind focus) -> Noll Z4 coefficient (nm RMS)."""
    return np.asarray(dz_um, dtype=float) * 1e3 / (16.0 * math.sqrt(3.0) * f_number**2)


def z4_nm_to_dz(z4_nm: np.ndarray | float, f_number: float) -> np.ndarray:
    """Noll Z4 coefficient (nm RMS) -> focal shift (um)."""
    return np.asarray(z4_nm, dtype=float) * 16.0 * math.sqrt(3.0) * f_number**2 / 1e3


def _h(theta_deg: np.ndarray, field_radius_deg: float) -> np.ndarray:
    return np.asarray(theta_deg, dtype=float) / field_radius_deg


@dataclass(frozen=True)
class FieldAberrations:
    """Design residual aberrations of the telescope as functions of the field.

    ``h = theta / theta_max`` is the normalised field radius, ``phi`` the field azimuth.
    All amplitudes are **ASSUMED** (no as-built PLATO wavefront is public): they are chosen
    so that, at best focus, the field-averaged ensquared-energy fraction of the OGSE
    spectrum is near the PLT-CAM-872 requirement (0.77) and falls to ~0.3-0.6 at +-12 degC
    (see ``benchmarks/psf_engines.py`` and ``examples/psf_gallery.py``).

    * field curvature (focal offset, um): ``c2 h^2 + c4 h^4``;
    * astigmatism (nm RMS): ``a_ast h^2`` along the field azimuth (Z6 ~ cos 2phi, Z5 ~ sin 2phi);
    * coma (nm RMS): ``a_coma h`` pointing along the field azimuth (Z8 ~ cos phi, Z7 ~ sin phi);
    * spherical (nm RMS): ``a_sph0 + a_sph2 h^2`` (Z11);
    * chromatic focal shift (um): ``chrom_lin (l - l0)/100 + chrom_quad ((l - l0)/100)^2``,
      ``l`` in nm, ``l0 = chrom_ref_nm``: the secondary spectrum of a refractive design.
    """

    field_radius_deg: float = FIELD_RADIUS_DEG
    curvature_c2_um: float = 40.0
    curvature_c4_um: float = -30.0
    astig_nm: float = 400.0
    coma_nm: float = 250.0
    spherical0_nm: float = 320.0
    spherical2_nm: float = 0.0
    chrom_ref_nm: float = 700.0
    chrom_lin_um: float = 0.0
    chrom_quad_um: float = 4.0

    def focal_offset_um(self, theta_deg: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
        """Field-curvature focal offset (um, > 0 behind focus) at each field position."""
        h = _h(theta_deg, self.field_radius_deg)
        return self.curvature_c2_um * h**2 + self.curvature_c4_um * h**4 + 0.0 * np.asarray(phi_deg)

    def chromatic_shift_um(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Chromatic focal shift (um) relative to ``chrom_ref_nm``."""
        t = (np.asarray(wavelength_nm, dtype=float) - self.chrom_ref_nm) / 100.0
        return self.chrom_lin_um * t + self.chrom_quad_um * t * t

    def zernikes_nm(self, theta_deg: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
        """Noll coefficients (nm RMS) without defocus; shape ``(*field.shape, N_ZERNIKE)``."""
        h = _h(theta_deg, self.field_radius_deg)
        phi = np.radians(np.asarray(phi_deg, dtype=float))
        h, phi = np.broadcast_arrays(h, phi)
        z = np.zeros(h.shape + (N_ZERNIKE,))
        z[..., 4] = self.astig_nm * h**2 * np.sin(2 * phi)  # Z5
        z[..., 5] = self.astig_nm * h**2 * np.cos(2 * phi)  # Z6
        z[..., 6] = self.coma_nm * h * np.sin(phi)  # Z7
        z[..., 7] = self.coma_nm * h * np.cos(phi)  # Z8
        z[..., 10] = self.spherical0_nm + self.spherical2_nm * h**2  # Z11
        return z

    def to_dict(self) -> dict:
        """Plain dict of the amplitudes."""
        return asdict(self)


@dataclass(frozen=True)
class CameraPerturbation:
    """Per-camera departures from the design (domain randomisation and emulated cameras).

    Attributes:
        perturbation_id: integer id (0 = the nominal design).
        tilt_um: focal-plane tilt, focal offset at the field edge (um).
        tilt_phi_deg: azimuth of the tilt's steepest rise (deg).
        curvature_scale: multiplies the design field curvature.
        astig_scale, coma_scale, spherical_scale: multiply the design amplitudes.
        chrom_scale: multiplies the design chromatic focal shift.
        extra_nm: constant extra Noll terms Z5..Z11 (nm RMS), index 0 = Z5.
    """

    perturbation_id: int = 0
    tilt_um: float = 0.0
    tilt_phi_deg: float = 0.0
    curvature_scale: float = 1.0
    astig_scale: float = 1.0
    coma_scale: float = 1.0
    spherical_scale: float = 1.0
    chrom_scale: float = 1.0
    extra_nm: tuple[float, ...] = field(default=(0.0,) * (N_ZERNIKE - 4))

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        perturbation_id: int,
        strength: float = 1.0,
    ) -> CameraPerturbation:
        """Draw a random camera.  ``strength`` scales every departure (0 = nominal).

        Spreads (ASSUMED, 1 sigma at strength 1): tilt 8 um at the field edge, 20 % on the
        curvature and on each aberration family, 25 % on the chromatic shift, 12 nm RMS on
        each extra term.
        """
        g = rng.normal
        return cls(
            perturbation_id=int(perturbation_id),
            tilt_um=float(abs(g(0.0, 8.0 * strength))),
            tilt_phi_deg=float(rng.uniform(0.0, 360.0)),
            curvature_scale=float(1.0 + g(0.0, 0.2 * strength)),
            astig_scale=float(max(0.0, 1.0 + g(0.0, 0.2 * strength))),
            coma_scale=float(max(0.0, 1.0 + g(0.0, 0.2 * strength))),
            spherical_scale=float(1.0 + g(0.0, 0.2 * strength)),
            chrom_scale=float(1.0 + g(0.0, 0.25 * strength)),
            extra_nm=tuple(float(v) for v in g(0.0, 12.0 * strength, N_ZERNIKE - 4)),
        )

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists)."""
        d = asdict(self)
        d["extra_nm"] = list(self.extra_nm)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CameraPerturbation:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["extra_nm"] = tuple(d.get("extra_nm", (0.0,) * (N_ZERNIKE - 4)))
        return cls(**d)
