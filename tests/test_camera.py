"""Camera constants and focal-plane geometry."""

import numpy as np
import pytest

from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera, ccd_of_field, field_of_ccd


def test_constants_from_facts():
    c = PLATO_NORMAL_CAMERA
    assert c.f_number == pytest.approx(2.0627, abs=1e-3)
    assert c.pixel_arcsec == pytest.approx(15.0, abs=0.01)
    # barrel distortion: the field edge lands ~3.56 % inside f tan(theta)
    x, _ = c.field_to_focal_plane(c.field_radius_deg, 0.0)
    ideal = c.focal_length_mm * np.tan(np.radians(c.field_radius_deg))
    assert x / ideal == pytest.approx(1 - 0.0356, abs=1e-9)
    assert 81.0 < x < 82.0


def test_field_focal_plane_round_trip():
    rng = np.random.default_rng(1)
    th = rng.uniform(0, 25, 500)
    ph = rng.uniform(0, 360, 500)
    x, y = PLATO_NORMAL_CAMERA.field_to_focal_plane(th, ph)
    th2, ph2 = PLATO_NORMAL_CAMERA.focal_plane_to_field(x, y)
    assert np.allclose(th2, th, atol=1e-10)
    ok = th > 1e-6
    assert np.allclose((ph2[ok] - ph[ok] + 180) % 360 - 180, 0, atol=1e-8)


def test_ccd_round_trip_and_quadrants():
    c = PLATO_NORMAL_CAMERA
    rng = np.random.default_rng(2)
    th = rng.uniform(0.5, 18.0, 400)
    ph = rng.uniform(0, 360, 400)
    ccd, row, col = ccd_of_field(c, th, ph)
    on = ccd > 0
    assert on.mean() > 0.9  # the four CCDs cover the field but for the central cross gap
    assert set(np.unique(ccd[on])) == {1, 2, 3, 4}
    assert np.all((row[on] >= -0.5) & (row[on] < c.ccd_pixels - 0.5))
    th2, ph2 = field_of_ccd(c, ccd[on], row[on], col[on])
    assert np.allclose(th2, th[on], atol=1e-9)
    assert np.allclose((ph2 - ph[on] + 180) % 360 - 180, 0, atol=1e-7)
    # one CCD per quadrant: nearby points share a CCD, opposite points do not
    c1, _, _ = ccd_of_field(c, [10, 10], [45, 225])
    assert c1[0] != c1[1]


def test_yaml_variant(tmp_path):
    p = tmp_path / "fast.yaml"
    p.write_text("camera:\n  name: fast-camera\n  band_nm: [505, 695]\n  focal_length_mm: 240.0\n")
    cam = Camera.from_yaml(p)
    assert cam.name == "fast-camera" and cam.band_nm == (505, 695)
    assert cam.f_number == pytest.approx(2.0)
    assert cam.pixel_um == 18.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  focal_lenght_mm: 240.0\n")
    with pytest.raises(ValueError, match="focal_lenght_mm"):
        Camera.from_yaml(bad)


def test_qe_mean_and_transmission():
    c = PLATO_NORMAL_CAMERA
    lam = np.linspace(500, 1000, 2001)
    assert np.mean(c.qe_at(lam)) == pytest.approx(0.6267, rel=2e-3)
    assert c.transmission_at(700.0) == pytest.approx(0.826)


def test_ground_test_field_table_lies_on_the_ccds():
    from plato_sim.scenes.fields import ground_test_fields

    th, ph = ground_test_fields()
    assert th.size == 40 and th.max() < PLATO_NORMAL_CAMERA.field_radius_deg
    ccd, _, _ = ccd_of_field(PLATO_NORMAL_CAMERA, th, ph)
    assert np.all(ccd > 0)  # none in the gaps between the CCDs
    assert np.bincount(ccd, minlength=5)[1:].min() >= 8  # every CCD sees the test
