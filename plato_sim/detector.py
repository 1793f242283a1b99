"""The CCD270 detector chain: expected electrons -> raw 16-bit ADU frames.

One small model, shared by the synthetic datasets (:mod:`plato_sim.scenes.dataset`) and the
ground-test campaign emulator.  Values are from ``docs/facts.md`` (PlatoSim3) unless
marked ASSUMED.

What :meth:`DetectorModel.expose` does, in this order (why: each step acts on the physical
quantity it acts on in a real CCD):

1. photo-electrons: the input image (expected detected electrons of the source, i.e. photons
   x QE, already integrated over the pixel and the exposure) plus the diffuse background
   ``background_e_per_px_s x exptime``, times the pixel response non-uniformity (PRNU, a
   flat-field map);
2. plus the dark current (uniform, temperature dependent) and the hot pixels' extra dark;
3. Poisson draw of the total (shot noise of signal, background and dark together);
4. cosmic-ray tracks (electrons deposited along short straight tracks);
5. full well: charge above ``full_well_e`` blooms along the column (half up, half down),
   charge leaving the window is lost; every pixel ends at or below the full well;
6. read noise: CCD and front-end electronics, Gaussian, added in quadrature (electrons);
7. gain (e-/ADU) and electronic offset (ADU), rounding, and the 16-bit ADC range
   ``[0, adc_max_adu]``.

Charge diffusion is **not** applied here: it is part of the PSF engines' transfer function
(:data:`plato_sim.psf.DEFAULT_DIFFUSION_SIGMA_PX`, sigma 0.2 px), which is exact there and
free, while applying it to a pixelised image here would blur twice.

The QE's wavelength dependence is in the spectra (:mod:`plato_sim.optics.spectra` weights detected
photons); :attr:`DetectorModel.qe_scale` scales the band-mean QE for domain randomisation and
:meth:`DetectorModel.electrons_from_photons` converts a photon count.

Fixed-pattern effects (PRNU map, hot pixels) belong to the detector, not to one exposure:
draw them once per window with :meth:`DetectorModel.fixed_pattern` and pass the same
:class:`FixedPattern` to every frame of that window (source and closed-shutter frames), as a
real CCD would.  Randomness always comes from an explicit ``np.random.Generator``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from plato_sim.errors import ParameterError

__all__ = [
    "DetectorModel",
    "FixedPattern",
    "draw_value",
    "saturation_mask",
    "saturation_signal_adu",
    "NOMINAL_GAIN_E_PER_ADU",
    "NOMINAL_OFFSET_ADU",
    "FULL_WELL_E",
    "ADC_MAX_ADU",
]

NOMINAL_GAIN_E_PER_ADU = 25.0  # PlatoSim3 (docs/facts.md): ~25 e-/ADU
NOMINAL_OFFSET_ADU = 1000.0  # PlatoSim3 (docs/facts.md): electronic offset ~1000 ADU
FULL_WELL_E = 900_000.0  # PlatoSim3 (docs/facts.md)
ADC_MAX_ADU = 65535  # 16-bit ADC (docs/facts.md)
READ_NOISE_CCD_E = 38.7  # PlatoSim3 (docs/facts.md)
READ_NOISE_FEE_E = 32.0  # PlatoSim3 (docs/facts.md)
CCD_TEMPERATURE_DEGC = -70.0  # nominal CCD temperature, PlatoSim3 (docs/facts.md)
MEAN_QE = 0.6267  # PlatoSim3 default mean QE (docs/facts.md)

# A saturated pixel in docs/campaign-format.md: signal above the offset > 90 % of the full well.
SATURATION_FRACTION_OF_FULL_WELL = 0.9


def saturation_signal_adu(gain_e_per_adu: float, full_well_e: float = FULL_WELL_E) -> float:
    """Signal above the offset (ADU) beyond which a pixel counts as saturated.

    The one statement of the docs/campaign-format.md rule: 90 % of the full well (e-) converted
    with the gain (e-/ADU).  Callers add the ADC limit where it applies
    (:attr:`DetectorModel.saturation_adu`, :func:`plato_sim.stamps.saturation_level_adu`).
    """
    return SATURATION_FRACTION_OF_FULL_WELL * full_well_e / gain_e_per_adu


@dataclass(frozen=True)
class FixedPattern:
    """Fixed-pattern maps of detector window(s) (the same for every frame of a window).

    Attributes:
        prnu: ``(..., H, W)`` multiplicative flat field (mean ~1).
        hot_e_per_s: ``(..., H, W)`` extra dark current of hot pixels (e-/s), 0 elsewhere.

    Leading dimensions (several windows at once) broadcast against the frames' leading
    dimensions in :meth:`DetectorModel.expose`.
    """

    prnu: np.ndarray
    hot_e_per_s: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape ``(..., H, W)`` of the maps (pixels)."""
        return tuple(self.prnu.shape)


