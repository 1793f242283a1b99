"""A third optical family, for CALIBRATION of model-error terms: "high-order" cameras.

Why: an uncertainty calibrated on cameras drawn from the model that the estimator fits says
nothing about cameras unlike it.  The project keeps two families besides the design model of
:mod:`plato_sim.optics.model`: the nodal family (:mod:`plato_sim.optics.family_nodal`), which
only *scores* estimators, and this one, which only *calibrates* the terms that stand for what
a model leaves out (the forward fit's systematic sigma,
:mod:`plato_cnn.pipelines.calibrate_forward`).  Neither family is ever used for what the
other one does, so a coverage measured on the nodal family is a prediction, not a fit.

It is built unlike both: the wavefront is not a sum of design shapes nor of nodal-aberration
-theory terms, but every Noll term Z5-Z37 (radial orders 2-8, beyond the forward model's
Z22 basis) is a random polynomial of degree <= 3 in the Cartesian field coordinates
``x = h cos(phi)``, ``y = h sin(phi)`` (``h = theta / theta_max``), with no rotational
symmetry, on top of a rotationally symmetric nominal design.  Each effect with its physical
reason and ASSUMED range (``strength = 1``; amplitudes nm RMS of optical path):

1. Nominal design (a fast refractive wide-field lens): astigmatism ``A h^2`` (cos/sin 2 phi),
   A 200-450; coma ``C h`` (cos/sin phi), C 120-300; spherical Z11 ``S0 + S2 h^2``, S0
   150-350, S2 N(0, 50); secondary spherical Z22 N(-30, 25).
2. Manufacturing and alignment: per Noll term ``j`` in 5..37, a polynomial
   ``sum_{p+q<=3} a_pq x^p y^q`` with ``a_pq ~ N(0, sigma_n)``, ``sigma_n`` by radial order
   ``n``: 2: 60, 3: 45, 4: 30, 5: 20, 6: 12, 7: 8, 8: 6 (surface-form errors of polished
   lenses fall with spatial frequency; any field symmetry, as a decentred or wedged element
   or an inhomogeneous melt gives).  Terms of radial order 6-8 (Z23-Z37) lie outside every
   model this project fits.
3. Focal surface: curvature ``c2 h^2``, c2 20-60 um; an astigmatic (saddle) bending
   ``b_c (x^2 - y^2) + b_s 2xy``, N(0, 8) um each (a detector plate flattened on an
   anisotropic mount); a tilt ``t_x x + t_y y``, N(0, 8) um each.  No CCD steps.
4. Chromatic focal shift in wavenumber: ``k1 u + k2 u^2`` with ``u = 700 nm / lambda - 1``:
   k1 N(0, 6) um, k2 N(25, 10) um (another glass pair's secondary spectrum).
5. Thermal response ``dz = s dT + q dT^2``: s 8-12 um/degC, q N(0, 0.025) um/degC^2.
6. Charge diffusion sigma 0.15-0.32 px.
7. Source spectrum as detected: OGSE photon rate times ``(lambda / 750 nm)^alpha`` with alpha
   in -1..1 (another lamp and fibre bundle).
8. Vignetting ``1 - v h^2``, v in 0-0.10 (flux only; the pupil stays a disk).

The camera duck-types :class:`~plato_sim.optics.model.CameraModel` for the truth code and the
campaign emulator, like :class:`~plato_sim.optics.family_nodal.NodalCamera`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG, PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.family_base import FamilyCamera, binned_rate_spectrum
from plato_sim.optics.spectra import Spectrum
from plato_sim.optics.thermal import ThermalModel
from plato_sim.optics.wavefront import dz_to_z4_nm, noll_to_nm

__all__ = ["N_HIGHORDER", "MONOMIALS", "HighOrderOptics", "HighOrderCamera", "FAMILY"]

#: Noll terms carried by the family's wavefront arrays (Z1 .. Z37).
N_HIGHORDER = 37
#: Name of the family in truth sidecars.
FAMILY = "highorder"
#: Field monomials ``x^p y^q`` of every term's polynomial, in this order.
MONOMIALS = tuple((p, d - p) for d in range(4) for p in range(d, -1, -1))
_FIRST_J = 5
#: ASSUMED sigma (nm RMS) of the polynomial coefficients by radial order.
_ORDER_SIGMA_NM = {2: 60.0, 3: 45.0, 4: 30.0, 5: 20.0, 6: 12.0, 7: 8.0, 8: 6.0}
_N_J = N_HIGHORDER - _FIRST_J + 1


def _monomials(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(len(MONOMIALS), *x.shape)``."""
    return np.stack([x**p * y**q for p, q in MONOMIALS])


