"""Spectra: the midpoint and Gauss quadrature rules of a band's detected-photon density."""

from __future__ import annotations

import numpy as np
import pytest

from plato_sim.errors import ParameterError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA
from plato_sim.optics.model import OpticalModel
from plato_sim.optics.spectra import blackbody_spectrum, gauss_nodes, ogse_spectrum
from plato_sim.psf import FastEngine
from plato_sim.truth.eef import eef

CAM = PLATO_NORMAL_CAMERA


def test_gauss_nodes_are_gauss_legendre_for_a_flat_measure():
    """Against numpy's Gauss-Legendre rule: a flat measure on [-1, 1] has its nodes."""
    x = np.linspace(-1.0, 1.0, 20001)
    w = np.full(x.size, x[1] - x[0])
    w[[0, -1]] *= 0.5
    for n in (2, 4, 6):
        nodes, weights = gauss_nodes(x, w, n)
        ref_x, ref_w = np.polynomial.legendre.leggauss(n)
        np.testing.assert_allclose(nodes, ref_x, atol=1e-6)
        np.testing.assert_allclose(weights, ref_w, atol=1e-6)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_gauss_rule_integrates_polynomials_of_degree_2n_minus_1(n):
    """The rule's defining property, on the OGSE detected-photon density (transmission x QE
    x lambda): every moment up to 2n - 1 equals the fine-grid integral's."""
    sp = ogse_spectrum(CAM, n, rule="gauss")
    lo, hi = CAM.band_nm
    fine = np.linspace(lo, hi, 40001)
    dens = fine * CAM.transmission_at(fine) * CAM.qe_at(fine)
    dens /= np.trapezoid(dens, fine)
    u, uf = (sp.wavelengths_array_nm - 750.0) / 250.0, (fine - 750.0) / 250.0
    for k in range(2 * n):
        exact = np.trapezoid(dens * uf**k, fine)
        assert np.sum(sp.weights_array * u**k) == pytest.approx(exact, abs=2e-6)
    # one degree more is not exact in general: the check has teeth
    k = 2 * n
    assert abs(np.sum(sp.weights_array * u**k) - np.trapezoid(dens * uf**k, fine)) > 1e-5


def test_gauss_spectra_are_valid_and_inside_the_band():
    lo, hi = CAM.band_nm
    for sp in (ogse_spectrum(CAM, 4, rule="gauss"), blackbody_spectrum(CAM, 5800.0, 4, "gauss")):
        assert sp.n == 4
        assert np.all(np.diff(sp.wavelengths_array_nm) > 0)
        assert lo < sp.wavelengths_nm[0] and sp.wavelengths_nm[-1] < hi
        assert np.all(sp.weights_array > 0)
        assert sp.weights_array.sum() == pytest.approx(1.0, abs=1e-12)
    # a hotter star puts its photons bluer: its mean wavelength is shorter
    mean = [
        float(np.sum(s.wavelengths_array_nm * s.weights_array))
        for s in (
            blackbody_spectrum(CAM, 4000.0, 4, "gauss"),
            blackbody_spectrum(CAM, 9000.0, 4, "gauss"),
        )
    ]
    assert mean[1] < mean[0]


def test_midpoint_rule_unchanged_and_bad_rule_refused():
    """The default rule keeps its names and samples (bin centres)."""
    sp = ogse_spectrum(CAM, 10)
    assert sp.name == "ogse10"
    np.testing.assert_allclose(sp.wavelengths_array_nm, 525.0 + 50.0 * np.arange(10))
    assert ogse_spectrum(CAM, 4, rule="gauss").name == "ogseg4"
    assert ogse_spectrum(CAM, 4, rule="gauss").rule == "gauss" and sp.rule == "midpoint"
    with pytest.raises(ParameterError, match="rule"):
        ogse_spectrum(CAM, 4, rule="simpson")
    with pytest.raises(ParameterError):
        gauss_nodes(np.linspace(-1, 1, 5), np.ones(5), 4)


def test_four_gauss_nodes_give_the_stamp_of_the_continuous_band():
    """Polychromatic stamps of the fast engine: 4 Gauss nodes against 60 midpoint bins (the
    band nearly continuous) agree to |dEEF| < 1e-3 and 0.05 % of the flux per pixel, in focus
    and defocused, with the design's chromatic focal shift."""
    optics = OpticalModel()
    eng = FastEngine(fov_px=12)
    fine, g4 = ogse_spectrum(CAM, 60), ogse_spectrum(CAM, 4, rule="gauss")
    theta, phi = np.array([0.0, 9.0, 18.0]), np.array([30.0, 200.0, 75.0])
    dz = np.array([0.0, -80.0, 120.0])
    offs = np.array([[[0.0, 0.0]], [[0.3, -0.2]], [[-0.45, 0.1]]])
    a = eng.render(optics.zernikes_nm(theta, phi, dz, fine.wavelengths_array_nm), fine, offs)
    b = eng.render(optics.zernikes_nm(theta, phi, dz, g4.wavelengths_array_nm), g4, offs)
    for sa, sb in zip(a[:, 0], b[:, 0], strict=True):
        assert abs(eef(sa) - eef(sb)) < 1e-3
        assert np.abs(sa - sb).max() < 5e-4 * sa.sum()


def test_dataset_config_chooses_the_rule():
    """``spectrum.rule`` of the dataset config reaches the rendered spectrum; a bad rule is
    an error naming the key; a config without the key (earlier datasets) renders midpoint."""
    from plato_sim.scenes import sampling

    cfg = sampling.load_config(overrides={"spectrum": {"rule": "gauss", "n_wavelengths": 4}})
    sp = sampling.render_spectrum(cfg)
    assert sp.name == "ogseg4"
    np.testing.assert_allclose(sp.wavelengths_nm, ogse_spectrum(CAM, 4, "gauss").wavelengths_nm)
    with pytest.raises(ValueError, match="spectrum.rule"):
        sampling.load_config(overrides={"spectrum": {"rule": "simpson"}})
    old = sampling.load_config()
    del old["spectrum"]["rule"]
    assert sampling.render_spectrum(old).name == "ogse10"


def test_recoloured_spectrum_weights_follow_the_colour_factor():
    """Weights at the same nodes, in the ratio exp(tilt x + curvature x^2) to the original's."""
    from plato_sim.optics.spectra import colour_factor, recoloured

    base = ogse_spectrum(PLATO_NORMAL_CAMERA, 6)
    new = recoloured(base, 0.4, -0.3)
    assert new.wavelengths_nm == base.wavelengths_nm and new.rule == base.rule
    assert sum(new.weights) == pytest.approx(1.0, abs=1e-12)
    lam = base.wavelengths_array_nm
    ratio = new.weights_array / base.weights_array
    x = (lam - 750.0) / 250.0
    expected = np.exp(0.4 * (x - x[0]) - 0.3 * (x**2 - x[0] ** 2))
    np.testing.assert_allclose(ratio / ratio[0], expected)
    assert colour_factor(750.0, 5.0, 5.0) == pytest.approx(1.0)  # the reference wavelength
    flat = recoloured(base, 0.0, 0.0)
    np.testing.assert_allclose(flat.weights_array, base.weights_array, rtol=1e-12)
    red = recoloured(base, 1.0, 0.0)  # a redder source: mean wavelength moves up
    assert np.dot(red.weights_array, lam) > np.dot(base.weights_array, lam)
