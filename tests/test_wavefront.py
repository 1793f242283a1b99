"""Noll Zernikes, defocus conversion, thermal model and the optical model."""

import math

import numpy as np
import pytest

from plato_sim.optics.model import CameraModel, OpticalModel
from plato_sim.optics.thermal import ThermalModel
from plato_sim.optics.wavefront import (
    CameraPerturbation,
    dz_to_z4_nm,
    noll_to_nm,
    z4_nm_to_dz,
    zernike_basis,
)


def test_noll_indices():
    expect = {1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2), 7: (3, -1),
              8: (3, 1), 9: (3, -3), 10: (3, 3), 11: (4, 0)}  # fmt: skip
    for j, nm in expect.items():
        assert noll_to_nm(j) == nm


def test_noll_orthonormal_on_unit_disk():
    n = 801
    c = np.linspace(-1, 1, n)
    x, y = np.meshgrid(c, c)
    inside = x**2 + y**2 <= 1
    z = zernike_basis(15, x, y)[:, inside]
    gram = z @ z.T / inside.sum()
    assert np.allclose(gram, np.eye(15), atol=6e-3)


def test_defocus_conversion():
    n = 2.0627
    # docs/facts.md: at f/2.06 1 um of focal shift is ~9 nm rms of Z4 (8.5 exactly)
    assert dz_to_z4_nm(1.0, n) == pytest.approx(1e3 / (16 * math.sqrt(3) * n**2))
    assert 8.0 < dz_to_z4_nm(1.0, n) < 9.5
    assert z4_nm_to_dz(dz_to_z4_nm(-37.5, n), n) == pytest.approx(-37.5)
    # W_PV = dz / (8 N^2): Z4 peak-to-valley is 2 sqrt(3) times its coefficient
    assert 2 * math.sqrt(3) * dz_to_z4_nm(100.0, n) == pytest.approx(1e5 / (8 * n * n))


def test_thermal_model_and_inverse():
    th = ThermalModel(10.0, -80.0)
    assert th.focal_shift_um(-75.0) == pytest.approx(50.0)
    assert th.temperature_degC(-20.0) == pytest.approx(-82.0)
    q = ThermalModel(9.0, -80.0, 0.2)
    t = np.array([-90.0, -80.0, -71.0])
    assert np.allclose(q.temperature_degC(q.focal_shift_um(t)), t)
    neg = ThermalModel(-10.0, -80.0)  # the sign of s is unknown for a real camera
    assert neg.temperature_degC(neg.focal_shift_um(-70.0)) == pytest.approx(-70.0)
    with pytest.raises(ValueError):
        ThermalModel(0.0)


def test_optical_model_zernikes():
    m = OpticalModel()
    lam = np.array([500.0, 700.0, 1000.0])
    z = m.zernikes_nm([0.0, 18.0], [0.0, 90.0], [10.0, -5.0], lam)
    assert z.shape == (2, 3, 11)
    n = m.camera.f_number
    # on axis: only defocus (thermal + chromatic) and spherical
    assert np.allclose(z[0, :, [1, 2, 4, 5, 6, 7]], 0.0)
    dz_local = z4_nm_to_dz(z[0, :, 3], n)
    assert np.allclose(dz_local, 10.0 + m.chromatic_shift_um(lam))
    # astigmatism grows with field and follows its azimuth (phi = 90: cos 2phi = -1)
    assert z[1, 0, 5] < 0 and abs(z[1, 0, 4]) < 1e-9
    assert z[1, 0, 6] > 0  # coma y points along the field azimuth
    # thermal shift is a piston: the same at every field position
    z2 = m.zernikes_nm([0.0, 18.0], [0.0, 90.0], [20.0, 5.0], lam)
    assert np.allclose(z4_nm_to_dz(z2[..., 3] - z[..., 3], n), 10.0)


def test_random_cameras_are_seeded():
    a = CameraModel.random(np.random.default_rng(5), 3)
    b = CameraModel.random(np.random.default_rng(5), 3)
    c = CameraModel.random(np.random.default_rng(6), 3)
    assert a == b and a != c
    assert 8.0 <= a.thermal.s_um_per_degC <= 12.0
    p = a.optics.perturbation
    assert CameraPerturbation.from_dict(p.to_dict()) == p
