"""Spectra: source x transmission x QE -> wavelength samples and detected-photon weights.

A :class:`Spectrum` is what the PSF engines consume: ``L`` wavelengths (nm) and weights
that sum to one, the fraction of *detected photons* (electrons) at each wavelength.

Two quadrature rules turn the detected-photon density over the band into samples
(docs/datasets.md, "The band's wavelength samples"):

* ``"midpoint"`` (the default): ``n`` equal-width bins, each sampled at its centre and weighted
  by the photons it holds;
* ``"gauss"``: the ``n``-point Gauss rule of that density itself (nodes and weights of the
  orthogonal polynomials of the detected-photon measure, Golub-Welsch), exact for every
  polynomial in wavelength of degree ``2n - 1``.  The band-integrated PSF varies smoothly
  with wavelength (a dilation ~ lambda and a phase ~ 1/lambda), so 4 Gauss nodes reproduce the
  continuous band as well as 10 midpoint bins do, at 40 % of the engine cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import Camera

__all__ = [
    "Spectrum",
    "SPECTRUM_RULES",
    "monochromatic",
    "ogse_spectrum",
    "blackbody_spectrum",
    "gauss_nodes",
    "binned_spectrum",
    "COLOUR_REF_NM",
    "COLOUR_HALF_WIDTH_NM",
    "colour_factor",
    "recoloured",
]

_H_C_OVER_K_UM_K = 14387.7688  # second radiation constant h c / k_B (um K), CODATA 2018
#: Centre and half-width (nm) of the reduced wavelength ``x = (lambda - 750) / 250`` of a
#: detected spectrum's colour change (:func:`colour_factor`): x runs over [-1, 1] on the
#: PLATO band, 500-1000 nm (docs/facts.md).
COLOUR_REF_NM = 750.0
COLOUR_HALF_WIDTH_NM = 250.0
#: Quadrature rules of :func:`ogse_spectrum` and :func:`blackbody_spectrum`.
SPECTRUM_RULES = ("midpoint", "gauss")
#: Fine grid on which the midpoint rule tabulates the detected-photon density (points per bin).
_FINE_PER_SAMPLE = 40
#: Points of the fine grid (trapezoid measure) whose Gauss rule :func:`gauss_nodes` finds.
_GAUSS_FINE_POINTS = 4001


@dataclass(frozen=True)
class Spectrum:
    """Discrete spectrum: wavelengths (nm) and detected-photon weights (sum 1)."""

    wavelengths_nm: tuple[float, ...]
    weights: tuple[float, ...]
    name: str = "custom"
    #: how the samples were placed (:data:`SPECTRUM_RULES`): ``"gauss"`` for the Gauss rule's
    #: nodes, ``"midpoint"`` for bin centres and any list given as it is
    rule: str = "midpoint"

    def __post_init__(self) -> None:
        if self.rule not in SPECTRUM_RULES:
            raise ParameterError(f"spectrum rule {self.rule!r}: one of {', '.join(SPECTRUM_RULES)}")
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


def _density(
    camera: Camera, photon_rate, n_fine: int, qe_factor=None
) -> tuple[np.ndarray, np.ndarray]:
    """Fine wavelength grid over the band (nm) and the detected-photon density on it: source
    x transmission x QE (times ``qe_factor(lambda_nm)`` if given), clipped at zero."""
    lo, hi = camera.band_nm
    fine = np.linspace(lo, hi, n_fine)
    qe = camera.qe_at(fine)
    if qe_factor is not None:
        qe = qe * qe_factor(fine)
    return fine, np.clip(photon_rate(fine) * camera.transmission_at(fine) * qe, 0.0, None)


def binned_spectrum(camera: Camera, photon_rate, n: int, name: str, qe_factor=None) -> Spectrum:
    """``n`` equal bins over the camera's band, each sampled at its centre with the detected
    photons it holds: ``photon_rate(lambda_nm)`` (source, any unit) x transmission x QE (x
    ``qe_factor(lambda_nm)``, e.g. a camera's own QE departure), integrated by the trapezoid
    rule on :data:`_FINE_PER_SAMPLE` points per bin."""
    lo, hi = camera.band_nm
    edges = np.linspace(lo, hi, n + 1)
    fine, rate = _density(camera, photon_rate, _FINE_PER_SAMPLE * n + 1, qe_factor)
    weights = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (fine >= a) & (fine <= b)
        weights.append(np.trapezoid(rate[sel], fine[sel]))
    w = np.asarray(weights)
    w /= w.sum()
    mids = 0.5 * (edges[:-1] + edges[1:])
    return Spectrum(tuple(float(x) for x in mids), tuple(float(x) for x in w), name=name)


def gauss_nodes(x: np.ndarray, w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n``-point Gauss rule of the discrete measure ``sum_i w_i delta(x - x_i)``.

    The three-term recurrence of the measure's orthogonal polynomials (Stieltjes procedure),
    then the eigenvalues of its Jacobi matrix (nodes) and the squared first components of
    the eigenvectors (weights; Golub & Welsch 1969).  Exact for every polynomial of degree
    ``<= 2n - 1`` against the measure.  ``x`` is best centred and scaled to ~[-1, 1].

    Returns:
        ``(nodes, weights)``, nodes ascending, weights > 0 summing to ``sum(w)``.
    """
    x, w = np.asarray(x, float), np.asarray(w, float)
    if n < 1 or n > len(x) // 2:
        raise ParameterError(f"gauss_nodes: n={n} needs 1 <= n <= {len(x) // 2}")
    total = float(w.sum())
    if not total > 0 or np.any(w < 0):
        raise ParameterError("gauss_nodes: weights must be >= 0 with a positive sum")
    a, b = np.zeros(n), np.zeros(n)
    p_prev, p = np.zeros_like(x), np.ones_like(x)
    norm_prev = 1.0
    for k in range(n):
        norm = float(np.sum(w * p * p))
        a[k] = float(np.sum(w * x * p * p)) / norm
        b[k] = norm / norm_prev if k > 0 else 0.0
        p_prev, p, norm_prev = p, (x - a[k]) * p - b[k] * p_prev, norm
    off = np.sqrt(b[1:])
    nodes, vec = np.linalg.eigh(np.diag(a) + np.diag(off, 1) + np.diag(off, -1))
    weights = vec[0] ** 2
    return nodes, weights * (total / weights.sum())


def _gauss(camera: Camera, photon_rate, n: int, name: str) -> Spectrum:
    lo, hi = camera.band_nm
    fine, rate = _density(camera, photon_rate, _GAUSS_FINE_POINTS)
    dl = np.full(fine.size, fine[1] - fine[0])
    dl[[0, -1]] *= 0.5  # trapezoid weights: the same integral as the midpoint rule's bins
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    x, w = gauss_nodes((fine - mid) / half, rate * dl, n)
    w = w / w.sum()
    return Spectrum(tuple(float(v) for v in mid + half * x), tuple(float(v) for v in w), name=name,
                    rule="gauss")  # fmt: skip


def _rule(rule: str):
    if rule not in SPECTRUM_RULES:
        raise ParameterError(f"spectrum rule {rule!r}: one of {', '.join(SPECTRUM_RULES)}")
    return binned_spectrum if rule == "midpoint" else _gauss


def ogse_spectrum(camera: Camera, n: int = 10, rule: str = "midpoint") -> Spectrum:
    """The ground-test source (EQ-99 lamp): flat in energy per unit wavelength over the band.

    ASSUMED (docs/facts.md): photon rate proportional to wavelength.  ``rule="midpoint"``:
    ``n`` equal-width bins over the camera band, sampled at their centres, weighted by
    detected photons; ``rule="gauss"``: the ``n``-point Gauss rule of the detected-photon
    density (module docstring).
    """
    tag = "" if rule == "midpoint" else "g"
    return _rule(rule)(camera, lambda lam: lam, n, f"ogse{tag}{n}")


def blackbody_spectrum(
    camera: Camera, teff_K: float, n: int = 10, rule: str = "midpoint"
) -> Spectrum:
    """A star as a blackbody of effective temperature ``teff_K`` (photon rate B_lambda lambda);
    ``n`` samples by ``rule`` (:func:`ogse_spectrum`)."""

    def rate(lam_nm: np.ndarray) -> np.ndarray:
        lam_um = lam_nm * 1e-3
        return lam_um**-4 / np.expm1(_H_C_OVER_K_UM_K / (lam_um * teff_K))

    tag = "" if rule == "midpoint" else "g"
    return _rule(rule)(camera, rate, n, f"bb{teff_K:g}K{tag}{n}")


def colour_factor(wavelength_nm, tilt: float, curvature: float) -> np.ndarray:
    """Relative change of a detected spectrum, ``exp(tilt x + curvature x^2)`` with
    ``x = (lambda - COLOUR_REF_NM) / COLOUR_HALF_WIDTH_NM`` (dimensionless; 1 everywhere for
    ``tilt = curvature = 0``).  ``tilt`` stands for a redder or bluer source (lamp colour
    temperature, fibre transmission), ``curvature`` for a QE or coating change that bends the
    band (a thinner or warmer CCD loses red response)."""
    x = (np.asarray(wavelength_nm, dtype=float) - COLOUR_REF_NM) / COLOUR_HALF_WIDTH_NM
    return np.exp(tilt * x + curvature * x * x)


def recoloured(spectrum: Spectrum, tilt: float, curvature: float) -> Spectrum:
    """``spectrum`` at the same wavelengths, its weights times :func:`colour_factor` and
    normalised again: the detected spectrum of a camera whose source or QE differs by that
    factor (the quadrature of the changed density at the same nodes)."""
    w = spectrum.weights_array * colour_factor(spectrum.wavelengths_array_nm, tilt, curvature)
    w = w / w.sum()
    return Spectrum(spectrum.wavelengths_nm, tuple(float(v) for v in w),
                    name=f"{spectrum.name}~c", rule=spectrum.rule)  # fmt: skip
