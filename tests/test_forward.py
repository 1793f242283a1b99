"""The physics forward-model fit (plato_cnn.forward): recovery, noise, model misfit, bad input.

Small and fast: 5 field positions x 3 dithers x 1 frame on 3 plateaux, a 3-wavelength OGSE
spectrum and a 12-px image period in the generator, the truth and the fit alike (the fit's
cost is per optical state, wavelength and pupil size), 9 x 9 fitted boxes, a 4 x 4
sub-pixel grid for the expected EEF.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_builder import save_tiny_model

import plato_cnn.forward as fw
from plato_cnn.forward import forward_bft, physics_labels, thermal_shift_um
from plato_cnn.reader import CampaignFrames, DropReport, ObservationInfo
from plato_cnn.report import plot_forward_bft
from plato_sim.errors import InsufficientPlateaux, ParameterError, PlatoFocusWarning
from plato_sim.optics.model import CameraModel
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.fields import ground_test_fields
from plato_sim.truth.bestfocus import field_best_focus_um, t0_for_best_focus

N_LAMBDA = 3
N_SUB = 4
FOV_PX = 12
PLATEAUX = (-86.0, -80.0, -74.0)
FIT_KW = dict(
    n_wavelengths=N_LAMBDA, n_wavelengths_jacobian=N_LAMBDA, n_sub=N_SUB, max_iter=10,
    fov_px=FOV_PX, stamp_px=9,
)  # fmt: skip
#: numerical floor of the truth itself (bestfocus: parabola through a 5 um grid), degC
TRUTH_FLOOR_DEGC = 0.02


def _camera(seed: int, t_bf: float, theta, phi, sp, eng):
    cam = CameraModel.random(np.random.default_rng(seed), seed)
    return t0_for_best_focus(
        cam, t_bf, theta_deg=theta, phi_deg=phi, spectrum=sp, engine=eng, n_sub=N_SUB
    )


def _frames(cam, theta, phi, sp, eng, seed, noise=False, extra_nm=None, n_dith=3):
    """Frames of ``cam`` (CCD 3: focal-plane axes), optional Poisson + read noise + PRNU,
    optional extra Noll terms beyond Z11 (``{j: nm}``, constant over the field)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, t in enumerate(PLATEAUX):
        dz = float(cam.thermal.focal_shift_um(t))
        z = cam.optics.zernikes_nm(theta, phi, dz, sp.wavelengths_array_nm)
        if extra_nm:
            jmax = max(extra_nm)
            z = np.concatenate([z, np.zeros(z.shape[:2] + (jmax - z.shape[2],))], axis=2)
            for j, v in extra_nm.items():
                z[..., j - 1] = v
        with torch.no_grad():
            otf = eng.otf(z, sp)
            offs = rng.uniform(-0.5, 0.5, (len(theta), n_dith, 2))
            st = eng.stamps_from_otf(otf, sp, offs, 17).numpy()
        for f in range(len(theta)):
            for d in range(n_dith):
                img = np.zeros((32, 32))
                img[8:25, 8:25] = 8e5 * np.clip(st[f, d], 0, None)
                if noise:
                    img = rng.poisson(img * (1 + 0.01 * rng.standard_normal(img.shape)).clip(0))
                    img = img + rng.normal(0.0, 50.0 * np.sqrt(1.5), img.shape)
                rows.append((img, t + rng.normal(0, 0.01), f, k))
    n = len(rows)
    obsid = np.array([1000 + 11 * r[3] for r in rows], np.int64)
    fid = np.array([r[2] for r in rows], np.int32)
    obs = [
        ObservationInfo(1000 + 11 * k, None, n // 3, t, 0.02, False) for k, t in enumerate(PLATEAUX)
    ]
    return CampaignFrames(
        stamps=np.stack([r[0] for r in rows]).astype(np.float32),
        temperature_degC=np.array([r[1] for r in rows]),
        time_s=np.arange(n, dtype=float),
        obsid=obsid,
        field_id=fid,
        field_theta_deg=np.asarray(theta)[fid],
        field_phi_deg=np.asarray(phi)[fid],
        ccd=np.full(n, 3, np.int8),
        row=np.full(n, 1000.0),
        col=np.full(n, 1000.0),
        flags=np.zeros(n, np.uint16),
        peak_e=np.ones(n, np.float32),
        cube_index=np.zeros(n, np.int32),
        frame_index=np.arange(n, dtype=np.int32),
        cube_paths=[],
        camera="fwtest",
        site="TEST",
        observations=obs,
        drops=DropReport(),
    )


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    eng = FastEngine(fov_px=FOV_PX)
    sp = ogse_spectrum(eng.camera, N_LAMBDA)
    theta, phi = ground_test_fields(5)
    cam, bf = _camera(5, -79.2, theta, phi, sp, eng)
    return dict(eng=eng, sp=sp, theta=theta, phi=phi, cam=cam, bf=bf)


def _true_wavefront(s, t_degC):
    """The camera's Noll coefficients (nm) at each field, ``(F, 11)`` (Z5..Z11 do not depend
    on the wavelength: only Z4 carries the chromatic shift)."""
    cam = s["cam"]
    dz = float(cam.thermal.focal_shift_um(t_degC))
    return cam.optics.zernikes_nm(s["theta"], s["phi"], dz, np.array([700.0]))[:, 0, :]


@pytest.fixture(scope="module")
def noise_free(setup):
    s = setup
    fr = _frames(s["cam"], s["theta"], s["phi"], s["sp"], s["eng"], seed=1)
    return fr, forward_bft(fr, field_focus=True, **FIT_KW)


def test_noise_free_recovers_wavefront_and_bft(setup, noise_free):
    s = setup
    fr, rep = noise_free
    cam = s["cam"]
    assert abs(rep["bft_degC"] - s["bf"].bft_degC) < TRUTH_FLOOR_DEGC
    assert abs(rep["params"]["s_um_per_degC"] - cam.thermal.s_um_per_degC) < 0.05
    assert abs(rep["params"]["diffusion_sigma_px"] - 0.2) < 0.01
    # each field's fitted wavefront (smooth model + that field's residual) is the camera's
    z_true = _true_wavefront(s, rep["bft_degC"])
    for f, row in enumerate(rep["wavefront"]):
        for j in range(5, 12):
            assert abs(row[f"Z{j}_nm"] - z_true[f, j - 1]) < 4.0, (f, j)
        for j in range(12, 23):  # the camera has none: the fit finds none
            assert abs(row[f"Z{j}_nm"]) < 4.0, (f, j)
    assert not rep["outside_model"]
    assert len(rep["diagnostics"]["runs"]) == 1  # no restart when the first run fits
    keys = ("fit", "bft_degC", "sigma_degC", "obsids", "frames_used", "sign_ambiguous")
    keys += ("s_um_per_degC", "s_sigma_um_per_degC", "s_measured", "n_plateaux", "warnings")
    assert all(k in rep for k in keys)
    assert len(rep["wavefront"]) == 5 and "Z22_nm" in rep["wavefront"][0]
    assert set(rep["chi2"]["per_plateau"]) == {"1000", "1011", "1022"}


def test_smooth_model_alone_recovers_its_coefficients(setup):
    s = setup
    fr = _frames(s["cam"], s["theta"], s["phi"], s["sp"], s["eng"], seed=1)
    rep = forward_bft(fr, field_residuals=False, **FIT_KW)
    assert rep["field_residuals"] is False
    p, cam = rep["params"], s["cam"]
    pert, des = cam.optics.perturbation, cam.optics.design
    assert abs(rep["bft_degC"] - s["bf"].bft_degC) < TRUTH_FLOOR_DEGC
    assert abs(p["s_um_per_degC"] - cam.thermal.s_um_per_degC) < 0.02
    assert abs(p["astig_A_nm"] - des.astig_nm * pert.astig_scale) < 3.0
    assert abs(p["coma_C_nm"] - des.coma_nm * pert.coma_scale) < 3.0
    assert abs(p["sph_0_nm"] - des.spherical0_nm * pert.spherical_scale - pert.extra_nm[6]) < 5.0
    assert abs(p["Z5_0_nm"] - pert.extra_nm[0]) < 3.0
    assert abs(p["Z8_0_nm"] - pert.extra_nm[3]) < 3.0
    assert abs(p["Z9_0_nm"] - pert.extra_nm[4]) < 3.0
    assert abs(p["Z10_0_nm"] - pert.extra_nm[5]) < 3.0
    assert abs(p["diffusion_sigma_px"] - 0.2) < 0.01
    assert not rep["outside_model"]


@pytest.fixture(scope="module")
def noisy(setup):
    s = setup
    fr = _frames(s["cam"], s["theta"], s["phi"], s["sp"], s["eng"], seed=2, noise=True)
    return fr, forward_bft(fr, **FIT_KW)


def test_noisy_within_reported_sigma(setup, noisy):
    s = setup
    fr, rep = noisy
    err = rep["bft_degC"] - s["bf"].bft_degC
    assert rep["sigma_degC"] > 0
    assert abs(err) <= 3.0 * rep["sigma_degC"] + TRUTH_FLOOR_DEGC
    assert 0.7 < rep["chi2"]["reduced"] < 1.3
    assert not rep["outside_model"]


def test_two_plateaux_hold_q_at_zero_and_carry_its_prior_in_sigma(setup, noisy):
    """Two plateaux pin the thermal focus at two temperatures only: q is not fitted, and its
    prior enters sigma as q (T_BF - T1)(T_BF - T2) / s."""
    s = setup
    fr, five = noisy
    two = forward_bft(fr, plateaux=PLATEAUX[:2], **FIT_KW)
    assert two["q_fixed"] and not five["q_fixed"] and five["sigma_q_prior_degC"] is None
    assert two["params"]["q_um_per_degC2"] == 0.0
    t1, t2 = PLATEAUX[:2]
    expect = fw.Q_PRIOR_UM_PER_DEGC2 * abs((two["bft_degC"] - t1) * (two["bft_degC"] - t2))
    assert two["sigma_q_prior_degC"] == pytest.approx(expect / two["s_um_per_degC"], rel=0.05)
    assert two["sigma_degC"] >= two["sigma_q_prior_degC"]
    assert abs(two["bft_degC"] - s["bf"].bft_degC) <= 3.0 * two["sigma_degC"] + TRUTH_FLOOR_DEGC
    assert any("curvature" in w for w in two["warnings"])


def test_aberration_outside_basis_is_flagged(setup, monkeypatch):
    s = setup
    # a calibrated chi^2 range that ends below this camera's: its sigma is no longer credible
    monkeypatch.setattr(fw, "MISFIT_CHI2_CALIBRATED", {"5": 1.5, "3": 1.5, "2": 1.5, "1": 1.5})
    fr = _frames(
        s["cam"], s["theta"], s["phi"], s["sp"], s["eng"], seed=3, noise=True,
        extra_nm={23: 150.0, 24: -120.0},
    )  # fmt: skip
    with pytest.warns(PlatoFocusWarning, match="chi"):
        rep = forward_bft(fr, **(FIT_KW | dict(max_iter=30)))
    assert rep["diagnostics"]["converged"]  # the chi^2 is the basis's, not an unfinished fit's
    assert rep["outside_model"]
    assert rep["chi2"]["reduced"] > 1.5
    assert any("chi^2" in w for w in rep["warnings"])
    # before giving that verdict the fit was restarted from other starting points (a local
    # minimum would look the same); the kept run is the one with the lowest chi^2
    runs = rep["diagnostics"]["runs"]
    assert len(runs) >= 3 and all(r["chi2_reduced"] > 1.5 for r in runs)
    # beyond the (here lowered) calibrated range: the scan's other basins were tried too
    extra = runs[3:]
    assert 1 <= len(extra) <= 1 + fw.OTHER_BASINS
    assert all(r.get("other_basin") or r.get("wide_scan") for r in extra)
    assert min(r["chi2_reduced"] for r in runs) == pytest.approx(rep["chi2"]["reduced"], rel=1e-3)
    assert rep["beyond_calibration"]
    assert rep["sigma_degC"] >= fw.UNCALIBRATED_SIGMA_DEGC
    assert any("beyond the range" in w for w in rep["warnings"])


def test_bad_input_raises_project_errors(setup):
    s = setup
    fr = _frames(s["cam"], s["theta"], s["phi"], s["sp"], s["eng"], seed=4, n_dith=1)
    few = fr.select(np.arange(len(fr)) < 3)
    with pytest.raises(InsufficientPlateaux, match="usable frames"):
        forward_bft(few, **FIT_KW)
    none = fr.select(np.zeros(len(fr), bool) | (fr.flags != 0))
    with pytest.raises((InsufficientPlateaux, Exception)):
        forward_bft(none, **FIT_KW)


def test_report_is_json_and_plot_keeps_the_backend(noisy, tmp_path):
    import json

    import matplotlib

    fr, rep = noisy
    json.dumps(rep)
    backend = matplotlib.get_backend()
    fig = plot_forward_bft(rep, fr)
    assert matplotlib.get_backend() == backend
    assert len(fig.axes) >= 4
    fig.savefig(tmp_path / "forward.png", dpi=60)
    assert (tmp_path / "forward.png").stat().st_size > 1000


def test_systematic_term_is_added_in_quadrature(noisy):
    import math

    from plato_cnn.forward import SYSTEMATIC_SIGMA_DEGC

    _, rep = noisy
    sys_sigma = SYSTEMATIC_SIGMA_DEGC.get(str(rep["n_plateaux"]))
    if sys_sigma is None:
        assert rep["sigma_degC"] == rep["sigma_stat_degC"]
        assert any("systematic" in w for w in rep["warnings"])
    else:
        assert rep["sigma_degC"] == pytest.approx(math.hypot(rep["sigma_stat_degC"], sys_sigma))
        assert not any("systematic" in w for w in rep["warnings"])
    # the named steps of the fit are timed
    steps = {"setup", "start", "levenberg_marquardt", "covariance", "t_bf", "report"}
    assert steps <= set(rep["diagnostics"]["timing_s"])


def test_jacobian_pass_alone_matches_the_joint_one(setup):
    from plato_cnn.forward import ForwardModel
    from plato_sim.optics.wavefront import FieldAberrations

    s = setup
    m = ForwardModel(s["theta"], s["phi"], s["sp"], s["eng"], FieldAberrations(), -80.0)
    p = m.initial_params(-20.0)
    u = m.local_matrix(np.arange(len(s["theta"])), np.full(len(s["theta"]), -80.0)) @ p
    o, j = m.otf(u, with_jac=True)
    assert torch.equal(m.jac(u), j)
    assert torch.equal(o, m.otf(u))
    assert torch.allclose(o, s["eng"].otf(m.zernikes(torch.as_tensor(u, dtype=m.dtype)), s["sp"]))


def test_systematic_table_gives_68_percent_coverage():
    from plato_cnn.pipelines.calibrate_forward import systematic_from_errors

    rng = np.random.default_rng(0)
    per_cam = []
    for _ in range(200):
        stat = 0.002
        e = {n: (float(rng.normal(0, 0.02 if n != "1" else 0.3)), stat, 1.0) for n in "5321"}
        per_cam.append(e)
    tab = systematic_from_errors(per_cam)
    for n in "5321":
        assert 0.66 <= tab[n]["coverage"] <= 0.70
        assert tab[n]["coverage_stat_only"] < 0.2
    assert tab["5"]["systematic_sigma_degC"] == pytest.approx(0.02, rel=0.2)
    assert tab["1"]["systematic_sigma_degC"] == pytest.approx(0.3, rel=0.2)
    assert tab["5"]["frac_outside_model"] is None  # kept results without the flag
    flagged = [{n: (*c[n], 2.0, i % 4 == 0) for n in c} for i, c in enumerate(per_cam)]
    assert systematic_from_errors(flagged)["3"]["frac_outside_model"] == pytest.approx(0.25)
    assert systematic_from_errors(flagged, outside=True)["3"]["n_fits"] == 50
    within = systematic_from_errors(flagged, outside=False)["3"]
    assert within["n_fits"] == 150 and within["frac_outside_model"] == 0.0
    assert systematic_from_errors(per_cam, outside=True) == {}  # no flags kept: no fits


def test_misfit_term_scales_with_the_chi2_excess_and_covers_68_percent(monkeypatch):
    """Flagged fits whose errors grow as sqrt(chi2 - 1): the calibrated coefficient covers
    68 % of them; the method's term is the constant within the model and the coefficient
    times sqrt(chi2 - 1) outside it."""
    from plato_cnn.pipelines.calibrate_forward import misfit_from_errors

    rng = np.random.default_rng(1)
    per_cam = []
    for i in range(300):
        chi2 = float(rng.uniform(1.6, 40.0))
        e = float(rng.normal(0, 0.02 * np.sqrt(chi2 - 1)))
        per_cam.append({n: (e, 0.001, 1.0, chi2, i % 3 != 0) for n in "5321"})
    tab = misfit_from_errors(per_cam)
    assert tab["5"]["n_fits"] == 200 and 0.66 <= tab["5"]["coverage"] <= 0.70
    assert tab["5"]["misfit_sigma_degC"] == pytest.approx(0.02, rel=0.15)
    assert misfit_from_errors([{n: (0.1, 0.01, 1.0) for n in "5321"}]) == {}  # no flags
    monkeypatch.setitem(fw.MISFIT_SIGMA_DEGC, "3", 0.02)
    monkeypatch.setitem(fw.SYSTEMATIC_SIGMA_DEGC, "3", 0.004)
    assert fw.systematic_term_degC(3, 10.0, True) == pytest.approx(0.06)
    assert fw.systematic_term_degC(3, 10.0, False) == 0.004
    assert fw.systematic_term_degC(3, 0.9, True) == 0.0
    assert fw.systematic_term_degC(4, 10.0, True) is None
    # beyond the chi^2 range the term was calibrated on: the width of the fit's search
    monkeypatch.setitem(fw.MISFIT_CHI2_CALIBRATED, "3", 20.0)
    assert fw.beyond_calibration(3, 25.0) and not fw.beyond_calibration(3, 20.0)
    assert fw.systematic_term_degC(3, 25.0, True) == fw.UNCALIBRATED_SIGMA_DEGC
    assert fw.systematic_term_degC(3, 25.0, False) == 0.004  # a verdict within the model
    assert fw.UNCALIBRATED_SIGMA_DEGC > 10.0  # wider than any plateau spacing
    # a count without its own range takes the narrowest
    narrowest = min(fw.MISFIT_CHI2_CALIBRATED.values())
    assert fw.beyond_calibration(4, narrowest + 1.0) and not fw.beyond_calibration(4, narrowest)


def test_unconverged_fit_says_so(setup):
    s = setup
    fr = _frames(s["cam"], s["theta"], s["phi"], s["sp"], s["eng"], seed=1)
    with pytest.warns(PlatoFocusWarning, match="before convergence"):
        rep = forward_bft(fr, **(FIT_KW | dict(max_iter=1)))
    assert rep["diagnostics"]["converged"] is False
    assert any("max_iter=1" in w for w in rep["warnings"])


def test_physics_labels_are_each_frames_offset_from_its_fields_best_focus(setup, noise_free):
    """The fine-tuning labels from the fitted optics match the camera's own (noise-free)."""
    s = setup
    fr, rep = noise_free
    cam = s["cam"]
    best, _ = field_best_focus_um(cam.optics, s["theta"], s["phi"], s["sp"], s["eng"], N_SUB)
    truth = cam.thermal.focal_shift_um(fr.temperature_degC) - best[fr.field_id]
    lab = physics_labels(fr, rep)
    assert rep["field_focus"]["n_sub"] == N_SUB
    # labels span ~+-60 um here; the fit places each field's best focus within ~0.5 um
    assert np.ptp(truth) > 50.0
    assert np.sqrt(np.mean((lab - truth) ** 2)) < 0.5
    # dz_th(T) of the block is the fitted thermal model
    ff = rep["field_focus"]
    t = np.array([-85.0, -75.0])
    d = t - ff["thermal"]["t_ref_degC"]
    expect = ff["thermal"]["b_um"] + ff["thermal"]["s_um_per_degC"] * d
    expect = expect + ff["thermal"]["q_um_per_degC2"] * d * d
    assert np.allclose(thermal_shift_um(ff, t), expect)
    # a frame at a field position the fit did not see has no label; no block: an error
    other = fr.select(np.arange(len(fr.stamps)) < 2)
    other.field_theta_deg[:] = 17.9
    assert np.isnan(physics_labels(other, rep)).all()
    with pytest.raises(ParameterError, match="field_focus"):
        physics_labels(fr, {k: v for k, v in rep.items() if k != "field_focus"})


def test_command_line_forward_field_focus_feeds_finetune(tmp_path):
    """plato-cnn bft --method forward --field-focus writes a report (validated against the
    shipped schema by conftest) whose physics labels plato-cnn finetune --forward-json and
    plato-cnn offset-correction use."""
    import json

    from plato_cnn.cli import main
    from plato_cnn.nn.card import load_model
    from plato_sim.scenes.ground_test import emulate_campaign

    camp = tmp_path / "camp"
    emulate_campaign(
        camp, camera_name="fwcli", bft_degC=-79.0, n_fields=2, n_dithers=2,
        frames_per_dither=1, window_px=32, seed=4, n_sub_truth=2,
    )  # fmt: skip
    rep = tmp_path / "fw.json"
    assert main(["bft", str(camp), "--method", "forward", "--field-focus", "--no-cross-check",
                 "--json", str(rep)]) == 0  # fmt: skip
    r = json.loads(rep.read_text())
    assert len(r["field_focus"]["dz_th_best_um"]) == 2 and r["field_focus"]["n_sub"] == 4
    base = save_tiny_model(tmp_path / "base", template=False)
    out = tmp_path / "ft"
    assert main(["finetune", "--campaign", str(camp), "--forward-json", str(rep), "--model",
                 str(base), "--out", str(out), "--epochs", "1"]) == 0  # fmt: skip
    _, desc = load_model(out)
    assert desc["finetune"]["forward"][0]["bft_degC"] == r["bft_degC"]
    # the CNN checked against the forward fit of the same frames
    cnn = tmp_path / "cnn.json"
    assert main(["bft", str(camp), "--method", "cnn", "--model", str(out), "--no-cross-check",
                 "--cross-check-forward", "--json", str(cnn)]) == 0  # fmt: skip
    c = json.loads(cnn.read_text())["cross_check_forward"]
    assert c["ran"] and c["forward_bft_degC"] == pytest.approx(r["bft_degC"], abs=1e-6)
    # re-check of a known camera: the shipped model's offset correction measured on this
    # campaign with the same report, then used by bft; another model's predictions refused
    corr = tmp_path / "corr.json"
    assert main(["offset-correction", "--campaign", str(camp), "--forward-json", str(rep),
                 "--out", str(corr)]) == 0  # fmt: skip
    fixed = tmp_path / "fixed.json"
    assert main(["bft", str(camp), "--method", "cnn", "--offset-correction", str(corr),
                 "--no-cross-check", "--json", str(fixed)]) == 0  # fmt: skip
    f = json.loads(fixed.read_text())
    assert f["offset_correction"]["camera"] == "fwcli"
    assert f["plateau_head_correction_um"] is None  # superseded by the camera's own correction
    s_prior = json.loads(corr.read_text())["s_prior_um_per_degC"]
    assert f["s_prior_um_per_degC"] == pytest.approx(s_prior)  # its own fit of the campaign
    # the same campaign re-checked: no focus change, the forward T_BF it was measured on
    assert f["recheck"]["delta_um"] == pytest.approx(0.0, abs=0.01)  # um
    assert f["recheck"]["bft_degC"] == pytest.approx(r["bft_degC"], abs=1e-3)
    assert main(["bft", str(camp), "--method", "cnn", "--model", str(out), "--offset-correction",
                 str(corr), "--no-cross-check"]) == 2  # fmt: skip


def test_calibration_cache_is_reused_only_for_the_same_truth(tmp_path, monkeypatch):
    """A camera's kept calibration errors are reused on a rerun, and recomputed when its
    truth changed (a campaign emulated again) instead of being scored against the old one."""
    import plato_cnn.forward as fw
    import plato_cnn.reader as reader
    from plato_cnn.pipelines.calibrate_forward import forward_camera_errors

    calls = []

    def fake_fit(fr, plateaux=None, systematic=False):
        calls.append(plateaux)
        return {"bft_degC": -80.0, "sigma_degC": 0.01, "chi2": {"reduced": 1.1},
                "outside_model": False}  # fmt: skip

    monkeypatch.setattr(fw, "forward_bft", fake_fit)
    monkeypatch.setattr(reader, "read_campaign", lambda d: None)
    folder = str(tmp_path / "cam")
    first = forward_camera_errors((folder, -80.5))
    n = len(calls)
    assert n == 4 and first["5"][0] == pytest.approx(0.5)
    assert forward_camera_errors((folder, -80.5)) == first and len(calls) == n  # reused
    again = forward_camera_errors((folder, -79.5))  # another truth: computed again
    assert len(calls) == 2 * n and again["5"][0] == pytest.approx(-0.5)


def test_calibration_reuses_earlier_fits_only_within_the_model(tmp_path, monkeypatch):
    """Fits kept by an earlier procedure are reused when they ended within the model (the
    current procedure makes the same fit); flagged ones, and results without chi^2, are
    fitted again."""
    import json

    import plato_cnn.forward as fw
    import plato_cnn.reader as reader
    from plato_cnn.pipelines.calibrate_forward import forward_camera_errors

    calls = []

    def fake_fit(fr, plateaux=None, systematic=False):
        calls.append(len(plateaux))
        return {"bft_degC": -80.0, "sigma_degC": 0.01, "chi2": {"reduced": 3.0},
                "outside_model": True}  # fmt: skip

    monkeypatch.setattr(fw, "forward_bft", fake_fit)
    monkeypatch.setattr(reader, "read_campaign", lambda d: None)
    folder = str(tmp_path / "cam")
    old = {"5": [0.01, 0.002, 9.0, 1.02, False], "3": [0.9, 0.002, 9.0, 40.0, True],
           "2": [0.02, 0.003, 9.0], "1": [0.3, 0.2, 9.0, 1.1, False]}  # fmt: skip
    v_old = fw.SAME_WITHIN_MODEL_SINCE
    path = f"{folder}.forward_errors.{fw.MODEL_TAG}.v{v_old}.json"
    with open(path, "w") as fh:
        json.dump({"truth_degC": -80.5, "errors": old}, fh)
    got = forward_camera_errors((folder, -80.5))
    assert list(got) == ["5", "3", "2", "1"]
    assert got["5"] == tuple(old["5"]) and got["1"] == tuple(old["1"])  # within: reused
    assert sorted(calls) == [2, 3]  # flagged and chi^2-less results fitted again
    assert got["3"][4] and got["2"][3] == 3.0
    calls.clear()
    forward_camera_errors((folder, -79.5))  # another truth: nothing reused
    assert len(calls) == 4


def test_wide_scan_restarts_a_fit_stuck_far_from_focus(monkeypatch):
    """When the +-10 um restarts still end above the chi^2 warning, the starting scan is
    repeated over +-WIDE_SCAN_HALF_RANGE_UM and the fit runs again from a new basin."""
    from types import SimpleNamespace

    import plato_cnn.forward as fw

    b = fw._IX["b_um"]
    truth_b = -180.0  # the basin a +-100 um scan around -110 cannot reach

    def lm_from(model, fit, p, n_t, o, prior, max_iter, tol, chunk):
        return SimpleNamespace(p=p.copy(), start=float(p[b]))

    def chi2(c, lm, chunk):
        return 1.02 if abs(lm.start - truth_b) < 15 else 1240.0

    scans = []

    def start(model, fit, p, n_t, t_pl, state_pl, chunk, half_range_um=100.0, scan=None):
        scans.append(half_range_um)
        q = p.copy()
        q[b] = truth_b if half_range_um >= 180 else -110.0
        return q, n_t, None

    monkeypatch.setattr(fw, "_levenberg_marquardt", lm_from)
    monkeypatch.setattr(fw, "_reduced_chi2", chi2)
    monkeypatch.setattr(fw, "_start", start)
    monkeypatch.setattr(fw, "_nuisance_step", lambda model, fit, q, n, o, chunk: n)
    model = SimpleNamespace(otf=lambda u: None)
    fit = SimpleNamespace(local=lambda q: q)
    c = SimpleNamespace(model=model, fit=fit, t_pl=None, state_pl=None)
    p = np.zeros(len(fw.PARAM_NAMES))
    p[b] = -110.0
    best = fw._fit_with_restarts(c, p, None, None, 10, 1e-6, 4, None)
    assert scans == [fw.WIDE_SCAN_HALF_RANGE_UM]
    assert best.start == truth_b and best.chi2_red == 1.02
    assert [r.get("wide_scan", False) for r in best.runs] == [False, False, False, True]


def test_a_fit_beyond_the_calibrated_chi2_starts_again_from_the_scans_other_basins(monkeypatch):
    """A fit still beyond the calibrated chi^2 range after its restarts and the wide scan runs
    again from the wide scan's other local minima, lowest cost first (the mirror-basin case:
    a 3-plateau scan whose lowest cost lies 60 um from the camera's basin)."""
    from types import SimpleNamespace

    b = fw._IX["b_um"]
    grid = np.arange(-200.0, 201.0, 10.0)
    # two basins: the lowest cost at -110 um (wrong), a second minimum at -50 um (right)
    costs = np.minimum(1.0 + 1e-3 * (grid + 110.0) ** 2, 1.05 + 1e-3 * (grid + 50.0) ** 2)

    def lm_from(model, fit, p, n_t, o, prior, max_iter, tol, chunk):
        return SimpleNamespace(p=p.copy(), start=float(p[b]))

    def chi2(c, lm, chunk):
        return 1.017 if abs(lm.start + 50.0) < 15 else 303.0

    def start(model, fit, p, n_t, t_pl, state_pl, chunk, half_range_um=100.0, scan=None):
        if scan is not None:
            scan.append((grid, costs))
        q = p.copy()
        q[b] = -110.0
        return q, n_t, None

    monkeypatch.setattr(fw, "_levenberg_marquardt", lm_from)
    monkeypatch.setattr(fw, "_reduced_chi2", chi2)
    monkeypatch.setattr(fw, "_start", start)
    monkeypatch.setattr(fw, "_nuisance_step", lambda model, fit, q, n, o, chunk: n)
    c = SimpleNamespace(
        model=SimpleNamespace(otf=lambda u: None),
        fit=SimpleNamespace(local=lambda q: q),
        t_pl=None,
        state_pl=None,
        n_pl=3,
    )
    p = np.zeros(len(fw.PARAM_NAMES))
    p[b] = -110.0
    best = fw._fit_with_restarts(c, p, None, None, 10, 1e-6, 4, None)
    assert best.start == -50.0 and best.chi2_red == 1.017
    assert [r["start_b_um"] for r in best.runs] == [-110.0, -100.0, -120.0, -50.0]
    assert best.runs[-1].get("other_basin")
    # the basins in cost order, those already tried left out
    assert fw._scan_basins(grid, costs, [], 20.0) == [-110.0, -50.0]
    assert fw._scan_basins(grid, costs, [-100.0], 20.0) == [-50.0]
    # a fit within the calibrated range never runs them
    monkeypatch.setitem(fw.MISFIT_CHI2_CALIBRATED, "3", 1000.0)  # 303 now within
    best = fw._fit_with_restarts(c, p, None, None, 10, 1e-6, 4, None)
    assert len(best.runs) == 3 and best.chi2_red == 303.0


def test_kept_fits_of_earlier_procedures_are_reused_only_where_unchanged():
    n = 3
    top = fw.MISFIT_CHI2_CALIBRATED[str(n)]
    assert fw.same_fit_as_current(fw.FIT_VERSION, 1e6, n)
    assert fw.same_fit_as_current(4, top - 1.0, n)  # fit 5 changed only what lies beyond
    assert not fw.same_fit_as_current(4, top + 1.0, n)
    assert fw.same_fit_as_current(3, 1.2, n) and not fw.same_fit_as_current(3, 2.0, n)
    # fit 6 changed the two-plateau fits only; without the plateau count it cannot be told
    assert fw.same_fit_as_current(5, 1.0, 5) and fw.same_fit_as_current(5, 1.0, 1)
    assert not fw.same_fit_as_current(5, 1.0, 2) and not fw.same_fit_as_current(5, 1.0)
    assert not fw.same_fit_as_current(2, 1.2, n) and not fw.same_fit_as_current(99, 1.0, n)


def test_calibration_tables_from_kept_results_alone(tmp_path, monkeypatch):
    """``kept_only`` fits nothing: a camera counts when its current results are all kept (or
    earlier fits the current procedure reproduces), the others are listed as skipped."""
    import json

    import plato_cnn.forward as fw
    import plato_cnn.pipelines.calibrate_forward as cf

    def no_fit(*a, **k):
        raise AssertionError("kept_only must not fit")

    monkeypatch.setattr(fw, "forward_bft", no_fit)
    folders = [str(tmp_path / f"cam{i}") for i in range(3)]
    monkeypatch.setattr(
        cf, "family_campaigns", lambda fam, work, n, workers: [(f, -80.0) for f in folders]
    )
    row = [0.01, 0.005, 1.0, 1.02, False]
    errs = {n: row for n in ("5", "3", "2", "1")}
    cur = f"{folders[0]}.forward_errors.{fw.MODEL_TAG}.v{fw.FIT_VERSION}.json"
    old = f"{folders[1]}.forward_errors.{fw.MODEL_TAG}.v{fw.SAME_WITHIN_MODEL_SINCE}.json"
    part = f"{folders[2]}.forward_errors.{fw.MODEL_TAG}.v{fw.SAME_WITHIN_MODEL_SINCE}.json"
    for path, e in ((cur, errs), (old, errs), (part, {**errs, "3": [0.9, 0.01, 1.0, 9.0, True]})):
        with open(path, "w") as fh:
            json.dump({"truth_degC": -80.0, "errors": e}, fh)
    res = cf.calibrate_forward_systematic(tmp_path, 3, 1, ("design-random",), kept_only=True)
    # the earlier procedure's fits are reproduced except with two plateaux (fit 6 changed
    # those): the second camera lacks its two-plateau fit and is skipped with the third
    assert sorted(cf._still_current(folders[1], -80.0)) == ["1", "3", "5"]
    assert res["n_cameras"] == 1 and res["cameras_skipped"] == folders[1:]
    assert [c["folder"] for c in res["per_camera"]] == folders[:1]
    assert res["by_plateaux"]["5"]["n_fits"] == 1


def test_cubic_chromatic_term_is_one_more_direction_and_parameter(setup):
    """``chromatic_cubic``: a global parameter after the others, mapped to one more local
    direction whose Z4 per wavelength is ``kz4 ((lambda - ref) / 100 nm)^3`` per um; without
    it the layout is unchanged."""
    from plato_cnn.forward import _N_DIRECT, LOCAL_TERMS, PARAM_NAMES, ForwardModel
    from plato_sim.optics.wavefront import FieldAberrations

    s = setup
    args = (s["theta"], s["phi"], s["sp"], s["eng"], FieldAberrations(), -80.0)
    plain, cubic = ForwardModel(*args), ForwardModel(*args, chromatic_cubic=True)
    assert plain.global_names == PARAM_NAMES and plain.local_terms == LOCAL_TERMS
    assert cubic.global_names == PARAM_NAMES + ("chrom_cub_um",)
    assert cubic.n_par == plain.n_par + 1
    p = np.zeros(cubic.n_par)
    p[cubic.n_g - 1] = 2.0
    u = cubic.local_matrix(np.array([0, 3]), np.array([-80.0, -75.0])) @ p
    assert np.all(u[:, _N_DIRECT + 2] == 2.0) and np.all(np.delete(u, _N_DIRECT + 2, 1) == 0)
    z4 = cubic.zernikes(torch.as_tensor(u, dtype=cubic.dtype))[..., 3].numpy()
    x = (s["sp"].wavelengths_array_nm - FieldAberrations().chrom_ref_nm) / 100.0
    np.testing.assert_allclose(z4, np.broadcast_to(2.0 * cubic.kz4 * x**3, z4.shape), rtol=1e-5)
