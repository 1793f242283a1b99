"""Spectra: source x transmission x QE -> wavelength samples and detected-photon weights.

A :class:`Spectrum` is what the PSF engines consume: ``L`` wavelengths (nm) and weights
that sum to one, the fraction of *detected photons* (electrons) at each wavelength.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import Camera

__all__ = ["Spectrum", "monochromatic", "ogse_spectrum", "blackbody_spectrum"]

_H_C_OVER_K_UM_K = 14387.7688  # second radiation constant h c / k_B (um K), CODATA 2018


@dataclass(frozen=True)
class Spectrum:
    """Discrete spectrum: wavelengths (nm) and detected-photon weights (sum 1)."""

    wavelengths_nm: tuple[float, ...]
    weights: tuple[float, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        if len(self.wavelengths_nm) != len(self.weights) or not self.wavelengths_nm:
            raise ParameterError("a spectrum needs as many weights as wavelengths, at least one")
        w = np.asarray(self.weights, dtype=float)
        if np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-9):
            raise ParameterError("spectrum weights must be >= 0 and sum to 1")

    @property
    def n(self) -> int:
        """Number of wavelength samples."""
        return len(self.wavelengths_nm)

    @property
    def wavelengths_array_nm(self) -> np.ndarray:
        """Wavelengths as an array (nm)."""
        return np.asarray(self.wavelengths_nm, dtype=float)

    @property
    def weights_array(self) -> np.ndarray:
        """Weights as an array."""
        return np.asarray(self.weights, dtype=float)


def monochromatic(wavelength_nm: float) -> Spectrum:
    """A single wavelength (nm)."""
    return Spectrum((float(wavelength_nm),), (1.0,), name=f"mono{wavelength_nm:g}nm")


def _binned(camera: Camera, photon_rate, n: int, name: str) -> Spectrum:
    lo, hi = camera.band_nm
    edges = np.linspace(lo, hi, n + 1)
    fine = np.linspace(lo, hi, 40 * n + 1)
    rate = photon_rate(fine) * camera.transmission_at(fine) * camera.qe_at(fine)
    weights = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (fine >= a) & (fine <= b)
        weights.append(np.trapezoid(rate[sel], fine[sel]))
    w = np.asarray(weights)
    w /= w.sum()
    mids = 0.5 * (edges[:-1] + edges[1:])
    return Spectrum(tuple(float(x) for x in mids), tuple(float(x) for x in w), name=name)


def ogse_spectrum(camera: Camera, n: int = 10) -> Spectrum:
    """The ground-test source (EQ-99 lamp): flat in energy per unit wavelength over the band.

    ASSUMED (docs/facts.md): photon rate proportional to wavelength.  ``n`` equal-width
    bins over the camera band, sampled at their centres, weighted by detected photons.
    """
    return _binned(camera, lambda lam: lam, n, f"ogse{n}")


def blackbody_spectrum(camera: Camera, teff_K: float, n: int = 10) -> Spectrum:
    """A star as a blackbody of effective temperature ``teff_K`` (photon rate B_lambda lambda)."""

    def rate(lam_nm: np.ndarray) -> np.ndarray:
        lam_um = lam_nm * 1e-3
        return lam_um**-4 / np.expm1(_H_C_OVER_K_UM_K / (lam_um * teff_K))

    return _binned(camera, rate, n, f"bb{teff_K:g}K{n}")
