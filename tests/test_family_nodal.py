"""The out-of-family (nodal) optical family and its evaluation campaigns."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from plato_sim.errors import ParameterError
from plato_sim.optics.family_nodal import N_NODAL, NODAL_TERMS, NodalCamera, NodalOptics
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.optics.wavefront import dz_to_z4_nm
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.family_campaigns import random_design
from plato_sim.scenes.out_of_family import (
    emulate_out_of_family,
    nodal_camera_job,
    out_of_family_folders,
)
from plato_sim.truth.bestfocus import expected_eef

SMALL = dict(n_fields=4, n_dithers=3, frames_per_dither=1, n_wavelengths=3)


def _only(term_index: int, power: int, amp: float = 100.0, angle: float = 0.0) -> NodalOptics:
    a = np.zeros((len(NODAL_TERMS), 5))
    g = np.zeros_like(a)
    a[term_index, power] = amp
    g[term_index, power] = angle
    return NodalOptics(amp_nm=a, angle_deg=g)


def _files(root) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".fits", ".csv"):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("nodal")
    ((d, truth),) = emulate_out_of_family(root / "a", 1, seed=3, n_sub_truth=2, **SMALL)
    return root, d, truth


def test_same_seed_gives_the_same_bytes(campaign, tmp_path):
    root, d, truth = campaign
    ((d2, truth2),) = emulate_out_of_family(tmp_path / "b", 1, seed=3, n_sub_truth=2, **SMALL)
    a, b = _files(d), _files(d2)
    assert a and a == b
    for k in ("seconds_truth", "seconds_total"):
        truth.pop(k, None), truth2.pop(k, None)
    assert json.dumps(truth, sort_keys=True) == json.dumps(truth2, sort_keys=True)
    # another seed: another camera
    other = nodal_camera_job(4, 0)["camera"]
    assert other != nodal_camera_job(3, 0)["camera"]


def test_only_some_cameras_are_emulated_in_their_own_folders(campaign):
    """``only=``: camera 0 of a larger set is the same camera in the same folder (here the
    one already written, so it is read back); camera 1 is neither written nor returned."""
    root, d, truth = campaign
    folders = out_of_family_folders(root / "a", 2, seed=3, n_sub_truth=2, **SMALL)
    ((d0, truth0),) = emulate_out_of_family(root / "a", 2, seed=3, n_sub_truth=2, only=[0],
                                            **SMALL)  # fmt: skip
    assert d0 == folders[0] == d and truth0["bft_degC"] == truth["bft_degC"]
    assert not folders[1].exists()


def test_coma_grows_linearly_with_h_and_constant_terms_do_not():
    th = np.array([0.25, 0.5, 1.0]) * 18.89
    coma = _only(1, 1).aberrations_nm(th, np.zeros(3))  # Z8 cos, Z7 sin
    np.testing.assert_allclose(coma[:, 7], 100.0 * th / 18.89, rtol=1e-12)
    np.testing.assert_allclose(coma[:, 6], 0.0, atol=1e-9)
    const = _only(1, 0, amp=30.0, angle=90.0).aberrations_nm(th, np.array([0.0, 45.0, 200.0]))
    np.testing.assert_allclose(const[:, 6], 30.0, rtol=1e-12)  # same everywhere, along sin
    astig = _only(0, 2).aberrations_nm(th, np.zeros(3))
    np.testing.assert_allclose(astig[:, 5], 100.0 * (th / 18.89) ** 2, rtol=1e-12)


def test_orientation_follows_m_phi_plus_its_own_angle():
    for term, m in ((0, 2), (1, 1), (2, 3)):
        j_cos, j_sin = NODAL_TERMS[term]
        z = _only(term, 3, angle=20.0).aberrations_nm(np.array([18.89]), np.array([30.0]))[0]
        phase = np.degrees(np.arctan2(z[j_sin - 1], z[j_cos - 1]))
        assert phase == pytest.approx((m * 30.0 + 20.0 + 180.0) % 360.0 - 180.0)
    # m = 0 odd powers: sigma . H, a tilt-like field dependence
    z = _only(3, 1, angle=0.0).aberrations_nm(np.array([18.89, 18.89]), np.array([0.0, 180.0]))
    np.testing.assert_allclose(z[:, 10], [100.0, -100.0], atol=1e-9)


def test_quadratic_thermal_response_reaches_z4():
    cam = NodalCamera.random(np.random.default_rng(2))
    th = cam.thermal
    assert th.q_um_per_degC2 != 0.0
    d_t = np.array([-10.0, 0.0, 10.0])
    dz = th.focal_shift_um(th.t0_degC + d_t)
    np.testing.assert_allclose(dz, th.s_um_per_degC * d_t + th.q_um_per_degC2 * d_t**2)
    z4 = cam.optics.zernikes_nm(5.0, 30.0, dz, np.array([700.0]))[:, 0, 3]
    np.testing.assert_allclose(z4 - z4[1], dz_to_z4_nm(dz, cam.optics.camera.f_number), rtol=1e-9)


def test_ccd_steps_tilt_and_chromatic_shift_move_the_focus():
    o = NodalOptics(ccd_piston_um=(5.0, -5.0, 0.0, 0.0), curvature_c2_um=0.0,
                    curvature_c4_um=0.0)  # fmt: skip
    from plato_sim.optics.camera import ccd_of_field

    th, ph = np.array([10.0, 10.0, 10.0, 10.0]), np.array([45.0, 135.0, 225.0, 315.0])
    ccd = ccd_of_field(o.camera, th, ph)[0]
    np.testing.assert_allclose(o.field_focal_offset_um(th, ph), np.array([0, 5, -5, 0, 0])[ccd])
    assert o.chromatic_shift_um(700.0) == 0.0 and o.chromatic_shift_um(1000.0) > 0


def test_random_cameras_and_designs_stay_in_their_ranges():
    for s in range(6):
        job = nodal_camera_job(11, s)
        cam, d = job["camera"], job["design"]
        assert 0.12 <= cam.diffusion_sigma_px <= 0.35 and 7 <= cam.thermal.s_um_per_degC <= 13
        assert 10 <= d.n_fields <= 40 and 5 <= d.n_dithers <= 25 and 1 <= d.frames_per_dither <= 4
        assert 2 <= d.n_plateaux <= 6 and -92 <= job["bft_degC"] <= -68
        assert NodalCamera.from_dict(json.loads(json.dumps(cam.to_dict()))) == cam
        sp = cam.spectrum(10)
        assert sp.n == 10 and sp.weights != ogse_spectrum(cam.optics.camera, 10).weights
    fixed = random_design(np.random.default_rng(0), plateaux_degC=(-90.0, -80.0))
    assert fixed.plateaux_degC == (-90.0, -80.0)


def test_the_engine_takes_22_terms_without_changing_the_11_term_result():
    eng = FastEngine(fov_px=12)
    sp = ogse_spectrum(eng.camera, 3)
    z = np.random.default_rng(0).normal(0.0, 40.0, (2, 3, 11))
    z22 = np.concatenate([z, np.zeros((2, 3, N_NODAL - 11))], axis=2)
    with torch.no_grad():
        a, b = eng.otf(z, sp), eng.otf(z22, sp)
    np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-6)
    z22[..., 21] = 50.0  # secondary spherical does change the PSF
    with torch.no_grad():
        assert not np.allclose(eng.otf(z22, sp).numpy(), a.numpy(), atol=1e-3)


def test_campaign_reads_back_with_its_truth(campaign):
    from plato_cnn.reader import read_campaign

    _, d, truth = campaign
    assert truth["family"] == "nodal" and "nodal" in truth and "perturbation" not in truth
    fr = read_campaign(d)
    assert len(fr) == truth["n_source_frames"] and np.all(fr.flags == 0)
    assert sorted(set(fr.obsid.tolist())) == truth["obsids"]
    from plato_sim.bounds import camera_from_truth

    with pytest.raises(ParameterError, match="design family"):
        camera_from_truth(truth)


def test_truth_is_the_argmax_of_the_field_averaged_expected_eef(campaign):
    _, _, truth = campaign
    cam = NodalCamera.from_dict(truth["nodal"])
    th, ph = np.asarray(truth["fields"]["theta_deg"]), np.asarray(truth["fields"]["phi_deg"])
    t_bf = truth["bft_degC"]
    temps = t_bf + np.linspace(-1.5, 1.5, 7)
    dz = cam.thermal.focal_shift_um(temps)
    sp = cam.spectrum(truth["n_wavelengths"])
    e = expected_eef(cam.optics, th[:, None], ph[:, None], dz[None, :], sp, cam.engine(), n_sub=2)
    e = e.mean(axis=0)
    assert int(np.argmax(e)) == 3
    assert e[3] == pytest.approx(truth["eef_max_expected"], abs=2e-3)
    # and the sidecar's thermal model is the camera's (T0 solved for that T_BF)
    assert cam.thermal.focal_shift_um(t_bf) == pytest.approx(truth["dz_th_at_bf_um"], abs=1e-6)


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(ParameterError, match="n_cameras"):
        emulate_out_of_family(tmp_path, 0)
    with pytest.raises(ParameterError, match="strength"):
        NodalCamera.random(np.random.default_rng(0), strength=-1.0)
    with pytest.raises(ParameterError, match="amp_nm"):
        replace(NodalOptics(), amp_nm=((1.0,),))
