"""Cramér–Rao bounds: how well a focal shift, and a camera's T_BF, can be measured at all.

Single stamp
------------
The expected background-subtracted stamp of one frame (electrons, the campaign reader's
geometry: :func:`plato_sim.stamps.extract_stamp`, ``size x size`` pixels, the star within half
a pixel of the centre pixel ``size // 2``) is::

    mu_k(theta) = flux_e * psf_k(dz, dx, dy, a_5 .. a_11, c) + background_e

with ``psf`` the fast engine's pixel-integrated, flux-normalised stamp
(:class:`plato_sim.psf.fast.FastEngine`, OGSE spectrum) of the camera's optical model at
thermal focal shift ``dz_th + dz`` (um), sub-pixel offset ``(dx, dy)`` (px), Noll
perturbations ``a_j`` (nm RMS) added to the camera's own wavefront and a change ``c`` of its
chromatic-shift scale (:data:`CHROM_SCALE`): the terms a
:class:`plato_sim.optics.wavefront.CameraPerturbation` perturbs (its focal tilt and curvature scale
only move each field's focus, which the campaign bound leaves free anyway).
``background_e`` is the diffuse light left after the closed-shutter frame is subtracted
(e-/px).  The parameters are ``dz_um``, :data:`FRAME_NUISANCES` (``flux_e``,
``background_e``, ``dx_px``, ``dy_px``), ``z5_nm .. z11_nm`` and ``chrom_scale``; every one of
them is unknown unless a caller says otherwise.

The Jacobian ``d mu / d theta`` is exact, by torch forward-mode autograd
(:func:`torch.func.jacfwd` / :func:`torch.func.jvp`) through ``FastEngine.otf`` (the wavefront
parameters) and ``FastEngine.stamps_from_otf`` (the offsets); flux and background enter
linearly.  No change to the engine is needed: both accept torch tensors and are differentiable.

Noise (:class:`PixelNoise`, from :class:`plato_sim.detector.DetectorModel`): independent pixels,
Gaussian approximation of Poisson + read noise, in electrons::

    var_k = max(mu_k, 0) + dark_e + read_e^2 + gain^2/12
            + (dark_e + read_e^2 + gain^2/12) / n_background_frames

(Poisson of signal, background and dark; read noise of CCD and electronics in quadrature;
ADU rounding ``gain^2/12`` with gain in e-/ADU; the noise of the closed-shutter mean the reader
subtracts.)  Stamps are in electrons = ADU x gain; the Fisher information does not depend on
that choice of unit.  The Fisher matrix is ``J^T diag(1/var) J``: the term from the
dependence of ``var`` on ``theta`` is left out on purpose, since for Poisson data ``J^T
diag(1/mu) J`` is the exact Fisher information and adding it would overcount.  Neglected:
PRNU (1 %, multiplicative), cosmic rays, saturation (flagged by :attr:`StampFisher.max_e`),
the correlation between frames that share a background frame.  Pixels of zero variance (only
without read noise, where nothing is expected) are left out.

The bound on ``dz`` is ``sqrt((F^-1)_{dz,dz})`` with ``F`` the Fisher matrix over the chosen
parameters: nuisances are marginalised, which can only raise the bound.

Campaign
--------
For a campaign design (:class:`plato_sim.scenes.design.CampaignDesign`, the emulator's: plateaux,
field positions, dithers, frames, flux, detector; its defaults written once there) every frame's
information on its focal shift feeds the thermal model of :mod:`plato_cnn.fit`::

    dz_frame = s (T_plateau - T_f,i)        (s common and unknown, T_f,i per field position)

and ``T_BF`` (docs/facts.md: argmax of the field-averaged expected EEF) is linearised around
the camera's truth by the implicit-function theorem on ``sum_i g_i'(s (T - T_f,i)) = 0``::

    dT_BF/dT_f,j = c_j / sum_i c_i,     dT_BF/ds = -sum_i c_i (T_BF - T_f,i) / (s sum_i c_i)

with ``c_i = -g_i''`` the curvature (per um^2) of field ``i``'s expected-EEF curve at the
camera's best focus (:mod:`plato_sim.truth.bestfocus`).
``sigma(T_BF)^2 = grad^T F_(s,T_f)^-1 grad``.

Which nuisances are shared is a modelling choice (``aberrations=``):

* ``"per_field"`` (default): flux, background and offset are per frame; the aberration
  nuisances (Z5-Z11, chromatic scale) are per field position, the same on every plateau and
  dither (a camera's aberration at one field point does not change with a few degC).  This is
  the bound of an estimator that knows the optical design up to free Z5-Z11 and chromatic
  scale at each field position (a superset of the emulator's camera perturbations).  An
  aberration also moves the field's EEF-optimal focus ``D*_i``: with ``T_f,i`` as parameter
  the frame's focus is ``dz = s (T_p - T_f,i) + D*_i(a_i)``, and ``dD*_i/da`` (from the
  expected EEF, :attr:`CampaignInformation.optimum_sensitivity`) enters the Jacobian: what the
  images leave unknown of the aberrations is unknown of the optimum.
* ``"per_frame"``: every frame marginalises its own aberration nuisances, as the requirement's
  first formulation has it; aberrations are then not a property of the field, so their effect
  on the field's optimum is left out (this mode is not an upper bound on ``per_field``).
* ``"known"``: the camera's aberrations are known exactly (tighter).

One plateau, beyond the bound
-----------------------------
Whatever the images give, one plateau cannot give ``s``: an estimator that measured the focal
shift between the plateau and best focus exactly still converts it with a prior ``s``.
:func:`one_plateau_floor_degC` is that estimator's error for a known camera: a floor under
every one-plateau method that does not know ``s`` (the CNN, the forward fit, any other).

With a single plateau ``s`` cannot be separated from the ``T_f,i`` (the Fisher matrix is
singular): the prior on ``s`` (:data:`plato_sim.optics.thermal.S_PRIOR_UM_PER_DEGC`,
docs/facts.md) is then used and the bound is reported as prior-dominated.  An estimator whose
RMS error is *below* the bound (ratio < 1) leans on information the bound does not grant: a
prior (on ``s``, on the camera population's aberrations or on T_BF itself).

The bound is local (Fisher information at the true parameters): it does not see the sign
ambiguity of defocus near focus, nor the error of the EEF-curve shape (template) an estimator
assumes; TRP1 read-out noise is neglected (~0.015 degC per sample, averaged over a plateau).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.func import jacfwd, jvp

from plato_sim.detector import DetectorModel
from plato_sim.errors import ParameterError
from plato_sim.names import deprecated_alias
from plato_sim.optics.model import CameraModel, OpticalModel
from plato_sim.optics.spectra import Spectrum, ogse_spectrum
from plato_sim.optics.thermal import S_PRIOR_UM_PER_DEGC, ThermalModel
from plato_sim.optics.wavefront import N_ZERNIKE, CameraPerturbation, FieldAberrations, dz_to_z4_nm
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.design import (
    BOUND_STAMP_PX,
    DEFAULT_FLUX_E,
    DEFAULT_PLATEAUX_DEGC,
    CampaignDesign,
    CampaignTiming,
)
from plato_sim.truth.bestfocus import (
    TRUTH_N_SUB,
    best_focus_shift_um,
    expected_eef,
    field_best_focus_um,
)

__all__ = [
    "NUISANCE_ZERNIKES_NOLL",
    "CHROM_SCALE",
    "FRAME_NUISANCES",
    "PixelNoise",
    "design_noise",
    "StampFisher",
    "stamp_fisher",
    "crb_from_fisher",
    "marginal_information",
    "crb_dz_um",
    "CampaignDesign",
    "CampaignInformation",
    "TBFBound",
    "campaign_information",
    "tbf_bound",
    "tbf_bound_degC",
    "camera_from_truth",
    "one_plateau_floor_degC",
]

#: Camera-perturbation nuisances, Noll indices: astigmatism Z5/Z6, coma Z7/Z8, trefoil Z9/Z10,
#: spherical Z11 (every term :class:`plato_sim.optics.wavefront.CameraPerturbation` perturbs).
NUISANCE_ZERNIKES_NOLL = (5, 6, 7, 8, 9, 10, 11)
#: The chromatic-focal-shift nuisance: a multiplier of the design's chromatic shift
#: (``CameraPerturbation.chrom_scale``; derivative per unit of that scale).
CHROM_SCALE = "chrom_scale"
#: Parameters every frame has of its own (flux e-, background e-/px, sub-pixel offset px).
FRAME_NUISANCES = ("flux_e", "background_e", "dx_px", "dy_px")
#: Reader's stamp side (pixels): :func:`plato_cnn.reader.read_campaign` default.
STAMP_PX = BOUND_STAMP_PX
_ABERRATION_MODES = ("per_field", "per_frame", "known")


def _params(zernikes: Sequence[int], chromatic: bool) -> tuple[str, ...]:
    extra = (CHROM_SCALE,) if chromatic else ()
    return ("dz_um",) + FRAME_NUISANCES + tuple(f"z{j}_nm" for j in zernikes) + extra


# ---------------------------------------------------------------------------------- noise
@dataclass(frozen=True)
class PixelNoise:
    """Per-pixel noise of a background-subtracted stamp, in electrons.

    Attributes:
        read_noise_e: total read noise per read (e- RMS; CCD and electronics in quadrature).
        gain_e_per_adu: conversion gain (e-/ADU); rounding to ADU adds ``gain^2 / 12`` e-^2.
        dark_e: dark charge per pixel and frame (e-).
        n_background_frames: closed-shutter frames averaged into the subtracted background;
            ``None`` treats the background frame as noise-free.
        quantisation: include the ADU rounding variance.
    """

    read_noise_e: float
    gain_e_per_adu: float
    dark_e: float = 0.0
    n_background_frames: int | None = 2
    quantisation: bool = True

    def __post_init__(self) -> None:
        if self.read_noise_e < 0 or self.gain_e_per_adu <= 0 or self.dark_e < 0:
            raise ParameterError(f"PixelNoise: invalid values {self}")
        if self.n_background_frames is not None and self.n_background_frames < 1:
            raise ParameterError("PixelNoise: n_background_frames must be >= 1 or None")

    @classmethod
    def from_detector(
        cls,
        detector: DetectorModel | None = None,
        exptime_s: float = CampaignTiming.exptime_s,
        n_background_frames: int | None = 2,
        quantisation: bool = True,
    ) -> PixelNoise:
        """The noise of :class:`~plato_sim.detector.DetectorModel` frames of ``exptime_s``."""
        d = detector or DetectorModel()
        return cls(
            read_noise_e=d.read_noise_e,
            gain_e_per_adu=d.gain_e_per_adu,
            dark_e=d.dark_e_per_s * exptime_s,
            n_background_frames=n_background_frames,
            quantisation=quantisation,
        )

    @property
    def floor_e2(self) -> float:
        """Signal-independent variance per pixel (e-^2)."""
        per_read = self.read_noise_e**2 + (
            self.gain_e_per_adu**2 / 12.0 if self.quantisation else 0.0
        )
        bg = 0.0
        if self.n_background_frames is not None:
            bg = (self.dark_e + per_read) / self.n_background_frames
        return self.dark_e + per_read + bg

    def variance_e2(self, mean_e: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Variance (e-^2) of pixels whose expected background-subtracted value is ``mean_e``."""
        if isinstance(mean_e, torch.Tensor):
            return mean_e.clamp(min=0.0) + self.floor_e2
        return np.maximum(mean_e, 0.0) + self.floor_e2