@dataclass(frozen=True)
class DetectorModel:
    """A CCD270 + front-end electronics, as seen in raw ADU.

    Attributes:
        gain_e_per_adu: conversion gain (e-/ADU), ~25 (PlatoSim3).
        offset_adu: electronic offset (bias) added to every pixel (ADU), ~1000 (PlatoSim3).
        read_noise_ccd_e: CCD read noise (e- RMS), 38.7 (PlatoSim3).
        read_noise_fee_e: front-end-electronics read noise (e- RMS), 32 (PlatoSim3).
        full_well_e: pixel full-well capacity (e-), 900 000 (PlatoSim3).
        adc_max_adu: largest ADC code, 65535 (16 bit).
        ccd_temperature_degC: CCD temperature, nominal -70 degC (PlatoSim3).
        dark_e_per_s_ref: dark current at ``dark_ref_temperature_degC`` (e-/px/s).  ASSUMED
            0.05 e-/px/s at -70 degC: no public CCD270 figure in docs/facts.md; a cooled
            back-illuminated CCD is of this order, and at 0.1 s exposures any value below
            ~10 e-/px/s is buried in the read noise.
        dark_ref_temperature_degC: temperature of ``dark_e_per_s_ref`` (degC).
        dark_doubling_degC: dark current doubles every this many degC.  ASSUMED 6.3 degC,
            the usual silicon rule of thumb near -70 degC.
        prnu_sigma: relative RMS of the pixel response non-uniformity.  ASSUMED 1 %, typical
            of a back-illuminated CCD in the red.
        hot_pixel_fraction: fraction of hot pixels.  ASSUMED 1e-4 (a cooled, unirradiated
            CCD on ground).
        hot_pixel_e_per_s: (min, max) of the hot pixels' extra dark, log-uniform (e-/s).
            ASSUMED (100, 10000).
        cosmic_rate_per_cm2_s: cosmic-ray hits per cm^2 per second.  ASSUMED 0.02, secondary
            muons at ground level (~1 /cm^2/min); use ~5 for L2.
        cosmic_e_per_px: mean charge a track leaves per pixel crossed (e-).  ASSUMED 1500
            (~80 e-/um of silicon over a ~16-20 um deep pixel).
        cosmic_max_length_px: longest track (pixels), lengths uniform in [1, max].  ASSUMED 6.
        background_e_per_px_s: diffuse light reaching the detector with the shutter open
            (e-/px/s); ASSUMED 0 by default (dark test chamber); randomised in datasets.
        qe_scale: multiplies the band-mean QE (``MEAN_QE`` = 0.6267, PlatoSim3).
        pixel_um: pixel pitch (um), 18 (A&A 681 A18), for the cosmic-ray rate per area.
    """

    gain_e_per_adu: float = NOMINAL_GAIN_E_PER_ADU
    offset_adu: float = NOMINAL_OFFSET_ADU
    read_noise_ccd_e: float = READ_NOISE_CCD_E
    read_noise_fee_e: float = READ_NOISE_FEE_E
    full_well_e: float = FULL_WELL_E
    adc_max_adu: int = ADC_MAX_ADU
    ccd_temperature_degC: float = CCD_TEMPERATURE_DEGC
    dark_e_per_s_ref: float = 0.05
    dark_ref_temperature_degC: float = CCD_TEMPERATURE_DEGC
    dark_doubling_degC: float = 6.3
    prnu_sigma: float = 0.01
    hot_pixel_fraction: float = 1e-4
    hot_pixel_e_per_s: tuple[float, float] = (100.0, 10000.0)
    cosmic_rate_per_cm2_s: float = 0.02
    cosmic_e_per_px: float = 1500.0
    cosmic_max_length_px: int = 6
    background_e_per_px_s: float = 0.0
    qe_scale: float = 1.0
    pixel_um: float = 18.0

    def __post_init__(self) -> None:
        checks = {
            "gain_e_per_adu": self.gain_e_per_adu > 0,
            "read_noise_ccd_e": self.read_noise_ccd_e >= 0,
            "read_noise_fee_e": self.read_noise_fee_e >= 0,
            "full_well_e": self.full_well_e > 0,
            "adc_max_adu": 0 < self.adc_max_adu <= 65535,
            "dark_e_per_s_ref": self.dark_e_per_s_ref >= 0,
            "dark_doubling_degC": self.dark_doubling_degC > 0,
            "prnu_sigma": 0 <= self.prnu_sigma < 0.5,
            "hot_pixel_fraction": 0 <= self.hot_pixel_fraction <= 1,
            "cosmic_rate_per_cm2_s": self.cosmic_rate_per_cm2_s >= 0,
            "cosmic_max_length_px": self.cosmic_max_length_px >= 1,
            "background_e_per_px_s": self.background_e_per_px_s >= 0,
            "qe_scale": self.qe_scale > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            vals = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ParameterError(f"DetectorModel: invalid parameter(s): {vals}")

    # ------------------------------------------------------------------ derived
    @property
    def read_noise_e(self) -> float:
        """Total read noise (e- RMS): CCD and electronics in quadrature."""
        return math.hypot(self.read_noise_ccd_e, self.read_noise_fee_e)

    @property
    def read_noise_adu(self) -> float:
        """Total read noise in ADU RMS."""
        return self.read_noise_e / self.gain_e_per_adu

    @property
    def dark_e_per_s(self) -> float:
        """Dark current (e-/px/s) at :attr:`ccd_temperature_degC`."""
        dt = self.ccd_temperature_degC - self.dark_ref_temperature_degC
        return self.dark_e_per_s_ref * 2.0 ** (dt / self.dark_doubling_degC)

    @property
    def mean_qe(self) -> float:
        """Band-mean quantum efficiency (PlatoSim3's 0.6267 x ``qe_scale``)."""
        return MEAN_QE * self.qe_scale

    @property
    def saturation_adu(self) -> float:
        """Raw level (ADU) above which a pixel counts as saturated (docs/campaign-format.md)."""
        level = self.offset_adu + saturation_signal_adu(self.gain_e_per_adu, self.full_well_e)
        return float(min(level, self.adc_max_adu))

    def electrons_from_photons(self, photons: np.ndarray | float) -> np.ndarray:
        """Expected detected electrons of a photon count (band-mean QE; no noise)."""
        return np.asarray(photons, dtype=float) * self.mean_qe

    def to_dict(self) -> dict:
        """Plain-python description (manifests, FITS headers)."""
        d = dataclasses.asdict(self)
        d["hot_pixel_e_per_s"] = list(self.hot_pixel_e_per_s)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> DetectorModel:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ParameterError(f"DetectorModel: unknown parameter(s) {sorted(unknown)}")
        kw = dict(d)
        if "hot_pixel_e_per_s" in kw:
            kw["hot_pixel_e_per_s"] = tuple(float(v) for v in kw["hot_pixel_e_per_s"])
        return cls(**kw)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        ranges: Mapping[str, object] | None = None,
        base: DetectorModel | None = None,
    ) -> DetectorModel:
        """A detector with some parameters drawn at random (domain randomisation).

        Args:
            rng: the random generator (the only source of randomness).
            ranges: parameter name -> distribution spec (see :func:`draw_value`), e.g.
                ``{"gain_e_per_adu": [23, 27], "dark_e_per_s_ref": {"loguniform": [0.01, 1]}}``.
                Parameters are drawn in sorted name order, so the result depends only on
                ``rng``'s state and ``ranges``.
            base: the values of the parameters not in ``ranges`` (default: nominal).
        """
        base = base or cls()
        ranges = dict(ranges or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(ranges) - names
        if unknown:
            raise ParameterError(f"DetectorModel.random: unknown parameter(s) {sorted(unknown)}")
        kw = {}
        for name in sorted(ranges):
            v = draw_value(rng, ranges[name], name)
            if name in ("adc_max_adu", "cosmic_max_length_px"):
                v = int(round(v))
            kw[name] = v
        return dataclasses.replace(base, **kw)

    # ------------------------------------------------------------------ fixed pattern
    def fixed_pattern(self, shape: tuple[int, ...], rng: np.random.Generator) -> FixedPattern:
        """Draw the PRNU maps and hot pixels of windows of shape ``(..., H, W)``."""
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ParameterError(f"fixed_pattern: shape must be (..., H, W), got {shape}")
        size = math.prod(shape)
        prnu = 1.0 + self.prnu_sigma * rng.standard_normal(shape)
        np.clip(prnu, 0.0, None, out=prnu)
        hot = np.zeros(shape)
        n_hot = int(rng.binomial(size, self.hot_pixel_fraction)) if self.hot_pixel_fraction else 0
        if n_hot:
            idx = rng.choice(size, size=n_hot, replace=False)
            lo, hi = self.hot_pixel_e_per_s
            hot.ravel()[idx] = np.exp(rng.uniform(math.log(lo), math.log(hi), n_hot))
        return FixedPattern(prnu, hot)

    # ------------------------------------------------------------------ frames
    def expose(
        self,
        electrons: np.ndarray,
        exptime_s: float,
        rng: np.random.Generator,
        pattern: FixedPattern | None = None,
    ) -> np.ndarray:
        """Raw ADU frame(s) of an exposure.

        Args:
            electrons: ``(..., H, W)`` expected photo-electrons of the source(s) in this
                exposure (flux x normalised PSF; noise-free, >= 0).  Any leading dimensions
                are independent frames of the same window.
            exptime_s: exposure time (s): scales background, dark and cosmic rays.
            rng: random generator.
            pattern: the window's fixed pattern, ``(H, W)`` or broadcastable to the frames'
                shape (one pattern per window when several windows are exposed at once);
                when ``None``, one ``(H, W)`` pattern is drawn from ``rng`` for all frames.

        Returns:
            ``uint16`` array of the shape of ``electrons``: raw ADU including the offset.
        """
        e = np.asarray(electrons, dtype=float)
        if e.ndim < 2:
            raise ParameterError(f"expose: electrons must be (..., H, W), got shape {e.shape}")
        if not np.all(np.isfinite(e)) or np.any(e < 0):
            raise ParameterError("expose: electrons must be finite and >= 0")
        if exptime_s < 0:
            raise ParameterError(f"expose: exptime_s must be >= 0, got {exptime_s}")
        pattern = self._pattern(e.shape, rng, pattern)
        photo = (e + self.background_e_per_px_s * exptime_s) * pattern.prnu
        return self._finish(photo, exptime_s, rng, pattern)

    def closed_shutter(
        self,
        shape: tuple[int, ...],
        exptime_s: float,
        rng: np.random.Generator,
        pattern: FixedPattern | None = None,
    ) -> np.ndarray:
        """Raw ADU frame(s) with the shutter closed: offset, dark, hot pixels, read noise.

        ``shape`` is ``(..., H, W)``; returns ``uint16`` of that shape.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ParameterError(f"closed_shutter: shape must be (..., H, W), got {shape}")
        if exptime_s < 0:
            raise ParameterError(f"closed_shutter: exptime_s must be >= 0, got {exptime_s}")
        pattern = self._pattern(shape, rng, pattern)
        return self._finish(np.zeros(shape), exptime_s, rng, pattern)

    def _pattern(self, shape, rng, pattern: FixedPattern | None) -> FixedPattern:
        if pattern is None:
            return self.fixed_pattern(shape[-2:], rng)
        try:
            ok = np.broadcast_shapes(pattern.shape, tuple(shape)) == tuple(shape)
        except ValueError:
            ok = False
        if not ok:
            raise ParameterError(
                f"fixed pattern shape {pattern.shape} does not broadcast to frames {tuple(shape)}"
            )
        return pattern

    def _finish(
        self, photo_e: np.ndarray, exptime_s: float, rng: np.random.Generator, pattern
    ) -> np.ndarray:
        mean = photo_e + (self.dark_e_per_s + pattern.hot_e_per_s) * exptime_s
        e = rng.poisson(mean).astype(float)
        self._add_cosmics(e, exptime_s, rng)
        e = bloom_columns(e, self.full_well_e)
        if self.read_noise_e > 0:
            e += self.read_noise_e * rng.standard_normal(e.shape)
        adu = np.rint(e / self.gain_e_per_adu + self.offset_adu)
        np.clip(adu, 0, self.adc_max_adu, out=adu)
        return adu.astype(np.uint16)

    def _add_cosmics(self, e: np.ndarray, exptime_s: float, rng: np.random.Generator) -> None:
        """Add straight cosmic-ray tracks in place to every frame of ``e`` (..., H, W)."""
        if self.cosmic_rate_per_cm2_s <= 0 or exptime_s <= 0:
            return
        h, w = e.shape[-2:]
        area_cm2 = h * w * (self.pixel_um * 1e-4) ** 2
        frames = e.reshape(-1, h, w)
        counts = rng.poisson(self.cosmic_rate_per_cm2_s * area_cm2 * exptime_s, len(frames))
        for f in np.flatnonzero(counts):
            for _ in range(int(counts[f])):
                r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
                length = rng.uniform(1.0, self.cosmic_max_length_px)
                ang = rng.uniform(0.0, 2.0 * math.pi)
                n = max(1, int(math.ceil(length)))
                t = np.linspace(0.0, length, n)
                rr = np.floor(r0 + t * math.sin(ang)).astype(int)
                cc = np.floor(c0 + t * math.cos(ang)).astype(int)
                ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
                dep = rng.exponential(self.cosmic_e_per_px, n)
                np.add.at(frames[f], (rr[ok], cc[ok]), dep[ok])


def bloom_columns(electrons: np.ndarray, full_well_e: float) -> np.ndarray:
    """Cap every pixel at ``full_well_e``; the excess spills along its column.

    The excess of a saturated pixel goes half up and half down its column and fills the
    first pixels with room left in that direction (charge spilling past the window edge is
    lost).  Total charge is conserved inside the window.  Returns a new array.
    """
    e = np.array(electrons, dtype=float, copy=True)
    if not np.any(e > full_well_e):
        return e
    h, w = e.shape[-2:]
    flat = e.reshape(-1, h, w)
    excess = np.clip(flat - full_well_e, 0.0, None)
    np.minimum(flat, full_well_e, out=flat)
    half = 0.5 * excess
    # two sweeps over rows, vectorised over frames and columns: charge travels one way
    for rows in (range(h - 1, -1, -1), range(h)):
        carry = np.zeros(flat.shape[::2])
        for i in rows:
            carry += half[:, i, :]
            take = np.minimum(carry, full_well_e - flat[:, i, :])
            flat[:, i, :] += take
            carry -= take
    return flat.reshape(e.shape)


def saturation_mask(raw_adu: np.ndarray, detector: DetectorModel | None = None) -> np.ndarray:
    """Saturated pixels of a raw frame (docs/campaign-format.md rule).

    A pixel is saturated at the ADC limit or when its signal above the offset exceeds 90 %
    of the full well converted with the gain.
    """
    d = detector or DetectorModel()
    raw = np.asarray(raw_adu)
    return (raw >= d.adc_max_adu) | (raw.astype(float) > d.saturation_adu)


def draw_value(
    rng: np.random.Generator, spec: object, name: str = "value", size: int | None = None
) -> float | np.ndarray:
    """Draw from a distribution spec (the YAML vocabulary of the datasets).

    ``spec`` is one of: a number (fixed); ``[lo, hi]`` (uniform); ``{"uniform": [lo, hi]}``;
    ``{"loguniform": [lo, hi]}`` (log-uniform, lo > 0); ``{"normal": [mean, sigma]}``;
    ``{"choice": [v1, v2, ...]}``.  ``name`` is used in error messages.  Returns a float, or
    a float array of ``size`` values when ``size`` is given.
    """
    one = size is None
    n = 1 if one else int(size)
    if isinstance(spec, bool):
        raise ParameterError(f"{name}: a distribution spec cannot be a boolean")
    if isinstance(spec, int | float):
        out = np.full(n, float(spec))
        return float(out[0]) if one else out
    if isinstance(spec, list | tuple):
        spec = {"uniform": spec}
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ParameterError(
            f"{name}: expected a number, [lo, hi] or a one-key mapping "
            f"(uniform/loguniform/normal/choice), got {spec!r}"
        )
    ((kind, args),) = spec.items()
    if kind == "choice":
        if not isinstance(args, list | tuple) or not args:
            raise ParameterError(f"{name}: 'choice' needs a non-empty list, got {args!r}")
        out = np.asarray(args, dtype=float)[rng.integers(len(args), size=n)]
        return float(out[0]) if one else out
    if not isinstance(args, list | tuple) or len(args) != 2:
        raise ParameterError(f"{name}: {kind!r} needs two numbers, got {args!r}")
    a, b = float(args[0]), float(args[1])
    if kind == "uniform":
        if b < a:
            raise ParameterError(f"{name}: uniform range [{a}, {b}] is reversed")
        out = rng.uniform(a, b, n)
    elif kind == "loguniform":
        if not 0 < a <= b:
            raise ParameterError(f"{name}: loguniform needs 0 < lo <= hi, got [{a}, {b}]")
        out = np.exp(rng.uniform(math.log(a), math.log(b), n))
    elif kind == "normal":
        if b < 0:
            raise ParameterError(f"{name}: normal sigma must be >= 0, got {b}")
        out = rng.normal(a, b, n)
    else:
        raise ParameterError(
            f"{name}: unknown distribution {kind!r} (uniform/loguniform/normal/choice)"
        )
    return float(out[0]) if one else out
