"""Reference engine: poppy (pupil + ``ZernikeWFE``, MFT to a finely sampled detector).

For each wavelength, a poppy :class:`~poppy.OpticalSystem` made of the circular entrance
pupil and a :class:`~poppy.ZernikeWFE` (coefficients in metres of optical path, index 0 =
Noll 1, ``radius`` = pupil radius) is propagated by poppy's matrix Fourier transform to a
detector sampled ``oversample`` times finer than the CCD pixel.  poppy then only supplies the
*point-sampled* intensity; pixel integration and charge diffusion are done here, because at
PLATO's 25x undersampling poppy's own ``oversample`` binning point-samples the PSF too coarsely
(docs/facts.md, "Reference simulators").

Pixel integration, sound and exact for a band-limited intensity: the polychromatic fine image
(step ``s = pixel / oversample``, below the Nyquist step ``lambda_min N / 2`` of the optical
intensity) is Fourier transformed, multiplied by the *continuous* pixel box
``sinc(f p)`` and the diffusion/jitter Gaussian ``exp(-2 pi^2 sigma^2 f^2)``, transformed back
and read at the pixel centres.  A margin of pixels around the stamp absorbs the wrap-around of
that periodic convolution and is cropped.  Light outside the computed field is lost, as in
every engine.

Geometry.  The detector has an odd number of pixels ``N_p`` and an odd ``oversample``, so poppy's
``ADJUSTABLE`` MFT puts the optical axis on the centre of a fine sample that is the centre of
the central pixel.  Sub-pixel offsets are applied as a source offset (a tilt of the input
wavefront, poppy's ``source_offset_r/theta``): an exact continuous shift, no interpolation.
poppy's image arrays are indexed ``[y, x]`` like the stamps.

Orientation.  poppy forms the image with the kernel ``exp(+2 pi i u.x)``, the convention of
:mod:`plato_sim.optics.wavefront`: a positive Z2 moves the image to -x, and coma points the same way
as in the fast engine (checked pixel by pixel in ``tests/test_engines.py``).  No flip is needed.

Pupil sampling.  A pupil sampled with ``npix`` points across produces ghost copies of the PSF
every ``lambda N npix`` in the focal plane; ``pupil_npix=None`` picks ``npix`` so that at the
shortest wavelength the ghosts lie ``ghost_factor`` times the computed field away.
"""

from __future__ import annotations

import math

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.spectra import Spectrum
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX, PSFEngine, normalise_request

__all__ = ["PoppyEngine", "pixel_integrate_fine"]


def pixel_integrate_fine(
    fine: np.ndarray, oversample: int, blur_sigma_px: float, start: int = 0
) -> np.ndarray:
    """Pixel-integrate (and blur) a finely point-sampled image, exactly in Fourier space.

    Args:
        fine: ``(H * oversample, W * oversample)`` point samples of the intensity, each
            holding the flux of its fine cell (sum = flux in the field).
        oversample: fine samples per pixel (odd: pixel centres fall on fine samples).
        blur_sigma_px: Gaussian sigma of diffusion and jitter combined (pixels).
        start: fine index of the first pixel centre (``(oversample - 1) // 2`` for a grid
            whose pixel ``p`` covers fine samples ``p * oversample .. + oversample - 1``).

    Returns:
        ``(H, W)`` pixel fluxes (fraction of the star's photons in each pixel).
    """
    ny, nx = fine.shape
    fy = np.fft.fftfreq(ny, d=1.0 / oversample)[:, None]  # cycles per pixel
    fx = np.fft.rfftfreq(nx, d=1.0 / oversample)[None, :]
    transfer = np.sinc(fy) * np.sinc(fx)
    if blur_sigma_px > 0:
        transfer = transfer * np.exp(-2.0 * math.pi**2 * blur_sigma_px**2 * (fx**2 + fy**2))
    smooth = np.fft.irfft2(np.fft.rfft2(fine) * transfer, s=fine.shape)
    # each fine sample holds the flux of a (1/oversample)^2 cell: a pixel holds oversample^2
    return smooth[start::oversample, start::oversample] * oversample**2


