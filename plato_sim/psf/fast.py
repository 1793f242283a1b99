"""The fast engine: batched PyTorch, exact pixel-integrated stamps from the low-frequency OTF.

Why it is fast.  Charge diffusion (sigma ~ 0.2 px = 3.6 um) and the 18 um pixel box remove
every spatial frequency above ~0.2 cycles/um, while the optics pass up to 1/(lambda N) ~
1 cycle/um.  A pixel-integrated stamp is therefore fully determined by the polychromatic
optical transfer function (OTF) at ``|f| <= f_max``.  For each wavelength the engine

1. samples the pupil so that the focal-plane field of view is ``L = fov_px`` pixels for every
   wavelength (pupil step ``lambda f / L``): all wavelengths then share one frequency grid
   ``q / L``;
2. computes the complex pupil ``A exp(2 pi i W / lambda)`` (soft-edged aperture),
   its far field by one zero-padded FFT (padding just large enough that the autocorrelation
   does not wrap for lags up to ``f_max L``), the intensity, and the OTF by a second (real)
   FFT, keeping only ``|q| <= K = ceil(f_max L)``;
3. sums the OTFs with the spectrum's weights, multiplies by the pixel box
   (``sinc``), diffusion and jitter (Gaussians) and evaluates the stamp at the pixel centres
   by a small separable DFT: exact at any sub-pixel offset, no interpolation.

One OTF serves any number of sub-pixel offsets (:meth:`FastEngine.stamps_from_otf`).  The
result is the stamp of the ``L``-periodic image: light beyond ``L / 2`` of the star folds back
(``fov_px = 16`` px = 288 um: beyond the geometric blur of |dz| <= 200 um, leaving only
diffraction wings of order 0.1 %), and pixels farther than ``L / 2`` from the star are zero.
Everything is differentiable in torch (the Cramer-Rao bound uses it).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.spectra import Spectrum
from plato_sim.optics.wavefront import zernike_basis
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX, PSFEngine, normalise_request

__all__ = ["FastEngine", "phasor"]

_GOOD = sorted(
    {
        2**a * 3**b * 5**c
        for a in range(12)
        for b in range(6)
        for c in range(4)
        if 2**a * 3**b * 5**c < 4096
    }
)


def _good_size(n: int) -> int:
    for g in _GOOD:
        if g >= n:
            return g
    return n


def phasor(angle: torch.Tensor, amplitude: torch.Tensor | None = None) -> torch.Tensor:
    """``amplitude * exp(i angle)`` (complex, differentiable), by cos and sin apart:
    ``torch.polar`` is ~4x slower on CPU, and in the pupil it was the largest single cost of a
    distinct optical state (docs/forward.md, "Speed")."""
    c, s = torch.cos(angle), torch.sin(angle)
    if amplitude is not None:
        c, s = amplitude * c, amplitude * s
    return torch.complex(c, s)


@lru_cache(maxsize=64)
def _pupil_grid(n: int, step: float, n_terms: int, supersample: int = 5):
    """Soft-edged unit-disk aperture and Zernike basis on an ``n x n`` grid of step ``step``.

    The aperture value is the fraction of each cell inside the disk, which makes the
    sampled autocorrelation converge fast with ``n``.
    """
    c = (np.arange(n) - (n - 1) / 2.0) * step
    ss = (np.arange(supersample) - (supersample - 1) / 2.0) * step / supersample
    xs = (c[:, None] + ss[None, :]).ravel()
    inside = (xs[None, :] ** 2 + xs[:, None] ** 2) <= 1.0
    amp = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    x, y = np.meshgrid(c, c)  # x along columns, y along rows
    basis = zernike_basis(n_terms, x, y) * (amp > 0)
    return amp, basis


class FastEngine(PSFEngine):
    """Batched torch PSF engine (CPU or CUDA).

    Args:
        camera: the camera.
        diffusion_sigma_px: charge-diffusion Gaussian sigma (pixels).
        jitter_sigma_px: pointing-jitter Gaussian sigma per axis (pixels).
        fov_px: period of the computed image in pixels (its field of view).
        mtf_tol: frequencies where the diffusion and jitter transfer falls below this are
            dropped (with no blur, the optical cut-off is used instead).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``torch.float32`` (default, fast) or ``torch.float64``.
        chunk: optical states per FFT batch; a few beat one huge batch on CPU (cache).
    """

    name = "fast"

    def __init__(
        self,
        camera: Camera = PLATO_NORMAL_CAMERA,
        diffusion_sigma_px: float = DEFAULT_DIFFUSION_SIGMA_PX,
        jitter_sigma_px: float = 0.0,
        fov_px: int = 16,
        mtf_tol: float = 1e-4,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        chunk: int = 4,
    ) -> None:
        super().__init__(camera, diffusion_sigma_px, jitter_sigma_px)
        if fov_px < 4:
            raise ParameterError("fov_px must be >= 4")
        self.fov_px = int(fov_px)
        self.mtf_tol = float(mtf_tol)
        self.device = torch.device(device)
        self.dtype = dtype
        self.cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.chunk = int(chunk)
        self._grids: dict = {}

    def replace(self, **changes) -> FastEngine:
        """A new engine with the same settings but ``changes`` (constructor keywords)."""
        kw = dict(
            camera=self.camera,
            diffusion_sigma_px=self.diffusion_sigma_px,
            jitter_sigma_px=self.jitter_sigma_px,
            fov_px=self.fov_px,
            mtf_tol=self.mtf_tol,
            device=self.device,
            dtype=self.dtype,
            chunk=self.chunk,
        )
        kw.update(changes)
        return FastEngine(**kw)

    # ------------------------------------------------------------------ geometry
    @property
    def fov_um(self) -> float:
        """Period of the computed image (um)."""
        return self.fov_px * self.camera.pixel_um

    def f_max_per_um(self, spectrum: Spectrum) -> float:
        """Highest spatial frequency kept (cycles/um)."""
        n_f = self.camera.f_number
        cutoff = 1.0 / (min(spectrum.wavelengths_nm) * 1e-3 * n_f)
        sigma_um = self.blur_sigma_px * self.camera.pixel_um
        if sigma_um <= 0:
            return cutoff
        f = math.sqrt(math.log(1.0 / self.mtf_tol) / (2.0 * math.pi**2 * sigma_um**2))
        return min(f, cutoff)

    def n_freq(self, spectrum: Spectrum) -> int:
        """K: the OTF is kept at integer frequencies ``|q| <= K`` (units 1/L)."""
        return int(math.ceil(self.f_max_per_um(spectrum) * self.fov_um))

    def _grid(self, wavelength_nm: float, n_terms: int, k: int):
        key = (round(wavelength_nm, 6), n_terms, k)
        g = self._grids.get(key)
        if g is None:
            # pupil step in units of the pupil radius: 2 lambda N / L
            step = 2.0 * wavelength_nm * 1e-3 * self.camera.f_number / self.fov_um
            n = 2 * int(math.ceil(1.0 / step))
            m = _good_size(n + k + 1)
            amp, basis = _pupil_grid(n, step, n_terms)
            sel = amp.ravel() > 0
            idx = np.flatnonzero(sel)
            g = dict(
                n=n,
                m=m,
                idx=torch.as_tensor(idx, device=self.device),
                # the same cells in the zero-padded m x m layout: the pupil is written there
                # directly (ifft2's own padding copies the whole array once more)
                idx_m=torch.as_tensor((idx // n) * m + idx % n, device=self.device),
                amp=torch.as_tensor(amp.ravel()[sel], dtype=self.dtype, device=self.device),
                basis=torch.as_tensor(
                    basis.reshape(n_terms, -1)[:, sel], dtype=self.dtype, device=self.device
                ),
            )
            self._grids[key] = g
        return g

    # ------------------------------------------------------------------ OTF
    def otf(
        self,
        zernikes_nm: torch.Tensor | np.ndarray,
        spectrum: Spectrum,
        weights: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Polychromatic OTF at frequencies ``(qy, qx) / L``, ``qy in [-K, K]``, ``qx in [0, K]``.

        Args:
            zernikes_nm: ``(B, L, J)`` Noll coefficients (nm RMS), numpy or torch (autograd
                flows through a torch input).
            spectrum: wavelengths and weights.
            weights: optional ``(B, L)`` weights of each star, each row summing to 1, in
                place of ``spectrum.weights`` (stars of one batch with their own detected
                spectrum at the same wavelengths).

        Returns:
            complex tensor ``(B, 2K+1, K+1)``; row ``K + qy``, column ``qx``; OTF(0) = 1.
            Pixel, diffusion and jitter transfer are *not* included.
        """
        z = torch.as_tensor(zernikes_nm, dtype=self.dtype, device=self.device)
        if z.ndim != 3 or z.shape[1] != spectrum.n:
            raise ParameterError(
                f"zernikes_nm must be (B, L={spectrum.n}, J), got {tuple(z.shape)}"
            )
        b, _, n_terms = z.shape
        k = self.n_freq(spectrum)
        per_star = None
        if weights is not None:
            per_star = torch.as_tensor(np.asarray(weights, dtype=float), dtype=self.dtype)
            if tuple(per_star.shape) != (b, spectrum.n):
                raise ParameterError(f"weights must be (B={b}, L={spectrum.n}), got "
                                     f"{tuple(per_star.shape)}")  # fmt: skip
            sums = per_star.sum(dim=1)
            if bool((per_star < 0).any()) or not torch.allclose(sums, torch.ones_like(sums)):
                raise ParameterError("weights: each row must be >= 0 and sum to 1")
            per_star = per_star.to(self.device)[:, :, None, None]
        total = None
        for li, (lam, w) in enumerate(zip(spectrum.wavelengths_nm, spectrum.weights, strict=True)):
            if per_star is not None:
                w = per_star[:, li]
            g = self._grid(lam, n_terms, k)
            m = g["m"]
            phase = (z[:, li, :] @ g["basis"]) * (2.0 * math.pi / lam)
            vals = phasor(phase, g["amp"])
            pupil = torch.zeros((b, m * m), dtype=self.cdtype, device=self.device)
            pupil = pupil.index_copy_(1, g["idx_m"], vals).reshape(b, m, m)
            field = torch.fft.ifft2(pupil)  # kernel exp(+2 pi i u.x): poppy/GalSim
            inten = field.real**2 + field.imag**2
            # rfft2 (kernel exp(-2 pi i f.x)) pruned to the K+1 columns kept before the second
            # pass: the same numbers, ~1/3 fewer FFTs
            o = torch.fft.fft(torch.fft.rfft(inten, dim=-1)[..., : k + 1], dim=-2)
            o = torch.cat([o[:, m - k :, :], o[:, : k + 1, :]], dim=1)
            o = o / o[:, k : k + 1, 0:1].real
            total = o * w if total is None else total + o * w
        return total

    # ------------------------------------------------------------------ stamps
    def transfer(self, spectrum: Spectrum) -> torch.Tensor:
        """Pixel box x diffusion x jitter transfer on the OTF grid, ``(2K+1, K+1)`` real."""
        k = self.n_freq(spectrum)
        q = torch.arange(-k, k + 1, dtype=self.dtype, device=self.device)
        qx = torch.arange(0, k + 1, dtype=self.dtype, device=self.device)
        fy = q[:, None] / self.fov_um
        fx = qx[None, :] / self.fov_um
        p = self.camera.pixel_um
        sig = self.blur_sigma_px * p
        box = torch.sinc(fy * p) * torch.sinc(fx * p)
        return box * torch.exp(-2.0 * math.pi**2 * sig**2 * (fx**2 + fy**2))

    def extra_blur(self, spectrum: Spectrum, sigma_px: np.ndarray) -> torch.Tensor:
        """Transfer ``(B, 2K+1, K+1)`` that takes this engine's diffusion to ``sigma_px``
        (``(B,)``, each >= :attr:`diffusion_sigma_px`; jitter unchanged): the OTF times it is
        the OTF of an engine with that diffusion, on this engine's (wider) frequency grid."""
        sig = np.asarray(sigma_px, dtype=float).reshape(-1)
        if np.any(sig < self.diffusion_sigma_px - 1e-9):
            raise ParameterError("extra_blur: sigma_px below the engine's diffusion")
        # in float64, so that sigma equal to the engine's gives exactly 1
        var = torch.as_tensor(sig**2 - self.diffusion_sigma_px**2, dtype=self.dtype)
        k = self.n_freq(spectrum)
        q = torch.arange(-k, k + 1, dtype=self.dtype, device=self.device)
        qx = torch.arange(0, k + 1, dtype=self.dtype, device=self.device)
        f2 = (q[:, None] ** 2 + qx[None, :] ** 2) / self.fov_px**2  # cycles per pixel, squared
        return torch.exp(-2.0 * math.pi**2 * var.to(self.device)[:, None, None] * f2)

    def stamps_from_otf(
        self,
        otf: torch.Tensor,
        spectrum: Spectrum,
        offsets_px: torch.Tensor | np.ndarray,
        size: int = 32,
    ) -> torch.Tensor:
        """Stamps for every offset of every optical state.

        Args:
            otf: ``(B, 2K+1, K+1)`` from :meth:`otf`.
            spectrum: the spectrum the OTF was made with.
            offsets_px: ``(B, K_off, 2)`` sub-pixel offsets ``(dx, dy)`` in pixels.
            size: stamp side (pixels).

        Returns:
            real tensor ``(B, K_off, size, size)``.
        """
        k = (otf.shape[1] - 1) // 2
        off = torch.as_tensor(
            np.array(offsets_px) if isinstance(offsets_px, np.ndarray) else offsets_px,
            dtype=self.dtype,
            device=self.device,
        )
        h = otf * self.transfer(spectrum)
        wq = torch.full((k + 1,), 2.0, dtype=self.dtype, device=self.device)
        wq[0] = 1.0
        h = h * wq  # Hermitian half-plane: columns qx > 0 stand for +-qx
        c = size // 2
        pos = torch.arange(size, dtype=self.dtype, device=self.device) - c  # pixel centre - c
        xs = pos[None, None, :] - off[..., 0:1]  # (B, Ko, size): pixel centre - star (px)
        ys = pos[None, None, :] - off[..., 1:2]
        q = torch.arange(-k, k + 1, dtype=self.dtype, device=self.device)
        qx = torch.arange(0, k + 1, dtype=self.dtype, device=self.device)
        two_pi_over = 2.0 * math.pi / self.fov_px
        ey = phasor(ys[..., None] * q * two_pi_over)
        ex = phasor(xs[..., None] * qx * two_pi_over)
        # stamp[b,o,i,j] = Re sum_{qy,qx} ey[b,o,i,qy] h[b,qy,qx] ex[b,o,j,qx]
        tmp = torch.einsum("boiy,byx->boix", ey, h.to(ey.dtype))
        st = torch.einsum("boix,bojx->boij", tmp, ex).real / self.fov_px**2
        half = self.fov_px / 2.0
        inside_x = (xs > -half) & (xs <= half)
        inside_y = (ys > -half) & (ys <= half)
        return st * (inside_y[..., :, None] & inside_x[..., None, :]).to(st.dtype)

    def render(
        self,
        zernikes_nm: np.ndarray,
        spectrum: Spectrum,
        offsets_px: np.ndarray | None = None,
        size: int = 32,
    ) -> np.ndarray:
        """See :meth:`PSFEngine.render`; batches of ``chunk`` optical states at a time."""
        z, off, squeeze = normalise_request(zernikes_nm, spectrum, offsets_px)
        out = np.empty((z.shape[0], off.shape[1], size, size))
        with torch.no_grad():
            for s in range(0, z.shape[0], self.chunk):
                e = slice(s, s + self.chunk)
                o = self.otf(z[e], spectrum)
                out[e] = self.stamps_from_otf(o, spectrum, off[e], size).cpu().numpy()
        return out[:, 0] if squeeze else out
