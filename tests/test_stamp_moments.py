"""Image moments of stamps against analytic results (elliptical Gaussians, point sources)."""

import numpy as np
import pytest

from plato_cnn.nn.stamp_moments import MOMENT_NAMES, N_MOMENTS, stamp_moments
from plato_sim.errors import ParameterError

COL = {n: i for i, n in enumerate(MOMENT_NAMES)}


def _gaussian(sx, sy, angle_deg=0.0, size=32, flux=1e5, background=0.0, centre=(0.0, 0.0)):
    """A finely sampled elliptical Gaussian: major axis ``sx`` along ``angle_deg`` (from +x
    towards +y), ``[row, col] = [y, x]``, centre at pixel ``size // 2`` plus ``centre``."""
    y, x = np.mgrid[0:size, 0:size].astype(float) - size // 2
    x, y = x - centre[0], y - centre[1]
    a = np.deg2rad(angle_deg)
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    g = np.exp(-0.5 * (u / sx) ** 2 - 0.5 * (v / sy) ** 2)
    return flux * g / g.sum() + background


def test_round_gaussian_size_and_shape():
    """A round Gaussian of sigma s under the Gaussian weight of sigma w has weighted second
    moments s^2 w^2 / (s^2 + w^2) per axis, no ellipticity, no skewness and the Gaussian's
    fourth-moment ratio 2."""
    s, w = 1.2, 2.5
    m = stamp_moments(_gaussian(s, s)[None], np.array([30.0]))[0]
    eff = s * s * w * w / (s * s + w * w)
    assert m[COL["log_size"]] == pytest.approx(np.log(2 * eff), abs=0.01)
    for k in ("e_radial", "e_cross", "skew_radial", "skew_cross"):
        assert abs(m[COL[k]]) < 1e-3
    assert m[COL["kurtosis"]] == pytest.approx(2.0, abs=0.02)
    assert 0 < m[COL["peak"]] < m[COL["ee2"]] < m[COL["ee3"]] <= 1.0


def test_ellipticity_is_measured_in_the_field_radial_frame():
    """A Gaussian elongated along the field's radius has e_radial > 0 and e_cross = 0 at any
    azimuth; elongated across it, e_radial < 0."""
    for phi in (0.0, 35.0, 90.0, 200.0):
        along = stamp_moments(_gaussian(1.6, 1.0, phi)[None], np.array([phi]))[0]
        across = stamp_moments(_gaussian(1.6, 1.0, phi + 90)[None], np.array([phi]))[0]
        assert along[COL["e_radial"]] > 0.2 and abs(along[COL["e_cross"]]) < 1e-3
        assert across[COL["e_radial"]] == pytest.approx(-along[COL["e_radial"]], abs=1e-3)


def test_background_and_flux_do_not_change_the_moments():
    base = stamp_moments(_gaussian(1.3, 1.1, 20.0)[None], np.array([10.0]))
    other = stamp_moments(
        _gaussian(1.3, 1.1, 20.0, flux=3e6, background=120.0)[None], np.array([10.0])
    )
    np.testing.assert_allclose(base, other, atol=2e-4)


def test_point_source_in_one_pixel_has_all_energy_in_every_box():
    st = np.zeros((1, 32, 32))
    st[0, 16, 16] = 1e5
    m = stamp_moments(st, np.array([0.0]))[0]
    assert m[COL["ee2"]] == pytest.approx(1.0) and m[COL["ee3"]] == pytest.approx(1.0)
    assert m[COL["peak"]] == pytest.approx(1.0)


def test_chunks_and_bad_input():
    rng = np.random.default_rng(0)
    st = np.stack([_gaussian(1.0 + 0.1 * k, 1.0, 15 * k) for k in range(7)])
    st += rng.normal(0, 5, st.shape)
    phi = np.arange(7) * 40.0
    a = stamp_moments(st, phi)
    assert a.shape == (7, N_MOMENTS) and a.dtype == np.float32
    np.testing.assert_array_equal(a, stamp_moments(st, phi, chunk=3))
    with pytest.raises(ParameterError, match="one azimuth per stamp"):
        stamp_moments(st, phi[:3])
    with pytest.raises(ParameterError, match="too small"):
        stamp_moments(st[:, :16, :16], phi)


def test_second_set_appends_its_columns_to_the_first():
    """Set 2 keeps set 1's columns bit for bit; a point source holds all its light within 1 px
    and a round Gaussian has no wide-weight ellipticity and no trefoil."""
    from plato_cnn.nn.stamp_moments import EXTRA_NAMES, moment_count

    st = np.stack([_gaussian(1.2, 1.2), _gaussian(1.5, 1.0, 40.0)])
    phi = np.array([10.0, 40.0])
    one, two = stamp_moments(st, phi), stamp_moments(st, phi, version=2)
    assert two.shape == (2, moment_count(2)) and moment_count(2) == N_MOMENTS + len(EXTRA_NAMES)
    np.testing.assert_array_equal(two[:, :N_MOMENTS], one)
    extra = {n: two[:, N_MOMENTS + i] for i, n in enumerate(EXTRA_NAMES)}
    assert np.all(np.diff(np.stack([extra[k] for k in EXTRA_NAMES[:4]]), axis=0) > 0)
    for k in ("e_radial_wide", "e_cross_wide", "trefoil_cos", "trefoil_sin"):
        assert abs(extra[k][0]) < 1e-3
    assert extra["e_radial_wide"][1] > 0.1  # elongated along its radius
    point = np.zeros((1, 32, 32))
    point[0, 16, 16] = 1e5
    assert stamp_moments(point, np.array([0.0]), version=2)[0, N_MOMENTS] == pytest.approx(1.0)
    with pytest.raises(ParameterError, match="moment set 3"):
        stamp_moments(st, phi, version=3)


def test_head_training_refuses_an_unknown_moment_set_before_reading(tmp_path):
    from plato_cnn.pipelines.field_head import FieldHeadTrainConfig, train_field_head

    with pytest.raises(ParameterError, match="moment set 3"):
        train_field_head(
            tmp_path / "no_dataset", tmp_path / "h", cfg=FieldHeadTrainConfig(moments=3)
        )