@dataclass(frozen=True)
class HighOrderOptics:
    """Optics of one high-order camera (module docstring: every effect and its range).

    Attributes:
        camera: geometry, band, pixel (the PLATO normal camera).
        field_radius_deg: ``theta`` at ``h = 1``.
        astig_nm, coma_nm, sph0_nm, sph2_nm, sec_sph_nm: nominal design terms.
        poly_nm: ``(33, 10)`` polynomial coefficients of Z5..Z37 on :data:`MONOMIALS`.
        curvature_c2_um: field curvature at ``h = 1``.
        saddle_um: ``(b_c, b_s)`` astigmatic bending of the focal surface.
        tilt_um: ``(t_x, t_y)`` focal-surface tilt at the field edge.
        chrom_um: ``(k1, k2)`` chromatic shift in wavenumber.
        chrom_ref_nm: wavelength of zero chromatic shift.
    """

    camera: Camera = PLATO_NORMAL_CAMERA
    field_radius_deg: float = FIELD_RADIUS_DEG
    astig_nm: float = 320.0
    coma_nm: float = 210.0
    sph0_nm: float = 250.0
    sph2_nm: float = 0.0
    sec_sph_nm: float = -30.0
    poly_nm: tuple[tuple[float, ...], ...] = ((0.0,) * len(MONOMIALS),) * _N_J
    curvature_c2_um: float = 40.0
    saddle_um: tuple[float, float] = (0.0, 0.0)
    tilt_um: tuple[float, float] = (0.0, 0.0)
    chrom_um: tuple[float, float] = (0.0, 25.0)
    chrom_ref_nm: float = 700.0

    def __post_init__(self) -> None:
        a = np.asarray(self.poly_nm, dtype=float)
        if a.shape != (_N_J, len(MONOMIALS)):
            raise ParameterError(
                f"HighOrderOptics.poly_nm: shape {a.shape}, expected {(_N_J, len(MONOMIALS))}"
            )
        object.__setattr__(self, "poly_nm", tuple(tuple(float(v) for v in r) for r in a))
        for name in ("saddle_um", "tilt_um", "chrom_um"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def _xy(self, theta_deg, phi_deg):
        t, p = np.broadcast_arrays(np.asarray(theta_deg, float), np.asarray(phi_deg, float))
        h = t / self.field_radius_deg
        ph = np.radians(p)
        return h, h * np.cos(ph), h * np.sin(ph)

    # ------------------------------------------------------------------ focal offsets
    def field_focal_offset_um(self, theta_deg, phi_deg) -> np.ndarray:
        """Achromatic focal offset (um): curvature, saddle and tilt of the focal surface."""
        h, x, y = self._xy(theta_deg, phi_deg)
        bc, bs = self.saddle_um
        tx, ty = self.tilt_um
        return self.curvature_c2_um * h**2 + bc * (x * x - y * y) + bs * 2 * x * y + tx * x + ty * y

    def chromatic_shift_um(self, wavelength_nm) -> np.ndarray:
        """Chromatic focal shift (um), zero at ``chrom_ref_nm``."""
        u = self.chrom_ref_nm / np.asarray(wavelength_nm, dtype=float) - 1.0
        k1, k2 = self.chrom_um
        return k1 * u + k2 * u * u

    def local_focal_offset_um(self, theta_deg, phi_deg, dz_th_um=0.0, wavelength_nm=None):
        """Total focal offset (um) at field positions; chromatic term if a wavelength is given."""
        dz = np.asarray(dz_th_um, dtype=float) + self.field_focal_offset_um(theta_deg, phi_deg)
        if wavelength_nm is not None:
            dz = dz + self.chromatic_shift_um(wavelength_nm)
        return dz

    # ------------------------------------------------------------------ wavefront
    def aberrations_nm(self, theta_deg, phi_deg) -> np.ndarray:
        """Noll coefficients (nm RMS) without defocus: ``(*field.shape, N_HIGHORDER)``."""
        h, x, y = self._xy(theta_deg, phi_deg)
        z = np.zeros(h.shape + (N_HIGHORDER,))
        poly = np.tensordot(np.asarray(self.poly_nm), _monomials(x, y), axes=(1, 0))
        z[..., _FIRST_J - 1 :] = np.moveaxis(poly, 0, -1)
        c2, s2 = x * x - y * y, 2 * x * y  # h^2 cos 2phi, h^2 sin 2phi
        z[..., 5] += self.astig_nm * c2  # Z6: cos 2 theta
        z[..., 4] += self.astig_nm * s2  # Z5: sin 2 theta
        z[..., 7] += self.coma_nm * x  # Z8: cos theta
        z[..., 6] += self.coma_nm * y  # Z7: sin theta
        z[..., 10] += self.sph0_nm + self.sph2_nm * h**2
        z[..., 21] += self.sec_sph_nm
        return z

    def zernikes_nm(self, theta_deg, phi_deg, dz_th_um, wavelengths_nm) -> np.ndarray:
        """Noll coefficients (nm RMS) per star and wavelength, ``(B, L, N_HIGHORDER)``; Z4
        holds the star's total local focal offset (thermal + focal surface + chromatic)."""
        t, ph, dz = np.broadcast_arrays(
            np.atleast_1d(np.asarray(theta_deg, dtype=float)),
            np.atleast_1d(np.asarray(phi_deg, dtype=float)),
            np.atleast_1d(np.asarray(dz_th_um, dtype=float)),
        )
        lam = np.atleast_1d(np.asarray(wavelengths_nm, dtype=float))
        out = np.repeat(self.aberrations_nm(t, ph)[:, None, :], lam.size, axis=1)
        dz_local = (dz + self.field_focal_offset_um(t, ph))[:, None]
        out[..., 3] = dz_to_z4_nm(dz_local + self.chromatic_shift_um(lam)[None, :],
                                  self.camera.f_number)  # fmt: skip
        return out

    def to_dict(self) -> dict:
        """JSON-ready parameters (the camera geometry is the PLATO normal camera's)."""
        d = asdict(self)
        d.pop("camera")
        d["poly_nm"] = [list(r) for r in self.poly_nm]
        for name in ("saddle_um", "tilt_um", "chrom_um"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict, camera: Camera = PLATO_NORMAL_CAMERA) -> HighOrderOptics:
        """Inverse of :meth:`to_dict`."""
        return cls(camera=camera, **d)


def _draw_optics(rng: np.random.Generator, strength: float) -> HighOrderOptics:
    u, g = rng.uniform, rng.normal

    def around(nominal: float, lo: float, hi: float) -> float:
        return nominal + strength * (u(lo, hi) - nominal)

    sig = np.array([_ORDER_SIGMA_NM[noll_to_nm(j)[0]] for j in range(_FIRST_J, N_HIGHORDER + 1)])
    poly = g(0.0, 1.0, (_N_J, len(MONOMIALS))) * sig[:, None] * strength
    return HighOrderOptics(
        astig_nm=around(325.0, 200.0, 450.0), coma_nm=around(210.0, 120.0, 300.0),
        sph0_nm=around(250.0, 150.0, 350.0), sph2_nm=g(0.0, 50.0 * strength),
        sec_sph_nm=-30.0 + strength * g(0.0, 25.0), poly_nm=poly,
        curvature_c2_um=around(40.0, 20.0, 60.0),
        saddle_um=tuple(g(0.0, 8.0 * strength, 2)), tilt_um=tuple(g(0.0, 8.0 * strength, 2)),
        chrom_um=(g(0.0, 6.0 * strength), 25.0 + strength * g(0.0, 10.0)),
    )  # fmt: skip


@dataclass(frozen=True)
class HighOrderCamera(FamilyCamera):
    """One camera of the high-order family: optics, thermal model, detector-side differences.

    Attributes:
        optics: :class:`HighOrderOptics`.
        thermal: quadratic thermal model.
        diffusion_sigma_px: charge-diffusion sigma of this camera's CCDs (px).
        lamp_alpha: exponent of the source's colour change ``(lambda / 750 nm)^alpha``.
        vignetting: ``v`` of the relative illumination ``1 - v h^2``.
        camera_id: integer id.
    """

    family = FAMILY
    optics_cls = HighOrderOptics
    optics: HighOrderOptics = field(default_factory=HighOrderOptics)
    thermal: ThermalModel = field(default_factory=ThermalModel)
    diffusion_sigma_px: float = 0.235
    lamp_alpha: float = 0.0
    vignetting: float = 0.05
    camera_id: int = 0

    @classmethod
    def random(
        cls, rng: np.random.Generator, camera_id: int = 0, strength: float = 1.0,
        t0_degC: float = -80.0,
    ) -> HighOrderCamera:  # fmt: skip
        """A random camera of the family (ranges: module docstring; ``strength`` scales every
        departure from the family's nominal camera, 0 = nominal)."""
        if not 0.0 <= strength <= 3.0:
            raise ParameterError(f"strength={strength}: outside the allowed range [0, 3]")
        optics = _draw_optics(rng, strength)
        u, g = rng.uniform, rng.normal
        thermal = ThermalModel(
            s_um_per_degC=10.0 + strength * (u(8.0, 12.0) - 10.0),
            t0_degC=t0_degC,
            q_um_per_degC2=g(0.0, 0.025 * strength),
        )
        return cls(
            optics=optics, thermal=thermal,
            diffusion_sigma_px=0.235 + strength * (u(0.15, 0.32) - 0.235),
            lamp_alpha=strength * u(-1.0, 1.0), vignetting=0.05 + strength * (u(0.0, 0.1) - 0.05),
            camera_id=int(camera_id),
        )  # fmt: skip

    def spectrum(self, n: int = 10) -> Spectrum:
        """The OGSE spectrum as this camera detects it (lamp colour changed), ``n`` bins."""

        def rate(lam):
            return lam * (lam / 750.0) ** self.lamp_alpha

        return binned_rate_spectrum(self.optics.camera, rate, n, f"highorder-ogse{n}")

    def relative_illumination(self, theta_deg, phi_deg) -> np.ndarray:
        """Flux factor of vignetting at each field position (1 on axis)."""
        t, _ = np.broadcast_arrays(np.asarray(theta_deg, float), np.asarray(phi_deg, float))
        return 1.0 - self.vignetting * (t / self.optics.field_radius_deg) ** 2
