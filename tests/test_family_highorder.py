"""The high-order (calibration) optical family and its campaigns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plato_sim.errors import ParameterError
from plato_sim.optics.family_highorder import (
    MONOMIALS,
    N_HIGHORDER,
    HighOrderCamera,
    HighOrderOptics,
)
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.optics.wavefront import dz_to_z4_nm
from plato_sim.scenes.calibration_family import (
    design_camera_job,
    emulate_calibration_family,
    highorder_camera_job,
    highorder_mild_camera_job,
)
from plato_sim.scenes.ground_test import read_truth

R = 18.89


def _bare(**kw) -> HighOrderOptics:
    base = dict(astig_nm=0.0, coma_nm=0.0, sph0_nm=0.0, sec_sph_nm=0.0, curvature_c2_um=0.0,
                chrom_um=(0.0, 0.0))  # fmt: skip
    return HighOrderOptics(**{**base, **kw})


def test_each_term_is_its_polynomial_of_the_cartesian_field_position():
    poly = np.zeros((N_HIGHORDER - 4, len(MONOMIALS)))
    j, k = 30, MONOMIALS.index((1, 2))  # Z30 ~ x y^2
    poly[j - 5, k] = 50.0
    th, ph = np.array([R, R / 2, R]), np.array([30.0, 200.0, 0.0])
    z = _bare(poly_nm=poly).aberrations_nm(th, ph)
    x, y = th / R * np.cos(np.radians(ph)), th / R * np.sin(np.radians(ph))
    np.testing.assert_allclose(z[:, j - 1], 50.0 * x * y * y, atol=1e-9)
    assert np.count_nonzero(np.delete(z, j - 1, axis=1)) == 0
    assert z.shape == (3, 37)


def test_nominal_terms_follow_the_field_like_a_symmetric_lens():
    z = _bare(astig_nm=100.0, coma_nm=50.0).aberrations_nm(np.array([R, R]), np.array([0.0, 45.0]))
    np.testing.assert_allclose(z[0, [5, 4, 7, 6]], [100.0, 0.0, 50.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(z[1, [5, 4]], [0.0, 100.0], atol=1e-9)  # rotates as 2 phi
    np.testing.assert_allclose(z[1, [7, 6]], [50.0 / np.sqrt(2)] * 2, atol=1e-9)


def test_focal_surface_chromatic_shift_and_thermal_response_reach_z4():
    o = _bare(saddle_um=(4.0, 0.0), tilt_um=(0.0, 3.0), chrom_um=(2.0, 10.0))
    th, ph = np.array([R, R]), np.array([0.0, 90.0])
    np.testing.assert_allclose(o.field_focal_offset_um(th, ph), [4.0, -4.0 + 3.0])
    assert o.chromatic_shift_um(700.0) == 0.0 and o.chromatic_shift_um(500.0) > 0
    cam = HighOrderCamera.random(np.random.default_rng(3))
    dz = cam.thermal.focal_shift_um(cam.thermal.t0_degC + np.array([-10.0, 0.0, 10.0]))
    z4 = cam.optics.zernikes_nm(5.0, 30.0, dz, np.array([700.0]))[:, 0, 3]
    np.testing.assert_allclose(z4 - z4[1], dz_to_z4_nm(dz, cam.optics.camera.f_number), rtol=1e-9)


def test_random_cameras_carry_terms_beyond_z22_and_round_trip():
    for s in range(5):
        job = highorder_camera_job(7, s)
        cam = job["camera"]
        z = cam.optics.aberrations_nm(np.array([0.0, R]), np.array([0.0, 60.0]))
        assert np.all(np.abs(z[:, 22:]).sum(axis=1) > 1.0)  # Z23-Z37 present
        assert 0.15 <= cam.diffusion_sigma_px <= 0.32 and 8 <= cam.thermal.s_um_per_degC <= 12
        assert -92 <= job["bft_degC"] <= -68 and 10 <= job["design"].n_fields <= 40
        assert HighOrderCamera.from_dict(json.loads(json.dumps(cam.to_dict()))) == cam
        assert cam.spectrum(10).weights != ogse_spectrum(cam.optics.camera, 10).weights
    assert highorder_camera_job(7, 0)["camera"] != highorder_camera_job(8, 0)["camera"]
    with pytest.raises(ParameterError, match="poly_nm"):
        HighOrderOptics(poly_nm=np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="strength"):
        HighOrderCamera.random(np.random.default_rng(0), strength=5.0)


def test_campaign_is_deterministic_and_records_the_family(tmp_path):
    small = dict(n_fields=3, n_dithers=2, frames_per_dither=1, n_wavelengths=3,
                 plateaux_degC=(-85.0, -75.0))  # fmt: skip
    ((d, truth),) = emulate_calibration_family(tmp_path / "a", 1, seed=2, n_sub_truth=2, **small)
    ((d2, _),) = emulate_calibration_family(tmp_path / "b", 1, seed=2, n_sub_truth=2, **small)
    files = sorted(p.relative_to(d) for p in d.rglob("*.fits"))
    assert files and all((d / f).read_bytes() == (d2 / f).read_bytes() for f in files)
    t = read_truth(d)
    assert t["family"] == "highorder" and "highorder" in t and -92 <= t["bft_degC"] <= -68
    assert d.name.startswith("highorder_s2_c000_n2_")
    with pytest.raises(ParameterError, match="n_cameras"):
        emulate_calibration_family(tmp_path / "c", 0)
    with pytest.raises(ParameterError, match="family"):
        emulate_calibration_family(tmp_path / "c", 1, family="nodal")


def test_design_calibration_set_has_its_own_stream_and_random_designs():
    a, b = design_camera_job(0, 1), design_camera_job(0, 1)
    assert type(a["camera"]).__name__ == "CameraModel" and repr(a) == repr(b)
    assert repr(design_camera_job(1, 1)["camera"]) != repr(a["camera"])
    assert 10 <= a["design"].n_fields <= 40 and -92 <= a["bft_degC"] <= -68


def test_mild_set_is_the_family_at_small_strength_on_its_own_stream():
    """The mild set's terms beyond Z22 are a fraction of the strength-1 set's (strength
    0.05-0.3), its cameras are its own (another stream), and its truths span the same range."""

    def beyond(job):
        z = job["camera"].optics.aberrations_nm(np.array([R]), np.array([40.0]))
        return float(np.sqrt(np.mean(z[0, 22:] ** 2)))

    full = np.mean([beyond(highorder_camera_job(0, i)) for i in range(8)])
    mild = [highorder_mild_camera_job(0, i) for i in range(8)]
    assert 0.0 < np.mean([beyond(j) for j in mild]) < 0.5 * full
    assert mild[0]["camera"] != highorder_camera_job(0, 0)["camera"]
    assert repr(mild[1]) == repr(highorder_mild_camera_job(0, 1))
    assert all(-92 <= j["bft_degC"] <= -68 for j in mild)
