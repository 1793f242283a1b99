"""Reference engine: GalSim (a weighted sum of monochromatic ``OpticalPSF``).

For each wavelength ``lambda`` of the spectrum, a :class:`galsim.OpticalPSF` with the camera's
pupil (120 mm, unobstructed) and the Noll coefficients of that wavelength is built.  GalSim's
``aberrations[j]`` is Noll ``j`` in **waves at** ``lam`` (element 0 unused), so the nm RMS
coefficients are divided by ``lambda`` per wavelength; this is also how the chromatic focal
shift (a different Z4 per wavelength) enters.  The weighted sum is convolved with the
diffusion/jitter Gaussian and drawn with ``method='auto'``, i.e. convolved with the pixel box
exactly once (no explicit :class:`galsim.Pixel`, which would convolve it twice).

Accuracy at PLATO's 25x undersampling (docs/facts.md, "Reference simulators"): GalSim's
default image of an ``OpticalPSF`` covers only ~10 px and folds the wings back into the stamp.
``pad_factor`` (default 3 here) enlarges the optical image, and the drawn field is the stamp
plus a margin, cropped afterwards; light outside the drawn field is lost, as in every engine.

Geometry.  The stamp is drawn on an image whose pixel ``(i, j)`` has GalSim coordinates
``(x, y) = (j, i)``; the star is placed with ``center=(c + dx, c + dy)``, ``c = size // 2``.
GalSim arrays are ``[y, x]`` like the stamps.  Orientation: GalSim's ``fft_sign='+'`` default
forms the image with the kernel ``exp(+2 pi i u.x)``, the convention of
:mod:`plato_sim.optics.wavefront` (positive Z2 moves the image to -x; coma points as in the fast
engine; checked pixel by pixel in ``tests/test_engines.py``).  No flip is needed.

``mode="chromatic"`` uses :class:`galsim.ChromaticOpticalPSF` instead (for timing comparisons):
it keeps the optical path difference fixed in nm over the band, so it only accepts
coefficients that do not depend on wavelength, and in GalSim 2.8.5 it cannot be padded
(``pad_factor`` is rejected) and applies ``oversampling`` at the first wavelength only.
"""

from __future__ import annotations

import numpy as np

from plato_sim.errors import ParameterError, PlatoFocusError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.spectra import Spectrum
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX, PSFEngine, normalise_request

__all__ = ["GalSimEngine"]

_MODES = ("sum", "chromatic")


