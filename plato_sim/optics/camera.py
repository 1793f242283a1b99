"""The PLATO camera: constants with their sources, and focal-plane geometry.

Every number here comes from ``docs/facts.md`` (sources quoted per field). A variant
camera (another focal length, a fast camera's band) is the same dataclass loaded from YAML
with :meth:`Camera.from_yaml`.

Conventions (stated once, imported everywhere else)
---------------------------------------------------
* Field position: ``theta_deg`` is the angle from the optical axis (0-18.89 deg),
  ``phi_deg`` the azimuth, counted from the focal-plane +x axis towards +y.  The image of a
  field point at azimuth ``phi`` lies at azimuth ``phi`` in focal-plane coordinates (the
  image inversion is absorbed in the definition of ``phi``).
* Focal plane: ``x_mm, y_mm`` measured from the optical axis.  The radial mapping is
  ``r = f tan(theta) * (1 - d (tan(theta)/tan(theta_max))**2)`` (barrel distortion, ``d`` =
  ``distortion_edge``).
* CCD pixels: CCD ``k`` with orientation ``gamma_k`` has pixel coordinates
  ``(column, row) = (R(-gamma_k) p + (x0, y0)) / pixel``, ``p = (x_mm, y_mm)``, ``(x0, y0)``
  the PlatoSim origin offset.  Each CCD then covers one quadrant, from 1.3 mm to 82.48 mm
  off axis.  ``column`` grows with x of the rotated frame, ``row`` with y.
* Stamp pixels: arrays are indexed ``[row, column]`` (``[y, x]``).  Pixel ``(i, j)`` has its
  centre at integer coordinates ``(y, x) = (i, j)`` and covers ``+-0.5`` around it.  A star
  at sub-pixel offset ``(dx, dy)`` (pixels, each in ``[-0.5, 0.5)``) lies at
  ``(c + dy, c + dx)`` with ``c = size // 2``, the stamp's central pixel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from plato_sim.errors import ParameterError

__all__ = ["Camera", "PLATO_NORMAL_CAMERA", "ccd_of_field", "field_of_ccd"]

# DLR-TN-0113 camera effective optical transmission (as designed), docs/facts.md.
_TRANSMISSION_NM = (500, 550, 600, 650, 700, 750, 800, 850, 900, 950, 1000)
_TRANSMISSION = (0.750, 0.779, 0.813, 0.818, 0.826, 0.829, 0.830, 0.832, 0.834, 0.834, 0.834)

# ASSUMED wavelength dependence of the QE: the shape of a back-illuminated deep-depletion
# CCD (CCD270-like), rescaled so that its mean over the band is PlatoSim's 0.6267.
_QE_SHAPE_NM = (500, 550, 600, 650, 700, 750, 800, 850, 900, 950, 1000)
_QE_SHAPE = (0.80, 0.84, 0.86, 0.86, 0.84, 0.80, 0.73, 0.62, 0.47, 0.30, 0.12)


#: Radius of the field of view (deg), the largest field angle theta: docs/facts.md (A&A 681 A18;
#: PlatoSim3).
FIELD_RADIUS_DEG = 18.89


@dataclass(frozen=True)
class Camera:
    """One PLATO camera design: optics, detector geometry and spectral response.

    All lengths carry their unit in the name.  Defaults are the normal camera of
    ``docs/facts.md``.
    """

    name: str = "plato-normal"
    pupil_diameter_mm: float = 120.0  # Pertenais et al. SPIE 11852 (2021); PlatoSim3
    focal_length_mm: float = 247.52  # PlatoSim3 inputfile.yaml (Zemax model)
    pixel_um: float = 18.0  # A&A 681 A18
    band_nm: tuple[float, float] = (500.0, 1000.0)  # A&A 681 A18
    field_radius_deg: float = FIELD_RADIUS_DEG
    distortion_edge: float = 0.0356  # KUL-TN-0006: barrel, 3.56 % at the field edge
    ccd_pixels: int = 4510  # A&A 681 A18
    ccd_side_mm: float = 81.18  # PlatoSim3
    ccd_origin_offset_mm: tuple[float, float] = (-1.3, 82.48)  # PlatoSim3
    ccd_orientation_deg: tuple[float, float, float, float] = (180.0, 270.0, 0.0, 90.0)
    mean_qe: float = 0.6267  # PlatoSim3 default
    transmission_nm: tuple[float, ...] = _TRANSMISSION_NM
    transmission: tuple[float, ...] = _TRANSMISSION
    qe_shape_nm: tuple[float, ...] = _QE_SHAPE_NM
    qe_shape: tuple[float, ...] = _QE_SHAPE
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    # ---------------------------------------------------------------- derived optics
    @property
    def f_number(self) -> float:
        """Working f-number N = f / D (dimensionless, about 2.06)."""
        return self.focal_length_mm / self.pupil_diameter_mm

    @property
    def plate_scale_arcsec_per_um(self) -> float:
        """On-axis plate scale (arcsec per micrometre of focal plane)."""
        return 206264.806 / (self.focal_length_mm * 1e3)

    @property
    def pixel_arcsec(self) -> float:
        """On-axis angular size of one pixel (arcsec), about 15"."""
        return self.pixel_um * self.plate_scale_arcsec_per_um

    def transmission_at(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Optical transmission at ``wavelength_nm`` (linear interpolation of DLR-TN-0113)."""
        return np.interp(wavelength_nm, self.transmission_nm, self.transmission)

    def qe_at(self, wavelength_nm: np.ndarray | float) -> np.ndarray:
        """Quantum efficiency at ``wavelength_nm``: assumed shape, band mean = ``mean_qe``."""
        grid = np.linspace(self.band_nm[0], self.band_nm[1], 501)
        shape = np.interp(grid, self.qe_shape_nm, self.qe_shape)
        scale = self.mean_qe / float(np.mean(shape))
        return scale * np.interp(wavelength_nm, self.qe_shape_nm, self.qe_shape)

    # ---------------------------------------------------------------- field <-> focal plane
    def _radial(self, tan_t: np.ndarray) -> np.ndarray:
        tmax = np.tan(np.radians(self.field_radius_deg))
        return self.focal_length_mm * tan_t * (1.0 - self.distortion_edge * (tan_t / tmax) ** 2)

    def field_to_focal_plane(
        self, theta_deg: np.ndarray | float, phi_deg: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Field angle (deg) -> focal-plane position ``(x_mm, y_mm)`` with distortion."""
        r = self._radial(np.tan(np.radians(np.asarray(theta_deg, dtype=float))))
        phi = np.radians(np.asarray(phi_deg, dtype=float))
        return r * np.cos(phi), r * np.sin(phi)

    def focal_plane_to_field(
        self, x_mm: np.ndarray | float, y_mm: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane position (mm) -> field angle ``(theta_deg, phi_deg)``.

        Inverts the distortion by Newton iterations (monotonic within the field and well
        beyond it, up to the CCD corners).
        """
        x = np.asarray(x_mm, dtype=float)
        y = np.asarray(y_mm, dtype=float)
        r = np.hypot(x, y)
        f = self.focal_length_mm
        tmax = np.tan(np.radians(self.field_radius_deg))
        d = self.distortion_edge
        t = r / f
        for _ in range(30):
            g = f * t * (1.0 - d * (t / tmax) ** 2) - r
            dg = f * (1.0 - 3.0 * d * (t / tmax) ** 2)
            step = g / dg
            t = t - step
            if np.all(np.abs(step) < 1e-15):
                break
        theta = np.degrees(np.arctan(t))
        phi = np.degrees(np.arctan2(y, x)) % 360.0
        return theta, phi

    # ---------------------------------------------------------------- focal plane <-> CCD
    def focal_plane_to_ccd(
        self, x_mm: np.ndarray | float, y_mm: np.ndarray | float, ccd: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane mm -> ``(row, column)`` pixel coordinates on CCD ``ccd`` (1-4).

        Coordinates are continuous, in the stamp convention: pixel ``(i, j)`` covers
        ``[i-0.5, i+0.5) x [j-0.5, j+0.5)``, its centre is integral.  The CCD's first
        pixel (0, 0) has its lower-left corner at the CCD origin, so its centre is 0.
        """
        gamma = np.radians(np.asarray(self.ccd_orientation_deg)[np.asarray(ccd) - 1])
        x = np.asarray(x_mm, dtype=float)
        y = np.asarray(y_mm, dtype=float)
        u = np.cos(gamma) * x + np.sin(gamma) * y + self.ccd_origin_offset_mm[0]
        v = -np.sin(gamma) * x + np.cos(gamma) * y + self.ccd_origin_offset_mm[1]
        pix_mm = self.pixel_um * 1e-3
        return v / pix_mm - 0.5, u / pix_mm - 0.5

    def ccd_to_focal_plane(
        self, row: np.ndarray | float, column: np.ndarray | float, ccd: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`focal_plane_to_ccd`: pixel coordinates -> focal-plane mm."""
        gamma = np.radians(np.asarray(self.ccd_orientation_deg)[np.asarray(ccd) - 1])
        pix_mm = self.pixel_um * 1e-3
        u = (np.asarray(column, dtype=float) + 0.5) * pix_mm - self.ccd_origin_offset_mm[0]
        v = (np.asarray(row, dtype=float) + 0.5) * pix_mm - self.ccd_origin_offset_mm[1]
        return np.cos(gamma) * u - np.sin(gamma) * v, np.sin(gamma) * u + np.cos(gamma) * v

    def ccd_of_focal_plane(self, x_mm: np.ndarray | float, y_mm: np.ndarray | float) -> np.ndarray:
        """CCD id (1-4) whose area holds each focal-plane point, 0 where none does."""
        x = np.atleast_1d(np.asarray(x_mm, dtype=float))
        y = np.atleast_1d(np.asarray(y_mm, dtype=float))
        out = np.zeros(np.broadcast(x, y).shape, dtype=int)
        for k in (1, 2, 3, 4):
            row, col = self.focal_plane_to_ccd(x, y, k)
            inside = (row >= -0.5) & (row < self.ccd_pixels - 0.5)
            inside &= (col >= -0.5) & (col < self.ccd_pixels - 0.5)
            out = np.where((out == 0) & inside, k, out)
        return out if np.ndim(x_mm) or np.ndim(y_mm) else out.reshape(())

    # ---------------------------------------------------------------- YAML
    def to_dict(self) -> dict:
        """Plain-python description (for YAML, FITS headers and manifests)."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        """Build from a dict; unknown keys raise, missing keys take the normal camera's."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ParameterError(f"unknown camera keys: {sorted(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Camera:
        """Load a camera variant from a YAML file (keys as in :meth:`to_dict`)."""
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ParameterError(f"{path}: a camera YAML must hold a mapping")
        return cls.from_dict(data.get("camera", data))


PLATO_NORMAL_CAMERA = Camera()


def ccd_of_field(
    camera: Camera, theta_deg: np.ndarray | float, phi_deg: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Field angle -> ``(ccd, row, column)``; ccd 0 (row, column NaN) off the CCDs."""
    x, y = camera.field_to_focal_plane(theta_deg, phi_deg)
    ccd = np.atleast_1d(camera.ccd_of_focal_plane(x, y))
    xs, ys = np.broadcast_arrays(np.atleast_1d(x), np.atleast_1d(y))
    row = np.full(ccd.shape, np.nan)
    col = np.full(ccd.shape, np.nan)
    for k in (1, 2, 3, 4):
        sel = ccd == k
        if np.any(sel):
            row[sel], col[sel] = camera.focal_plane_to_ccd(xs[sel], ys[sel], k)
    return ccd, row, col


def field_of_ccd(
    camera: Camera, ccd: np.ndarray | int, row: np.ndarray | float, column: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """``(ccd, row, column)`` -> field angle ``(theta_deg, phi_deg)``."""
    x, y = camera.ccd_to_focal_plane(row, column, ccd)
    return camera.focal_plane_to_field(x, y)