class PoppyEngine(PSFEngine):
    """Reference PSF engine built on poppy.

    Args:
        camera: the camera.
        diffusion_sigma_px: charge-diffusion Gaussian sigma (pixels).
        jitter_sigma_px: pointing-jitter Gaussian sigma per axis (pixels).
        oversample: fine detector samples per pixel, odd; the fine step must stay below the
            Nyquist step of the intensity, ``lambda_min N / 2`` (0.52 um at 500 nm; 41 gives
            0.44 um).
        pupil_npix: pupil samples across the diameter; ``None`` = automatic (see module doc).
        ghost_factor: with ``pupil_npix=None``, ghost PSFs lie this many computed fields away.
        margin_px: pixels computed around the stamp on each side, then cropped.
    """

    name = "poppy"

    def __init__(
        self,
        camera: Camera = PLATO_NORMAL_CAMERA,
        diffusion_sigma_px: float = DEFAULT_DIFFUSION_SIGMA_PX,
        jitter_sigma_px: float = 0.0,
        oversample: int = 41,
        pupil_npix: int | None = None,
        ghost_factor: float = 1.0,
        margin_px: int = 2,
    ) -> None:
        super().__init__(camera, diffusion_sigma_px, jitter_sigma_px)
        if oversample < 1 or oversample % 2 == 0:
            raise ParameterError(f"oversample must be an odd positive integer, got {oversample}")
        if pupil_npix is not None and pupil_npix < 16:
            raise ParameterError(f"pupil_npix must be >= 16, got {pupil_npix}")
        if margin_px < 0:
            raise ParameterError(f"margin_px must be >= 0, got {margin_px}")
        self.oversample = int(oversample)
        self.pupil_npix = pupil_npix
        self.ghost_factor = float(ghost_factor)
        self.margin_px = int(margin_px)

    def _field_px(self, size: int) -> int:
        n = size + 2 * self.margin_px
        return n + 1 if n % 2 == 0 else n  # odd: optical axis on a pixel centre

    def npix_for(self, spectrum: Spectrum, size: int) -> int:
        """Pupil samples across the diameter used for ``spectrum`` and stamp side ``size``."""
        if self.pupil_npix is not None:
            return int(self.pupil_npix)
        field_um = self._field_px(size) * self.camera.pixel_um
        lam_um = min(spectrum.wavelengths_nm) * 1e-3
        n = math.ceil(self.ghost_factor * field_um / (lam_um * self.camera.f_number))
        return n + (n % 2)

    def check_sampling(self, spectrum: Spectrum) -> None:
        """Raise if the fine step is too coarse for the shortest wavelength (Nyquist)."""
        step_um = self.camera.pixel_um / self.oversample
        nyq_um = min(spectrum.wavelengths_nm) * 1e-3 * self.camera.f_number / 2.0
        if step_um >= nyq_um:
            raise ParameterError(
                f"PoppyEngine: oversample={self.oversample} gives a fine step of {step_um:.3f} um,"
                f" not below the Nyquist step {nyq_um:.3f} um at "
                f"{min(spectrum.wavelengths_nm):g} nm; raise oversample"
            )

    def fine_image(
        self,
        zernikes_nm: np.ndarray,
        wavelength_nm: float,
        offset_px: tuple[float, float],
        n_fine: int,
        npix: int,
    ) -> np.ndarray:
        """Monochromatic point-sampled intensity on an ``n_fine``-square detector.

        Args:
            zernikes_nm: ``(J,)`` Noll coefficients (nm RMS), index 0 = Noll 1.
            wavelength_nm: wavelength (nm).
            offset_px: star offset ``(dx, dy)`` from the optical axis (pixels).
            n_fine: detector side in fine samples (odd).
            npix: pupil samples across the diameter.

        Returns:
            ``(n_fine, n_fine)`` array, flux per fine sample (normalised to a unit pupil flux).
        """
        import astropy.units as u
        import poppy

        radius_m = self.camera.pupil_diameter_mm * 1e-3 / 2.0
        scale_arcsec = self.camera.pixel_arcsec / self.oversample
        osys = poppy.OpticalSystem(
            npix=npix, pupil_diameter=2.0 * radius_m * u.m, oversample=1, name="PLATO TOU"
        )
        osys.add_pupil(poppy.CircularAperture(radius=radius_m))
        osys.add_pupil(
            poppy.ZernikeWFE(radius=radius_m, coefficients=list(np.asarray(zernikes_nm) * 1e-9))
        )
        osys.add_detector(pixelscale=scale_arcsec, fov_pixels=n_fine, oversample=1)
        ox = offset_px[0] * self.camera.pixel_arcsec
        oy = offset_px[1] * self.camera.pixel_arcsec
        if ox or oy:
            # poppy tilts the input wavefront by (-r sin t, r cos t): solve for (r, t)
            osys.source_offset_r = math.hypot(ox, oy)
            osys.source_offset_theta = math.degrees(math.atan2(-ox, oy))
        wf = osys.propagate(osys.input_wavefront(wavelength_nm * 1e-9), normalize="first")
        return np.asarray(wf.intensity, dtype=float)

    def render(
        self,
        zernikes_nm: np.ndarray,
        spectrum: Spectrum,
        offsets_px: np.ndarray | None = None,
        size: int = 32,
    ) -> np.ndarray:
        """See :meth:`PSFEngine.render` (one poppy propagation per state, offset, wavelength)."""
        z, off, squeeze = normalise_request(zernikes_nm, spectrum, offsets_px)
        self.check_sampling(spectrum)
        n_p = self._field_px(size)
        n_fine = n_p * self.oversample
        npix = self.npix_for(spectrum, size)
        c_field = (n_p - 1) // 2
        crop = c_field - size // 2
        out = np.empty((z.shape[0], off.shape[1], size, size))
        start = (self.oversample - 1) // 2
        for b in range(z.shape[0]):
            for k in range(off.shape[1]):
                fine = np.zeros((n_fine, n_fine))
                for li, (lam, w) in enumerate(
                    zip(spectrum.wavelengths_nm, spectrum.weights, strict=True)
                ):
                    if w == 0:
                        continue
                    fine += w * self.fine_image(
                        z[b, li], lam, (off[b, k, 0], off[b, k, 1]), n_fine, npix
                    )
                img = pixel_integrate_fine(fine, self.oversample, self.blur_sigma_px, start)
                out[b, k] = img[crop : crop + size, crop : crop + size]
        return out[:, 0] if squeeze else out