class GalSimEngine(PSFEngine):
    """Reference PSF engine built on GalSim.

    Args:
        camera: the camera.
        diffusion_sigma_px: charge-diffusion Gaussian sigma (pixels).
        jitter_sigma_px: pointing-jitter Gaussian sigma per axis (pixels).
        mode: ``"sum"`` (weighted sum of monochromatic ``OpticalPSF``, the reference) or
            ``"chromatic"`` (``ChromaticOpticalPSF``, wavelength-independent coefficients only).
        pad_factor: ``OpticalPSF`` pad factor (``"sum"`` mode only).
        oversampling: ``OpticalPSF`` oversampling relative to Nyquist.
        margin_px: pixels drawn around the stamp on each side, then cropped.
        folding_threshold: GalSim ``GSParams.folding_threshold`` (fraction of flux allowed to
            fold back in the drawing FFT).
    """

    name = "galsim"

    def __init__(
        self,
        camera: Camera = PLATO_NORMAL_CAMERA,
        diffusion_sigma_px: float = DEFAULT_DIFFUSION_SIGMA_PX,
        jitter_sigma_px: float = 0.0,
        mode: str = "sum",
        pad_factor: float = 3.0,
        oversampling: float = 1.5,
        margin_px: int = 4,
        folding_threshold: float = 5e-3,
    ) -> None:
        super().__init__(camera, diffusion_sigma_px, jitter_sigma_px)
        if mode not in _MODES:
            raise ParameterError(f"GalSimEngine mode must be one of {_MODES}, got {mode!r}")
        if pad_factor < 1 or oversampling <= 0 or margin_px < 0:
            raise ParameterError("pad_factor must be >= 1, oversampling > 0 and margin_px >= 0")
        self.mode = mode
        self.pad_factor = float(pad_factor)
        self.oversampling = float(oversampling)
        self.margin_px = int(margin_px)
        self.folding_threshold = float(folding_threshold)

    def _gsparams(self):
        import galsim

        return galsim.GSParams(folding_threshold=self.folding_threshold)

    def _diam_m(self) -> float:
        return self.camera.pupil_diameter_mm * 1e-3

    def optical_profile(self, zernikes_nm: np.ndarray, spectrum: Spectrum):
        """The polychromatic optical PSF of one state as a GalSim profile (unit flux).

        Args:
            zernikes_nm: ``(L, J)`` Noll coefficients (nm RMS) per wavelength.
            spectrum: wavelengths and weights.

        Returns:
            ``galsim.GSObject`` in arcsec (``"sum"``), or a ``ChromaticObject`` (``"chromatic"``).
        """
        import galsim

        gsp = self._gsparams()
        if self.mode == "chromatic":
            z0 = zernikes_nm[0]
            if not np.allclose(zernikes_nm, z0[None, :], rtol=0, atol=1e-9):
                raise ParameterError(
                    "GalSimEngine(mode='chromatic'): ChromaticOpticalPSF keeps the path "
                    "difference fixed over the band; zernikes_nm must not vary with wavelength"
                )
            lam0 = float(spectrum.wavelengths_nm[0])
            return galsim.ChromaticOpticalPSF(
                lam=lam0,
                diam=self._diam_m(),
                aberrations=[0.0] + list(z0 / lam0),
                scale_unit=galsim.arcsec,
                obscuration=0.0,
                oversampling=self.oversampling,
                gsparams=gsp,
            )
        parts = []
        for li, (lam, w) in enumerate(zip(spectrum.wavelengths_nm, spectrum.weights, strict=True)):
            if w == 0:
                continue
            opt = galsim.OpticalPSF(
                lam=float(lam),
                diam=self._diam_m(),
                aberrations=[0.0] + list(zernikes_nm[li] / lam),
                obscuration=0.0,
                scale_unit=galsim.arcsec,
                oversampling=self.oversampling,
                pad_factor=self.pad_factor,
                gsparams=gsp,
            )
            parts.append(opt.withFlux(float(w)))
        return galsim.Sum(parts) if len(parts) > 1 else parts[0]

    @staticmethod
    def _bandpass(spectrum: Spectrum):
        """A flat bandpass sampled at the spectrum's wavelengths, and an integrator that
        weighs those samples by exactly the spectrum's weights (no quadrature rule)."""
        import galsim

        lam = spectrum.wavelengths_array_nm
        weights = spectrum.weights_array
        if lam.size < 2:
            raise ParameterError("GalSimEngine(mode='chromatic') needs at least two wavelengths")

        class _SpectrumWeights(galsim.integ.IntegrationRule):
            def calculateWeights(self, xs, w):  # noqa: N802 (GalSim's name)
                xs = np.asarray(xs, dtype=float)
                if xs.shape != lam.shape or not np.allclose(xs, lam):
                    raise PlatoFocusError("GalSim sampled unexpected wavelengths")
                return weights.copy()

        table = galsim.LookupTable(lam, np.ones_like(lam), interpolant="linear")
        return galsim.Bandpass(table, wave_type="nm"), galsim.integ.SampleIntegrator(
            _SpectrumWeights()
        )

    def render(
        self,
        zernikes_nm: np.ndarray,
        spectrum: Spectrum,
        offsets_px: np.ndarray | None = None,
        size: int = 32,
    ) -> np.ndarray:
        """See :meth:`PSFEngine.render` (one GalSim profile per state, one draw per offset)."""
        import galsim

        z, off, squeeze = normalise_request(zernikes_nm, spectrum, offsets_px)
        scale = self.camera.pixel_arcsec
        n = size + 2 * self.margin_px
        c = size // 2 + self.margin_px
        out = np.empty((z.shape[0], off.shape[1], size, size))
        blur = None
        if self.blur_sigma_px > 0:
            blur = galsim.Gaussian(sigma=self.blur_sigma_px * scale, gsparams=self._gsparams())
        for b in range(z.shape[0]):
            prof = self.optical_profile(z[b], spectrum)
            if blur is not None:
                prof = galsim.Convolve([prof, blur])
            if self.mode == "chromatic":
                bp, integ = self._bandpass(spectrum)
                flat = galsim.LookupTable([100.0, 3000.0], [1.0, 1.0], interpolant="linear")
                # 1 photon / (nm cm^2 s): each wavelength draws with unit flux
                prof = prof * galsim.SED(flat, "nm", "fphotons")
            for k in range(off.shape[1]):
                img = galsim.ImageD(n, n, xmin=0, ymin=0, scale=scale)
                centre = galsim.PositionD(c + off[b, k, 0], c + off[b, k, 1])
                if self.mode == "chromatic":
                    prof.drawImage(bp, image=img, center=centre, method="auto", integrator=integ)
                else:
                    prof.drawImage(image=img, center=centre, method="auto")
                m = self.margin_px
                out[b, k] = img.array[m : m + size, m : m + size]
        return out[:, 0] if squeeze else out
