"""Cramér–Rao bounds (plato_sim.bounds): analytic limits, the autograd Jacobian, monotonicity.

Small spectra (2-3 wavelengths) and few field positions keep the module fast; nothing is
random but the seeded dither offsets.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from plato_cnn.fit import DEFAULT_S_PRIOR_UM_PER_DEGC
from plato_sim.bounds import (
    CHROM_SCALE,
    FRAME_NUISANCES,
    CampaignDesign,
    PixelNoise,
    camera_from_truth,
    campaign_information,
    crb_from_fisher,
    design_noise,
    marginal_information,
    stamp_fisher,
)
from plato_sim.detector import DetectorModel
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA
from plato_sim.optics.model import CameraModel, OpticalModel
from plato_sim.optics.spectra import monochromatic, ogse_spectrum
from plato_sim.optics.wavefront import FieldAberrations
from plato_sim.psf import FastEngine
from plato_sim.truth.bestfocus import field_best_focus_um

OPTICS = OpticalModel()
SP3 = ogse_spectrum(PLATO_NORMAL_CAMERA, 3)
#: every aberration of the design (field curvature, astigmatism, coma, spherical, chromatic)
_ABERRATION_FIELDS = (
    "curvature_c2_um",
    "curvature_c4_um",
    "astig_nm",
    "coma_nm",
    "spherical0_nm",
    "spherical2_nm",
    "chrom_lin_um",
    "chrom_quad_um",
)
POISSON_ONLY = PixelNoise(read_noise_e=0.0, gain_e_per_adu=1.0, n_background_frames=None,
                          quantisation=False)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small FFTs: a second intra-op thread only spins (4x the CPU time on a loaded 2-core
    machine); restored afterwards for the other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine() -> FastEngine:
    return FastEngine(dtype=torch.float64)


def test_pixel_noise_from_detector_states_every_term():
    """Floor = read^2 + gain^2/12 + dark, plus their share of the subtracted background."""
    det = DetectorModel()
    n = PixelNoise.from_detector(det, exptime_s=0.1, n_background_frames=2)
    per_read = det.read_noise_e**2 + det.gain_e_per_adu**2 / 12.0
    dark = det.dark_e_per_s * 0.1
    assert n.floor_e2 == pytest.approx((dark + per_read) * 1.5)
    assert n.variance_e2(np.array([-5.0, 100.0])) == pytest.approx([n.floor_e2, 100.0 + n.floor_e2])


def test_jacobian_matches_finite_differences(engine):
    """Every column of the autograd Jacobian against central differences of engine.render
    (the chromatic scale through ``CameraPerturbation.chrom_scale`` itself)."""
    flux, bg = 2.0e5, 3.0
    theta, phi, dz0, off = 12.0, 30.0, 20.0, (0.17, -0.23)
    sf = stamp_fisher(OPTICS, theta, phi, dz0, off, flux, bg, spectrum=SP3, engine=engine,
                      keep_jacobian=True)  # fmt: skip
    jac = sf.jacobian[0, 0]

    def mu(dz=0.0, dx=0.0, dy=0.0, f=flux, b=bg, zern=None, chrom=0.0):
        pert = replace(OPTICS.perturbation, chrom_scale=OPTICS.perturbation.chrom_scale + chrom)
        optics = replace(OPTICS, perturbation=pert)
        z = optics.zernikes_nm(theta, phi, dz0 + dz, SP3.wavelengths_array_nm)
        if zern is not None:
            z[..., zern[0] - 1] += zern[1]
        o = np.array([[off[0] + dx, off[1] + dy]])
        return f * engine.render(z, SP3, o, 32)[0] + b

    np.testing.assert_allclose(sf.expected_e[0, 0], mu(), rtol=0, atol=1e-9 * flux)
    h = 1e-3
    cases = {
        "dz_um": (mu(dz=h), mu(dz=-h)),
        "dx_px": (mu(dx=h), mu(dx=-h)),
        "dy_px": (mu(dy=h), mu(dy=-h)),
        "flux_e": (mu(f=flux + 1.0), mu(f=flux - 1.0)),
        "background_e": (mu(b=bg + 1.0), mu(b=bg - 1.0)),
        "chrom_scale": (mu(chrom=h), mu(chrom=-h)),
    }
    assert set(cases) | {f"z{j}_nm" for j in range(5, 12)} == set(sf.params)
    for j in range(5, 12):
        cases[f"z{j}_nm"] = (mu(zern=(j, h)), mu(zern=(j, -h)))
    for name, (up, down) in cases.items():
        step = 1.0 if name in ("flux_e", "background_e") else h
        fd = (up - down) / (2 * step)
        col = jac[..., sf.params.index(name)]
        assert np.abs(col - fd).max() <= 1e-5 * np.abs(fd).max(), name


def test_flux_bound_is_the_poisson_limit_plus_noise(engine):
    """Flux alone: var(F) = 1 / sum p^2 / (F p + floor); Poisson only: F / sum(p) ~ F."""
    flux = 1.0e5
    sf = stamp_fisher(OPTICS, 5.5, 15.0, 0.0, (0.1, 0.2), flux, noise=POISSON_ONLY,
                      spectrum=SP3, engine=engine, zernikes=())  # fmt: skip
    p = sf.expected_e[0, 0] / flux
    got = sf.crb("flux_e", nuisances=[])[0, 0]
    assert got == pytest.approx(math.sqrt(flux / p[p > 0].sum()), rel=1e-9)
    assert got == pytest.approx(math.sqrt(flux), rel=2e-3)  # the stamp holds ~all the light

    noisy = PixelNoise.from_detector()
    sf = stamp_fisher(OPTICS, 5.5, 15.0, 0.0, (0.1, 0.2), flux, noise=noisy, spectrum=SP3,
                      engine=engine, zernikes=())  # fmt: skip
    p = sf.expected_e[0, 0] / flux
    expect = 1.0 / math.sqrt(np.sum(p**2 / (flux * np.clip(p, 0, None) + noisy.floor_e2)))
    assert sf.crb("flux_e", nuisances=[])[0, 0] == pytest.approx(expect, rel=1e-9)
    assert expect > math.sqrt(flux)


def test_position_bound_of_a_gaussian_spot():
    """Without aberrations and with strong diffusion the spot is a Gaussian (sigma^2 =
    sigma_d^2 + 1/12 px^2 with the pixel box; the 500 nm Airy core is 0.06 px): the Poisson
    bound on its position is sigma / sqrt(F)."""
    sigma_d = 1.5
    eng = FastEngine(diffusion_sigma_px=sigma_d, fov_px=24, dtype=torch.float64)
    flux = 1.0e4
    perfect = OpticalModel(design=FieldAberrations(**{k: 0.0 for k in _ABERRATION_FIELDS}))
    sf = stamp_fisher(perfect, 0.0, 0.0, 0.0, (0.13, -0.21), flux, noise=POISSON_ONLY,
                      spectrum=monochromatic(500.0), engine=eng, size=24,
                      zernikes=())  # fmt: skip
    expect = math.sqrt(sigma_d**2 + 1.0 / 12.0) / math.sqrt(flux)
    assert sf.crb("dx_px", nuisances=[])[0, 0] == pytest.approx(expect, rel=0.02)
    assert sf.crb("dy_px", nuisances=[])[0, 0] == pytest.approx(expect, rel=0.02)


def test_dz_bound_scales_as_inverse_sqrt_flux(engine):
    """No background and negligible read noise: the Fisher matrix in (dz, log flux, ...) is
    proportional to the flux, so every marginal bound goes exactly as 1/sqrt(F)."""
    faint_floor = PixelNoise(read_noise_e=1e-3, gain_e_per_adu=1.0, n_background_frames=None,
                             quantisation=False)  # fmt: skip
    sf = stamp_fisher(OPTICS, 8.5, 45.0, 30.0, [(0.2, -0.1)] * 2, np.array([[1e6, 1e7]]),
                      noise=faint_floor, spectrum=SP3, engine=engine)  # fmt: skip
    for nuisances in (None, list(FRAME_NUISANCES), []):
        b = sf.crb("dz_um", nuisances)[0]
        assert b[0] / b[1] == pytest.approx(math.sqrt(10.0), rel=1e-3), nuisances


def test_adding_nuisances_never_lowers_the_bound(engine):
    sf = stamp_fisher(OPTICS, np.array([2.5, 17.5]), np.array([45.0, 33.75]),
                      np.array([-40.0, 10.0]), np.array([[0.0, 0.0], [0.3, -0.4]]),
                      spectrum=SP3, engine=engine)  # fmt: skip
    zern = [p for p in sf.params if p.startswith("z")]
    nested = [[]] + [list(FRAME_NUISANCES[:k]) for k in range(1, 5)]
    nested += [list(FRAME_NUISANCES) + zern[:k] for k in range(1, len(zern) + 1)]
    bounds = np.stack([sf.crb("dz_um", n) for n in nested])
    assert np.all(np.diff(bounds, axis=0) >= -1e-9 * bounds[:-1])
    assert np.all(bounds[-1] > bounds[0])  # the nuisances do cost something
    # marginal_information is the inverse of the covariance block
    full = sf.fisher[0, 0]
    inv = np.linalg.inv(full)
    m = marginal_information(full, sf.params, ["dz_um", "dx_px"],
                             [p for p in sf.params if p not in ("dz_um", "dx_px")])  # fmt: skip
    np.testing.assert_allclose(np.linalg.inv(m), inv[np.ix_([0, 3], [0, 3])], rtol=1e-6)
    assert crb_from_fisher(full, sf.params)[()] == pytest.approx(math.sqrt(inv[0, 0]), rel=1e-6)


def test_bad_input_is_rejected(engine):
    with pytest.raises(ValueError, match="sub-pixel"):
        stamp_fisher(OPTICS, 0.0, 0.0, 0.0, (0.7, 0.0), spectrum=SP3, engine=engine)
    with pytest.raises(ValueError, match="flux_e"):
        stamp_fisher(OPTICS, 0.0, 0.0, 0.0, (0.0, 0.0), 0.0, spectrum=SP3, engine=engine)
    with pytest.raises(ValueError, match="Z1-Z4"):
        stamp_fisher(OPTICS, 0.0, 0.0, 0.0, spectrum=SP3, engine=engine, zernikes=(4,))
    with pytest.raises(ValueError, match="unknown parameter"):
        crb_from_fisher(np.eye(2), ("dz_um", "flux_e"), "dz_um", ["nope"])
    with pytest.raises(ValueError, match="theta_deg"):
        CampaignDesign(theta_deg=(1.0, 2.0), phi_deg=(0.0,))


def small_campaign_camera() -> CameraModel:
    return CameraModel.random(np.random.default_rng(5), 5)


@pytest.fixture(scope="module")
def small_campaign(engine):
    """Three field positions, five plateaux, four dithers, 3 wavelengths; aberration
    nuisances Z5, Z11 and the chromatic scale (fewer derivatives, the same structure)."""
    cam = small_campaign_camera()
    design = CampaignDesign(theta_deg=(2.5, 11.5, 17.5), phi_deg=(45.0, 22.5, 33.75),
                            n_dithers=4, n_wavelengths=3)  # fmt: skip
    return campaign_information(cam, design, engine=engine, n_sub=2, zernikes=(5, 11))


def test_campaign_bound_decreases_with_plateaux_and_dithers(small_campaign):
    info = small_campaign
    nested = [(-80.0,), (-85.0, -80.0), (-90.0, -80.0, -70.0), (-90.0, -85.0, -80.0, -75.0, -70.0)]
    for mode in ("known", "per_field", "per_frame"):
        b = [info.bound(p, aberrations=mode, use_s_prior=True).sigma_tbf_degC for p in nested]
        assert np.all(np.diff(b) < 0), (mode, b)
        d = [info.bound(n_dithers=n, aberrations=mode).sigma_tbf_degC for n in (1, 2, 4)]
        assert np.all(np.diff(d) < 0), (mode, d)
    # unknown aberrations cannot help
    per = {m: info.bound(aberrations=m).sigma_tbf_degC for m in ("known", "per_field", "per_frame")}
    assert per["known"] <= per["per_field"] and per["known"] <= per["per_frame"]


def test_optimum_sensitivity_matches_refocusing(small_campaign):
    """d(field optimum)/d(chromatic scale) against re-running field_best_focus_um on the
    perturbed camera; and close to minus the spectrum-weighted mean chromatic shift (the
    best focus follows the mean defocus over the band)."""
    info = small_campaign
    optics = small_campaign_camera().optics
    sp = ogse_spectrum(optics.camera, info.design.n_wavelengths)
    th, ph = np.asarray(info.design.theta_deg), np.asarray(info.design.phi_deg)
    pert = optics.perturbation
    opt = []
    for d in (0.3, -0.3):
        chrom = replace(optics, perturbation=replace(pert, chrom_scale=pert.chrom_scale + d))
        opt.append(field_best_focus_um(chrom, th, ph, sp, n_sub=2)[0])
    refocus = (opt[0] - opt[1]) / 0.6
    got = info.optimum_sensitivity[:, info.params.index(CHROM_SCALE) - 5]
    np.testing.assert_allclose(got, refocus, rtol=0.05)
    mean_shift = sp.weights_array @ optics.design.chromatic_shift_um(sp.wavelengths_array_nm)
    np.testing.assert_allclose(got, -mean_shift, rtol=0.2)


def test_one_plateau_needs_the_prior_and_is_prior_dominated(small_campaign):
    """One plateau T_p: T_f,i = T_p - dz_i / s, so an error on s moves T_BF by
    (sum_i w_i (T_p - T_f,i) / s + dT_BF/ds) per unit of s."""
    info = small_campaign
    t_p = -85.0
    assert math.isinf(info.bound((t_p,), use_s_prior=False).sigma_tbf_degC)
    b = info.bound((t_p,))
    assert b.prior_used and b.prior_dominated and b.n_plateaux == 1
    d_s, w = info.tbf_gradient
    lever = np.sum(w * (t_p - info.t_field_degC)) / info.s_um_per_degC + d_s
    expect = math.hypot(b.sigma_tbf_s_known_degC, lever * DEFAULT_S_PRIOR_UM_PER_DEGC[1])
    assert b.sigma_tbf_degC == pytest.approx(expect, rel=0.01)
    five = info.bound()
    assert not five.prior_used and not five.prior_dominated
    assert five.sigma_tbf_degC < b.sigma_tbf_degC
    with pytest.raises(ValueError, match="not all in the computed design"):
        info.bound((-60.0,))


def test_truth_sidecar_gives_the_emulated_camera_and_design(tmp_path):
    from plato_sim.scenes.ground_test import emulate_campaign

    truth = emulate_campaign(tmp_path / "c", camera_name="lim", bft_degC=-79.0,
                             plateaux_degC=(-85.0, -75.0), n_fields=2, n_dithers=2,
                             frames_per_dither=1, window_px=32, seed=4, n_sub_truth=2,
                             n_wavelengths=2)  # fmt: skip
    cam = camera_from_truth(truth)
    assert cam.thermal.s_um_per_degC == truth["thermal"]["s_um_per_degC"]
    assert cam.thermal.t0_degC == truth["thermal"]["t0_degC"]
    assert cam.optics.perturbation.to_dict() == truth["perturbation"]
    d = CampaignDesign.from_truth(truth)
    assert d.plateaux_degC == tuple(truth["plateaux_achieved_degC"])
    assert d.theta_deg == tuple(truth["fields"]["theta_deg"])
    assert (d.n_dithers, d.frames_per_dither, d.n_wavelengths) == (2, 1, 2)
    assert design_noise(d).read_noise_e == pytest.approx(DetectorModel().read_noise_e)


def test_one_plateau_floor_is_the_s_error_of_an_exact_shift():
    from plato_sim.bounds import one_plateau_floor_degC
    from plato_sim.errors import ParameterError
    from plato_sim.optics.thermal import ThermalModel

    # linear camera: (T_BF - T_pl) (s - s_prior) / s_prior
    assert one_plateau_floor_degC(ThermalModel(12.0, -80.0), -75.0, -80.0) == pytest.approx(1.0)
    assert one_plateau_floor_degC(ThermalModel(8.0, -80.0), -84.0, -80.0) == pytest.approx(0.8)
    # the prior's own s, or a plateau at best focus: nothing to convert
    assert one_plateau_floor_degC(ThermalModel(10.0, -70.0), -75.0, -80.0) == pytest.approx(0.0)
    assert one_plateau_floor_degC(ThermalModel(13.0, -70.0), -80.0, -80.0) == pytest.approx(0.0)
    # quadratic term: shift = s d + q (d_bf^2 - d_pl^2) with d from T0
    th = ThermalModel(10.0, -80.0, 0.04)
    assert one_plateau_floor_degC(th, -75.0, -80.0) == pytest.approx(0.04 * 25 / 10)
    with pytest.raises(ParameterError):
        one_plateau_floor_degC(th, -75.0, -80.0, s_prior_um_per_degC=0.0)
