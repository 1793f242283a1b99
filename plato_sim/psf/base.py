"""The one interface of the PSF engines.

An engine turns Noll wavefront coefficients into **pixel-integrated, flux-normalised stamps**:
``stamp[..., i, j]`` is the fraction of the star's detected photons that land in pixel
``(i, j)`` (rows ``i`` = y, columns ``j`` = x; pixel and sub-pixel conventions of
:mod:`plato_sim.optics.camera`), after charge diffusion and pointing jitter.  Light falling outside
the stamp is lost, so a stamp sums to at most one.  Orientation and the sign of every
aberration follow :mod:`plato_sim.optics.wavefront`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.spectra import Spectrum

__all__ = ["PSFEngine", "normalise_request"]

#: Charge diffusion of the CCD270, Gaussian sigma in pixels (PlatoSim3, docs/facts.md).
DEFAULT_DIFFUSION_SIGMA_PX = 0.2


def normalise_request(
    zernikes_nm: np.ndarray, spectrum: Spectrum, offsets_px: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Check and broadcast a render request.

    Returns ``(zernikes (B, L, J), offsets (B, K, 2), squeeze_k)``.  ``zernikes_nm`` may be
    ``(B, J)`` (achromatic) or ``(B, L, J)``; ``offsets_px`` ``None``, ``(2,)``, ``(B, 2)`` or
    ``(B, K, 2)``.
    """
    z = np.asarray(zernikes_nm, dtype=float)
    if z.ndim == 1:
        z = z[None, :]
    if z.ndim == 2:
        z = np.repeat(z[:, None, :], spectrum.n, axis=1)
    if z.ndim != 3 or z.shape[1] != spectrum.n:
        raise ParameterError(
            f"zernikes_nm must be (B, J) or (B, L={spectrum.n}, J), "
            f"got shape {np.shape(zernikes_nm)}"
        )
    if not np.all(np.isfinite(z)):
        raise ParameterError("zernikes_nm holds NaN or infinite values")
    b = z.shape[0]
    if offsets_px is None:
        off = np.zeros((b, 1, 2))
        squeeze = True
    else:
        off = np.asarray(offsets_px, dtype=float)
        squeeze = off.ndim < 3
        if off.ndim == 1:
            off = np.broadcast_to(off, (b, 2))
        if off.ndim == 2:
            off = off[:, None, :]
        if off.shape[0] == 1 and b > 1:
            off = np.broadcast_to(off, (b,) + off.shape[1:])
        if off.ndim != 3 or off.shape[0] != b or off.shape[2] != 2:
            raise ParameterError(
                f"offsets_px must broadcast to (B={b}, K, 2), got {np.shape(offsets_px)}"
            )
    if np.any(np.abs(off) > 0.5 + 1e-9):
        raise ParameterError("sub-pixel offsets must lie within [-0.5, 0.5] pixel")
    return z, np.ascontiguousarray(off), squeeze


class PSFEngine(ABC):
    """Base class: a PSF engine for one camera, detector diffusion and pointing jitter.

    Args:
        camera: the camera (pupil, focal length, pixel size).
        diffusion_sigma_px: Gaussian charge-diffusion sigma (pixels).
        jitter_sigma_px: Gaussian pointing-jitter sigma per axis (pixels), 0 = none.
    """

    name: str = "base"

    def __init__(
        self,
        camera: Camera = PLATO_NORMAL_CAMERA,
        diffusion_sigma_px: float = DEFAULT_DIFFUSION_SIGMA_PX,
        jitter_sigma_px: float = 0.0,
    ) -> None:
        if diffusion_sigma_px < 0 or jitter_sigma_px < 0:
            raise ParameterError("diffusion and jitter sigmas must be >= 0")
        self.camera = camera
        self.diffusion_sigma_px = float(diffusion_sigma_px)
        self.jitter_sigma_px = float(jitter_sigma_px)

    @property
    def blur_sigma_px(self) -> float:
        """Combined Gaussian sigma of diffusion and jitter (pixels)."""
        return float(np.hypot(self.diffusion_sigma_px, self.jitter_sigma_px))

    @abstractmethod
    def render(
        self,
        zernikes_nm: np.ndarray,
        spectrum: Spectrum,
        offsets_px: np.ndarray | None = None,
        size: int = 32,
    ) -> np.ndarray:
        """Render stamps.

        Args:
            zernikes_nm: Noll coefficients in nm RMS, ``(B, J)`` or ``(B, L, J)`` with ``L``
                the spectrum's wavelengths (index ``j - 1``).
            spectrum: wavelengths and detected-photon weights.
            offsets_px: sub-pixel star offsets ``(dx, dy)`` in pixels, ``(B, 2)`` or
                ``(B, K, 2)`` (``K`` offsets of the same optical state).
            size: stamp side in pixels.

        Returns:
            float64 array ``(B, size, size)`` or ``(B, K, size, size)``.
        """