def design_noise(design: CampaignDesign) -> PixelNoise:
    """Pixel noise of a campaign design's frames (its detector, exposure, background frames)."""
    return PixelNoise.from_detector(design.detector, design.exptime_s, design.n_background_frames)


# ---------------------------------------------------------------------------------- linear algebra
def _scaled(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(np.clip(np.diagonal(m, axis1=-2, axis2=-1), 0.0, None))
    d = np.where(d > 0, d, 1.0)
    return m / (d[..., :, None] * d[..., None, :]), d


def _inv_psd(m: np.ndarray) -> np.ndarray:
    """Inverse of one symmetric positive definite matrix, diagonally scaled first.

    A singular matrix (a direction without information) gives a matrix of ``inf``.
    """
    s, d = _scaled(np.asarray(m, dtype=float))
    w, v = np.linalg.eigh(s)
    if not w[0] > 1e-12 * w[-1]:
        return np.full_like(s, np.inf)
    return (v / w) @ v.T / np.outer(d, d)


def _index(params: Sequence[str], names: Sequence[str]) -> list[int]:
    missing = [n for n in names if n not in params]
    if missing:
        raise ParameterError(f"unknown parameter(s) {missing}; known: {list(params)}")
    return [list(params).index(n) for n in names]


def marginal_information(
    fisher: np.ndarray, params: Sequence[str], keep: Sequence[str], nuisances: Sequence[str]
) -> np.ndarray:
    """Information on ``keep`` once ``nuisances`` are unknown (Schur complement).

    Args:
        fisher: ``(..., P, P)`` Fisher matrices over ``params``.
        params: names of the ``P`` parameters.
        keep: parameters of interest (their order is the output's).
        nuisances: unknown parameters marginalised; parameters in neither list are known.

    Returns:
        ``(..., len(keep), len(keep))``.
    """
    k = _index(params, keep)
    n = _index(params, nuisances)
    f = np.asarray(fisher, dtype=float)
    a = f[..., k, :][..., :, k]
    if not n:
        return a
    b = f[..., k, :][..., :, n]
    c = f[..., n, :][..., :, n]
    # pseudo-inverse: a nuisance without information, or two with the same effect, is harmless
    cs, d = _scaled(c)
    x = np.linalg.pinv(cs, rcond=1e-12, hermitian=True) @ (np.swapaxes(b, -1, -2) / d[..., :, None])
    out = a - b @ (x / d[..., :, None])
    return 0.5 * (out + np.swapaxes(out, -1, -2))


def crb_from_fisher(
    fisher: np.ndarray,
    params: Sequence[str],
    target: str = "dz_um",
    nuisances: Sequence[str] | None = None,
) -> np.ndarray:
    """Cramér–Rao bound (1 sigma, units of ``target``) from Fisher matrices ``(..., P, P)``.

    ``nuisances``: the other unknown parameters (default every parameter but ``target``);
    parameters not listed are treated as known.  Returns an array of the leading shape.
    """
    if nuisances is None:
        nuisances = [p for p in params if p != target]
    if target in nuisances:
        raise ParameterError(f"{target!r} cannot be its own nuisance")
    info = marginal_information(fisher, params, [target], list(nuisances))[..., 0, 0]
    with np.errstate(divide="ignore"):
        return np.where(info > 0, 1.0 / np.sqrt(np.where(info > 0, info, 1.0)), np.inf)


# ---------------------------------------------------------------------------------- one stamp
@dataclass(frozen=True)
class StampFisher:
    """Fisher information of single frames.

    Attributes:
        params: parameter names, :data:`PARAMS`-like (units in the names).
        fisher: ``(B, D, P, P)``: optical state ``b``, sub-pixel offset ``d``.
        expected_e: ``(B, D, size, size)`` expected background-subtracted stamps (e-).
        jacobian: ``(B, D, size, size, P)`` d expected / d parameter, if kept.
    """

    params: tuple[str, ...]
    fisher: np.ndarray
    expected_e: np.ndarray
    jacobian: np.ndarray | None = None

    @property
    def max_e(self) -> np.ndarray:
        """Brightest expected pixel of each frame (e-): compare with the saturation level."""
        return self.expected_e.max(axis=(-2, -1))

    def crb(self, target: str = "dz_um", nuisances: Sequence[str] | None = None) -> np.ndarray:
        """1-sigma bound on ``target`` per frame ``(B, D)``; see :func:`crb_from_fisher`."""
        return crb_from_fisher(self.fisher, self.params, target, nuisances)


def _default_engine(optics: OpticalModel) -> FastEngine:
    return FastEngine(camera=optics.camera, dtype=torch.float64)


def _wavefront_basis(
    optics: OpticalModel, spectrum: Spectrum, zernikes: Sequence[int], chromatic: bool
) -> np.ndarray:
    """``(P_w, L, J)``: d Noll coefficients (nm) / d each wavefront parameter, per wavelength.

    Rows: focal shift (per um, Z4 at every wavelength), each Noll term of ``zernikes`` (per
    nm), and with ``chromatic`` the chromatic-shift scale (Z4 of the design's chromatic shift).
    """
    n_j = N_ZERNIKE
    if any(j - 1 >= n_j for j in zernikes):
        raise ParameterError(f"Noll index beyond the wavefront's {n_j} terms: {list(zernikes)}")
    n_l = spectrum.n
    rows = [np.zeros((n_l, n_j))]
    rows[0][:, 3] = dz_to_z4_nm(1.0, optics.camera.f_number)
    for j in zernikes:
        r = np.zeros((n_l, n_j))
        r[:, j - 1] = 1.0
        rows.append(r)
    if chromatic:
        r = np.zeros((n_l, n_j))
        chrom_um = optics.design.chromatic_shift_um(spectrum.wavelengths_array_nm)
        r[:, 3] = dz_to_z4_nm(chrom_um, optics.camera.f_number)
        rows.append(r)
    return np.stack(rows)


def _otf_and_derivatives(
    engine: FastEngine, z0: np.ndarray, spectrum: Spectrum, basis: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """OTF ``(B, 2K+1, K+1)`` and its derivatives ``(B, P_w, 2K+1, K+1)`` along each row of
    ``basis`` (:func:`_wavefront_basis`): forward-mode autograd through ``engine.otf``."""
    zt = torch.as_tensor(z0, dtype=engine.dtype, device=engine.device)
    bt = torch.as_tensor(basis, dtype=engine.dtype, device=engine.device)

    def otf_of(a: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(engine.otf(zt + torch.einsum("p,plj->lj", a, bt), spectrum))

    a0 = torch.zeros(basis.shape[0], dtype=engine.dtype, device=engine.device)
    with torch.no_grad():
        jac = jacfwd(otf_of)(a0)  # (B, 2K+1, K+1, 2, P_w)
        otf = engine.otf(zt, spectrum)
    d = torch.view_as_complex(jac.movedim(-1, 1).contiguous())  # (B, P_w, 2K+1, K+1)
    return otf, d


def _offset_derivative(
    engine: FastEngine, otf: torch.Tensor, spectrum: Spectrum, offs: torch.Tensor, size: int,
    axis: int,
) -> torch.Tensor:  # fmt: skip
    """d stamp / d offset along ``axis`` (0: dx, 1: dy) per pixel: forward-mode autograd."""
    tan = torch.zeros_like(offs)
    tan[..., axis] = 1.0
    return jvp(lambda o: engine.stamps_from_otf(otf, spectrum, o, size), (offs,), (tan,))[1]


# Long because: half of it is the docstring (every argument's shape and unit); the body is one
# pass (OTFs, Jacobian columns per nuisance, Fisher sums) over shared batched tensors.
def stamp_fisher(
    optics: OpticalModel,
    theta_deg: float | np.ndarray,
    phi_deg: float | np.ndarray,
    dz_th_um: float | np.ndarray,
    offsets_px: np.ndarray | Sequence[float] = (0.0, 0.0),
    flux_e: float | np.ndarray = DEFAULT_FLUX_E,
    background_e: float = 0.0,
    noise: PixelNoise | None = None,
    spectrum: Spectrum | None = None,
    engine: FastEngine | None = None,
    size: int = STAMP_PX,
    zernikes: Sequence[int] = NUISANCE_ZERNIKES_NOLL,
    chromatic: bool = True,
    keep_jacobian: bool = False,
) -> StampFisher:
    """Fisher matrices of single frames of one camera.

    Args:
        optics: the camera's optical model (its perturbation included).
        theta_deg, phi_deg: field positions (deg), broadcast with ``dz_th_um`` to ``B`` states.
        dz_th_um: thermal focal shift (um, > 0 behind focus); the derivative ``dz_um`` is
            with respect to a focal shift added to it (a piston, the same at every field).
        offsets_px: sub-pixel offsets ``(dx, dy)`` in [-0.5, 0.5] px: ``(2,)``, ``(D, 2)``
            (the same for every state) or ``(B, D, 2)``.
        flux_e: detected electrons of the star per frame: scalar or ``(B, D)``.
        background_e: diffuse background left after background subtraction (e-/px).
        noise: pixel noise (default :meth:`PixelNoise.from_detector` of the nominal CCD270,
            0.1 s frames, 2 closed-shutter frames).
        spectrum: default the OGSE spectrum, 10 wavelengths.
        engine: fast engine (default float64 on CPU, 16-px period: the campaign emulator's).
        size: stamp side (pixels), star at pixel ``size // 2`` plus the offset.
        zernikes: Noll indices of the wavefront nuisances (nm RMS).
        chromatic: add the chromatic-shift scale nuisance :data:`CHROM_SCALE`.
        keep_jacobian: also return the Jacobian ``(B, D, size, size, P)``.

    Returns:
        :class:`StampFisher` over ``("dz_um", "flux_e", "background_e", "dx_px", "dy_px",
        "z5_nm", ..., "chrom_scale")``.
    """
    eng = engine or _default_engine(optics)
    sp = spectrum or ogse_spectrum(optics.camera)
    noise = noise or PixelNoise.from_detector()
    t, p, dz = np.broadcast_arrays(
        np.atleast_1d(np.asarray(theta_deg, float)),
        np.atleast_1d(np.asarray(phi_deg, float)),
        np.atleast_1d(np.asarray(dz_th_um, float)),
    )
    n_b = t.size
    off = np.asarray(offsets_px, dtype=float)
    if off.ndim == 1:
        off = off[None, :]
    if off.ndim == 2:
        off = np.array(np.broadcast_to(off, (n_b,) + off.shape))
    if off.ndim != 3 or off.shape[0] != n_b or off.shape[2] != 2:
        raise ParameterError(f"offsets_px must be (2,), (D, 2) or (B={n_b}, D, 2), got {off.shape}")
    if np.any(np.abs(off) > 0.5 + 1e-9):
        raise ParameterError("sub-pixel offsets must lie within [-0.5, 0.5] pixel")
    n_d = off.shape[1]
    flux = np.array(np.broadcast_to(np.asarray(flux_e, dtype=float), (n_b, n_d)))
    if np.any(flux <= 0) or not np.all(np.isfinite(flux)):
        raise ParameterError("flux_e must be finite and > 0")
    if background_e < 0:
        raise ParameterError("background_e must be >= 0")
    zernikes = tuple(int(j) for j in zernikes)
    if any(j in (1, 2, 3, 4) for j in zernikes):
        raise ParameterError(
            "Zernike nuisances exclude Z1-Z4 (piston, tilt = offset, defocus = dz)"
        )
    params = _params(zernikes, chromatic)
    basis = _wavefront_basis(optics, sp, zernikes, chromatic)
    z_all = optics.zernikes_nm(t, p, dz, sp.wavelengths_array_nm)

    fishers, expected, jacs = [], [], []
    for s0 in range(0, n_b, eng.chunk):
        sl = slice(s0, s0 + eng.chunk)
        otf, d_otf = _otf_and_derivatives(eng, z_all[sl], sp, basis)
        nb, nz = d_otf.shape[0], d_otf.shape[1]
        offs = torch.as_tensor(np.ascontiguousarray(off[sl]), dtype=eng.dtype, device=eng.device)
        with torch.no_grad():
            # the stamp is linear in the OTF: derivatives of the stamp = stamps of derivatives
            h = torch.cat([otf[:, None], d_otf], dim=1).reshape((-1,) + otf.shape[1:])
            st = eng.stamps_from_otf(h, sp, offs.repeat_interleave(1 + nz, dim=0), size)
            st = st.reshape(nb, 1 + nz, n_d, size, size)
            psf, d_wave = st[:, 0], st[:, 1:].movedim(1, -1)  # (b, D, S, S), (b, D, S, S, Z+1)
            d_off = [_offset_derivative(eng, otf, sp, offs, size, axis) for axis in range(2)]
        f = torch.as_tensor(flux[sl], dtype=eng.dtype, device=eng.device)[..., None, None]
        mu = f * psf + background_e
        cols = [f * d_wave[..., 0], psf, torch.ones_like(psf), f * d_off[0], f * d_off[1]]
        cols += [f * d_wave[..., k] for k in range(1, nz)]
        jac = torch.stack(cols, dim=-1)  # (b, D, S, S, P)
        var = noise.variance_e2(mu)
        w = torch.where(var > 0, 1.0 / torch.where(var > 0, var, 1.0), 0.0)  # 0: no noise model
        fis = torch.einsum("bdijp,bdij,bdijq->bdpq", jac, w, jac)
        fishers.append(fis.cpu().numpy())
        expected.append(mu.cpu().numpy())
        if keep_jacobian:
            jacs.append(jac.cpu().numpy())
    return StampFisher(
        params=params,
        fisher=np.concatenate(fishers),
        expected_e=np.concatenate(expected),
        jacobian=np.concatenate(jacs) if keep_jacobian else None,
    )


def crb_dz_um(*args, nuisances: Sequence[str] | None = None, **kwargs) -> np.ndarray:
    """Cramér–Rao bound on the focal shift of single frames (um, 1 sigma), ``(B, D)``.

    Positional and keyword arguments are those of :func:`stamp_fisher` (optics, field
    position, thermal focal shift, offsets, flux, ...).  ``nuisances`` (default: all of flux,
    background, offset and the Zernike perturbations) are marginalised.
    """
    return stamp_fisher(*args, **kwargs).crb("dz_um", nuisances)


# ---------------------------------------------------------------------------------- campaign
def camera_from_truth(truth: dict) -> CameraModel:
    """The :class:`~plato_sim.optics.model.CameraModel` of an emulated campaign's truth sidecar."""
    from plato_sim.optics.camera import PLATO_NORMAL_CAMERA

    family = truth.get("family", "design")
    if family != "design":
        raise ParameterError(
            f"truth family={family!r}: the bound is available for the design family only "
            "(its nuisances are CameraPerturbation's terms)"
        )
    th = truth["thermal"]
    return CameraModel(
        OpticalModel(
            PLATO_NORMAL_CAMERA,
            FieldAberrations(**truth["design"]),
            CameraPerturbation.from_dict(truth["perturbation"]),
        ),
        ThermalModel(th["s_um_per_degC"], th["t0_degC"], th.get("q_um_per_degC2", 0.0)),
    )


@dataclass(frozen=True)
class TBFBound:
    """Cramér–Rao bound on a camera's best-focus temperature for one campaign design.

    Attributes:
        sigma_tbf_degC: 1-sigma bound on T_BF (degC), ``s`` unknown (prior if used).
        sigma_tbf_s_known_degC: the bound if ``s`` were known exactly.
        sigma_s_um_per_degC: bound on ``s`` (um/degC).
        sigma_t_field_degC: ``(F,)`` bounds on each field's optimal temperature.
        n_plateaux, n_dithers, frames_per_dither: the design used.
        aberrations: nuisance model (``per_field``, ``per_frame``, ``known``).
        prior_used: whether the prior on ``s`` entered.
        prior_dominated: the prior carries more information on ``s`` than the data.
        s_information_data: information on ``s`` from the frames (1/(um/degC)^2).
        s_information_prior: from the prior (0 if unused).
    """

    sigma_tbf_degC: float
    sigma_tbf_s_known_degC: float
    sigma_s_um_per_degC: float
    sigma_t_field_degC: np.ndarray
    n_plateaux: int
    n_dithers: int
    frames_per_dither: int
    aberrations: str
    prior_used: bool
    prior_dominated: bool
    s_information_data: float
    s_information_prior: float

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = dict(self.__dict__)
        d["sigma_t_field_degC"] = [float(v) for v in self.sigma_t_field_degC]
        return d


@dataclass(frozen=True)
class CampaignInformation:
    """Per-frame Fisher information of a campaign, and the camera's truth for the T_BF map.

    Attributes:
        design: the campaign design.
        params: Fisher parameter names.
        fisher: ``(F, P_l, D, P, P)`` one frame's Fisher matrix per field, plateau, dither.
        s_um_per_degC: the camera's thermal sensitivity.
        t_field_degC: ``(F,)`` true per-field EEF-optimal temperatures.
        bft_degC: the camera's true best-focus temperature (field-averaged EEF;
            ``t_bf_degC``: deprecated alias).
        eef_curvature_per_um2: ``(F,)`` ``-d^2 EEF_i / d dz^2`` at the camera's best focus.
        optimum_sensitivity: ``(F, A)`` shift of each field's EEF-optimal focus (um) per unit
            of each aberration nuisance (the parameters after ``dz_um`` and
            :data:`FRAME_NUISANCES`, in order).
        max_e: ``(F, P_l, D)`` brightest expected pixel of each frame (e-).
    """

    design: CampaignDesign
    params: tuple[str, ...]
    fisher: np.ndarray
    s_um_per_degC: float
    t_field_degC: np.ndarray
    bft_degC: float
    eef_curvature_per_um2: np.ndarray
    optimum_sensitivity: np.ndarray
    max_e: np.ndarray

    t_bf_degC = deprecated_alias("bft_degC", "t_bf_degC")

    @property
    def tbf_gradient(self) -> tuple[float, np.ndarray]:
        """``(dT_BF/ds, dT_BF/dT_f,i)``: the linearised map from the thermal model to T_BF."""
        c = self.eef_curvature_per_um2
        tot = float(c.sum())
        if not tot > 0:
            raise ParameterError("field-averaged EEF curve not concave at best focus")
        d_s = -float(np.sum(c * (self.bft_degC - self.t_field_degC))) / (self.s_um_per_degC * tot)
        return d_s, c / tot

    # Long because: it selects the design subset, assembles the per-field information in the
    # chosen aberration mode and marginalises in one place, as the module docstring describes.
    def bound(
        self,
        plateaux_degC: Sequence[float] | None = None,
        n_dithers: int | None = None,
        frames_per_dither: int | None = None,
        aberrations: str = "per_field",
        s_prior: tuple[float, float] = S_PRIOR_UM_PER_DEGC,
        use_s_prior: bool | None = None,
    ) -> TBFBound:
        """The T_BF bound for a subset of the computed design.

        Args:
            plateaux_degC: a subset of the design's plateaux (each matched to the nearest
                computed one within 0.5 degC); default all.
            n_dithers: the first ``n`` dithers (default all computed).
            frames_per_dither: frames per dither (default the design's).
            aberrations: ``"per_field"``, ``"per_frame"`` or ``"known"`` (module docstring).
            s_prior: (mean, sigma) of the prior on ``s`` (um/degC); only sigma matters.
            use_s_prior: default only where needed (one plateau).
        """
        if aberrations not in _ABERRATION_MODES:
            raise ParameterError(
                f"aberrations must be one of {_ABERRATION_MODES}, got {aberrations!r}"
            )
        design = self.design
        all_t = np.asarray(design.plateaux_degC, dtype=float)
        want = all_t if plateaux_degC is None else np.asarray(plateaux_degC, dtype=float)
        if want.size == 0:
            raise ParameterError("at least one plateau")
        idx = [int(np.argmin(np.abs(all_t - t))) for t in want]
        if any(abs(all_t[i] - t) > 0.5 for i, t in zip(idx, want, strict=True)):
            raise ParameterError(
                f"plateaux {list(want)} not all in the computed design {list(all_t)}"
            )
        if len(set(idx)) != len(idx):
            raise ParameterError(f"plateaux {list(want)}: repeated")
        n_d = self.fisher.shape[2] if n_dithers is None else int(n_dithers)
        if not 1 <= n_d <= self.fisher.shape[2]:
            raise ParameterError(
                f"n_dithers must be in [1, {self.fisher.shape[2]}], got {n_dithers}"
            )
        fpd = design.frames_per_dither if frames_per_dither is None else int(frames_per_dither)
        if fpd < 1:
            raise ParameterError("frames_per_dither >= 1")
        zern = [p for p in self.params if p != "dz_um" and p not in FRAME_NUISANCES]
        if aberrations == "per_field":
            keep, nuis = ["dz_um"] + zern, list(FRAME_NUISANCES)
        elif aberrations == "per_frame":
            keep, nuis = ["dz_um"], list(FRAME_NUISANCES) + zern
        else:
            keep, nuis = ["dz_um"], list(FRAME_NUISANCES)
        info = marginal_information(self.fisher[:, idx, :n_d], self.params, keep, nuis)
        info = fpd * info.sum(axis=2)  # (F, P_sel, K, K): frames of a plateau pooled
        s = self.s_um_per_degC
        t_f = self.t_field_degC
        n_f, n_k = info.shape[0], len(keep)
        # (s, T_f,i, aberrations_i) per field -> (dz, aberrations) of each plateau:
        # dz = s (T_p - T_f,i) + D*_i(aberrations_i), D*_i the field's EEF-optimal focus (an
        # aberration that moves the optimum moves T_f,i at a fixed image: that is its cost)
        a = np.zeros((n_f, len(idx), n_k, n_k + 1))
        a[:, :, 0, 0] = all_t[idx][None, :] - t_f[:, None]
        a[:, :, 0, 1] = -s
        if aberrations == "per_field":
            a[:, :, 0, 2:] = self.optimum_sensitivity[:, None, :]
        for k in range(1, n_k):
            a[:, :, k, k + 1] = 1.0
        m = np.einsum("fpki,fpkl,fplj->fij", a, info, a)
        names = ["s", "t"] + keep[1:]
        m2 = marginal_information(m, names, ["s", "t"], keep[1:])  # (F, 2, 2)
        g = np.zeros((n_f + 1, n_f + 1))
        g[0, 0] = m2[:, 0, 0].sum()
        g[0, 1:] = g[1:, 0] = m2[:, 0, 1]
        g[np.arange(1, n_f + 1), np.arange(1, n_f + 1)] = m2[:, 1, 1]
        data_s = float(g[0, 0] - np.sum(m2[:, 0, 1] ** 2 / m2[:, 1, 1]))
        data_s = max(data_s, 0.0)
        use = (len(idx) < 2) if use_s_prior is None else bool(use_s_prior)
        prior_s = 1.0 / s_prior[1] ** 2 if use else 0.0
        g[0, 0] += prior_s
        cov = _inv_psd(g)  # all inf when s is not identifiable (one plateau, no prior)
        d_s, w = self.tbf_gradient
        grad = np.concatenate([[d_s], w])
        var = float(grad @ cov @ grad) if np.all(np.isfinite(cov)) else np.inf
        var_known = float(np.sum(w**2 / m2[:, 1, 1]))
        return TBFBound(
            sigma_tbf_degC=float(np.sqrt(var)),
            sigma_tbf_s_known_degC=float(np.sqrt(var_known)),
            sigma_s_um_per_degC=float(np.sqrt(cov[0, 0])),
            sigma_t_field_degC=np.sqrt(np.diagonal(cov)[1:]),
            n_plateaux=len(idx),
            n_dithers=n_d,
            frames_per_dither=fpd,
            aberrations=aberrations,
            prior_used=use,
            prior_dominated=bool(prior_s > data_s),
            s_information_data=data_s,
            s_information_prior=prior_s,
        )


def _eef_curvature_per_um2(
    optics: OpticalModel,
    theta: np.ndarray,
    phi: np.ndarray,
    dz_um: float,
    spectrum: Spectrum,
    engine: FastEngine | None,
    n_sub: int,
    step_um: float,
) -> np.ndarray:
    """``-d^2 EEF / d dz^2`` per field at ``dz_um``: least-squares parabola over 5 points.

    A fit over +-2 steps rather than a 3-point difference: the expected EEF is only piecewise
    smooth (its best 2x2 box jumps), which a single second difference would amplify.
    """
    x = step_um * np.arange(-2, 3)
    e = expected_eef(optics, theta[:, None], phi[:, None], dz_um + x[None, :], spectrum, engine,
                     n_sub)  # fmt: skip
    # second-order coefficient of the LS parabola on symmetric points: sum((x^2 - m) e)/sum(...)
    u = x**2 - np.mean(x**2)
    a2 = e @ u / np.sum(u * u)
    return -2.0 * a2


def _optimum_sensitivity(
    optics: OpticalModel,
    theta: np.ndarray,
    phi: np.ndarray,
    dz_opt_um: np.ndarray,
    spectrum: Spectrum,
    engine: FastEngine | None,
    n_sub: int,
    step_um: float,
    zernikes: Sequence[int],
    chromatic: bool,
    eps_nm: float = 20.0,
    eps_chrom: float = 0.1,
) -> np.ndarray:
    """``(F, A)``: how far each field's EEF-optimal focus moves (um) per unit of each
    aberration nuisance (nm of Z_j, then the chromatic scale), by central differences of the
    vertex of the parabola through the expected EEF at ``dz_opt +- step`` and ``dz_opt``."""
    x = step_um * np.arange(-1, 2)
    pert = optics.perturbation

    def vertex(opt: OpticalModel) -> np.ndarray:
        e = expected_eef(opt, theta[:, None], phi[:, None], dz_opt_um[:, None] + x[None, :],
                         spectrum, engine, n_sub)  # fmt: skip
        den = e[:, 0] - 2.0 * e[:, 1] + e[:, 2]
        if np.any(den >= 0):
            raise ParameterError("expected EEF not concave at a field's optimum: no sensitivity")
        return dz_opt_um + 0.5 * step_um * (e[:, 0] - e[:, 2]) / den

    cols = []
    for j in zernikes:
        vs = []
        for sign in (1.0, -1.0):
            extra = list(pert.extra_nm)
            extra[j - 5] += sign * eps_nm
            vs.append(vertex(replace(optics, perturbation=replace(pert, extra_nm=tuple(extra)))))
        cols.append((vs[0] - vs[1]) / (2.0 * eps_nm))
    if chromatic:
        vs = [
            vertex(replace(optics, perturbation=replace(pert, chrom_scale=pert.chrom_scale + d)))
            for d in (eps_chrom, -eps_chrom)
        ]
        cols.append((vs[0] - vs[1]) / (2.0 * eps_chrom))
    return np.stack(cols, axis=1) if cols else np.zeros((theta.size, 0))


def campaign_information(
    camera: CameraModel,
    design: CampaignDesign | None = None,
    engine: FastEngine | None = None,
    eef_engine: FastEngine | None = None,
    n_sub: int = TRUTH_N_SUB,
    zernikes: Sequence[int] = NUISANCE_ZERNIKES_NOLL,
    chromatic: bool = True,
    curvature_step_um: float = 10.0,
) -> CampaignInformation:
    """Per-frame Fisher information of a campaign of ``camera`` and its T_BF linearisation.

    Args:
        camera: the camera (optics and thermal model); its truth is the expansion point.
        design: the campaign design (default :class:`CampaignDesign`).
        engine: fast engine of the Fisher matrices (default float64).
        eef_engine: fast engine of the expected EEF (default float32, as the emulator's truth).
        n_sub: sub-pixel grid of the expected EEF (n x n; default that of the benchmarks'
            truths, :data:`plato_sim.truth.bestfocus.TRUTH_N_SUB`).
        zernikes: Noll indices of the wavefront nuisances.
        chromatic: add the chromatic-shift scale nuisance.
        curvature_step_um: point spacing of the EEF curvature fit (um).

    Cost: one OTF and its forward-mode derivatives per field and plateau, plus ~90 expected
    EEF evaluations per field (optima, best focus, curvature, sensitivities): measured about
    2.7 s of CPU per field for 5 plateaux (any number of dithers), ~2 min for the default
    40-field design on one core of the project's machine.
    """
    design = design or CampaignDesign()
    optics = camera.optics
    sp = ogse_spectrum(optics.camera, design.n_wavelengths)
    eef_eng = eef_engine or FastEngine(camera=optics.camera)
    theta, phi = design.field_table_deg(optics.design.field_radius_deg)
    plateaux = np.asarray(design.plateaux_degC, dtype=float)
    n_f, n_p = theta.size, plateaux.size

    dz_opt, _ = field_best_focus_um(optics, theta, phi, sp, eef_eng, n_sub)
    dz_bf, _ = best_focus_shift_um(optics, theta, phi, sp, eef_eng, n_sub)
    curv = _eef_curvature_per_um2(optics, theta, phi, dz_bf, sp, eef_eng, n_sub,
                                  curvature_step_um)  # fmt: skip
    sens = _optimum_sensitivity(optics, theta, phi, dz_opt, sp, eef_eng, n_sub,
                                curvature_step_um, zernikes, chromatic)  # fmt: skip
    th = camera.thermal
    t_field = np.asarray(th.temperature_degC(dz_opt), dtype=float)
    t_bf = float(th.temperature_degC(dz_bf))
    s_local = float(th.s_um_per_degC + 2.0 * th.q_um_per_degC2 * (t_bf - th.t0_degC))

    dz_th = np.asarray(th.focal_shift_um(plateaux), dtype=float)
    offs = design.offsets_px()  # (F, D, 2)
    tt = np.repeat(theta, n_p)
    pp = np.repeat(phi, n_p)
    dd = np.tile(dz_th, n_f)
    oo = np.repeat(offs, n_p, axis=0)
    sf = stamp_fisher(
        optics, tt, pp, dd, oo, design.flux_e, 0.0, design_noise(design), sp, engine,
        design.stamp_px, zernikes, chromatic,
    )  # fmt: skip
    n_d = offs.shape[1]
    k = len(sf.params)
    return CampaignInformation(
        design=design,
        params=sf.params,
        fisher=sf.fisher.reshape(n_f, n_p, n_d, k, k),
        s_um_per_degC=s_local,
        t_field_degC=t_field,
        bft_degC=t_bf,
        eef_curvature_per_um2=curv,
        optimum_sensitivity=sens,
        max_e=sf.max_e.reshape(n_f, n_p, n_d),
    )


def tbf_bound(
    camera: CameraModel,
    plateaux_degC: Sequence[float] = DEFAULT_PLATEAUX_DEGC,
    design: CampaignDesign | None = None,
    aberrations: str = "per_field",
    **kwargs,
) -> TBFBound:
    """Cramér–Rao bound on ``camera``'s T_BF for a campaign on ``plateaux_degC``.

    Args:
        camera: the camera (e.g. :func:`camera_from_truth` of an emulated campaign).
        plateaux_degC: the plateaux used (degC).
        design: the rest of the design (default the emulator's; its plateaux are replaced).
        aberrations: nuisance model, see :meth:`CampaignInformation.bound`.
        **kwargs: to :func:`campaign_information`.

    To evaluate several plateau subsets of one camera, call :func:`campaign_information` once
    with all plateaux and :meth:`CampaignInformation.bound` per subset (the costly part is
    shared).
    """
    d = replace(design or CampaignDesign(), plateaux_degC=tuple(float(t) for t in plateaux_degC))
    return campaign_information(camera, d, **kwargs).bound(aberrations=aberrations)


def tbf_bound_degC(*args, **kwargs) -> float:
    """1-sigma Cramér–Rao bound on T_BF (degC): ``tbf_bound(*args, **kwargs).sigma_tbf_degC``.

    Arguments are those of :func:`tbf_bound` (camera, plateaux, design, aberrations, ...).
    With one plateau the prior on ``s`` is used and the bound is prior-dominated (see the
    flags of :func:`tbf_bound`'s result).
    """
    return tbf_bound(*args, **kwargs).sigma_tbf_degC


def one_plateau_floor_degC(
    thermal: ThermalModel,
    bft_degC: float,
    plateau_degC: float,
    s_prior_um_per_degC: float = S_PRIOR_UM_PER_DEGC[0],
) -> float:
    """Error (degC) of a one-plateau T_BF that knows everything about the camera but ``s``.

    The focal shift between the plateau and best focus, ``dz_th(T_BF) - dz_th(T_plateau)``
    (um, the camera's true thermal model, quadratic term included), measured exactly and
    converted with ``s_prior_um_per_degC``: ``T_plateau + shift / s_prior - T_BF``.  For a
    linear camera this is ``(T_BF - T_plateau) (s - s_prior) / s_prior``.

    Args:
        thermal: the camera's true thermal model.
        bft_degC: its true best-focus temperature (degC).
        plateau_degC: the plateau's TRP1 temperature (degC).
        s_prior_um_per_degC: the sensitivity the estimator assumes (um/degC; default the
            prior's mean, docs/facts.md).
    """
    if not s_prior_um_per_degC:
        raise ParameterError("s_prior_um_per_degC must be non-zero")
    shift_um = float(thermal.focal_shift_um(bft_degC) - thermal.focal_shift_um(plateau_degC))
    return plateau_degC + shift_um / s_prior_um_per_degC - bft_degC
