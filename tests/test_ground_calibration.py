"""The in-orbit check calibrated on the camera's ground test (plato_cnn.ground_calibration):
a known bias that depends on the field and on the focus is removed at the camera's present
focus (also after a launch shift, where reading it at the present TRP1 errs); field
interpolation; the TRP1 change from the ground thermal curve; JSON round trip; bad files;
the measurement on a real campaign; the command lines end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from campaign_builder import make_campaign

from plato_cnn import ground_calibration as gcal
from plato_cnn.cli import main as cnn_main
from plato_cnn.focuscheck import focus_check, inorbit_model_dir
from plato_cnn.nn.card import load_model
from plato_cnn.offset_correction import SENSITIVITY_FLOOR, sensitivity_scale
from plato_cnn.reader import read_campaign
from plato_sim.errors import DataError, ParameterError
from plato_sim.io.imagette_format import write_imagettes
from plato_sim.scenes import inorbit as im
from plato_sim.scenes import sampling

PLATEAUX = (-90.0, -85.0, -80.0, -75.0, -70.0)
THERMAL = dict(t_ref_degC=-80.0, b_um=0.0, s_um_per_degC=9.5, q_um_per_degC2=0.02)
BFT = -78.0


def _dz(t):
    d = np.asarray(t, float) - THERMAL["t_ref_degC"]
    return THERMAL["b_um"] + THERMAL["s_um_per_degC"] * d + THERMAL["q_um_per_degC2"] * d * d


GP = _dz(PLATEAUX) - _dz(BFT)  # the plateaux' common shifts (um)


def _bias(f, g):
    """A bias that depends on the field and, non-linearly, on the focus (um), linear
    between the plateaux (what the table can hold exactly)."""
    f, g = np.broadcast_arrays(np.asarray(f), np.asarray(g, float))
    nodes = 4.0 + 3.0 * np.cos(f[..., None]) + 6.0 * np.tanh(GP / 25.0) * (1 + 0.2 * f[..., None])
    return np.array(
        [np.interp(gi, GP, ni) for gi, ni in zip(g.ravel(), nodes.reshape(-1, 5), strict=True)]
    )


def _calibration(n_fields=8) -> gcal.GroundCalibration:
    theta = np.linspace(2.0, 18.0, n_fields)
    phi = (45.0 * np.arange(n_fields)) % 360.0
    gp = GP
    return gcal.GroundCalibration(
        camera="cam1", model_card_sha256="ab" * 32,
        theta_deg=tuple(theta), phi_deg=tuple(phi), plateau_degC=PLATEAUX,
        plateau_shift_um=tuple(gp),
        bias_um=tuple(tuple(_bias(np.full(5, f), gp)) for f in range(n_fields)),
        field_offset_um=tuple(0.5 * np.arange(n_fields) - 2.0), thermal=dict(THERMAL),
        ground_bft_degC=BFT, ground_bft_sigma_degC=0.01, spread_um=5.0, noise_um=0.3,
    )  # fmt: skip


def _stars(cal, g_true, n=400, seed=0, noise_um=2.0):
    """Stars at the ground positions: offsets = g - c + the field's bias at g + noise."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, len(cal.theta_deg), n)
    theta, phi = np.asarray(cal.theta_deg)[f], np.asarray(cal.phi_deg)[f]
    c = np.asarray(cal.field_offset_um)[f]
    mu = g_true - c + _bias(f, g_true) + rng.normal(0.0, noise_um, n)
    return mu, np.full(n, noise_um), theta, phi


def test_bias_read_at_the_present_focus_survives_a_launch_shift():
    cal = _calibration()
    # in orbit best focus moved by +1.5 degC: at TRP1 T the shift is not the ground's
    t_bf_orbit, t = BFT + 1.5, -77.0
    g_true = float(_dz(t) - _dz(t_bf_orbit))
    mu, sig, th, ph = _stars(cal, g_true)
    foc = gcal.corrected_shift(cal, mu, sig, th, ph, t, index="focus")
    trp1 = gcal.corrected_shift(cal, mu, sig, th, ph, t, index="trp1")
    assert foc["solutions"] >= 1 and not foc["warnings"]
    assert abs(foc["shift_um"] - g_true) < 3 * foc["sigma_stat_um"] + 0.05
    # read at TRP1, the table sits 1.5 degC off in focus: a bias of its own
    assert abs(trp1["shift_um"] - g_true) > 5 * abs(foc["shift_um"] - g_true) + 0.2
    raw = float(np.mean(mu + np.asarray(foc["field_offset_um"])))  # without the bias table
    assert abs(raw - g_true) > 2.0
    # and the TRP1 change follows the ground thermal curve moved to the present focus
    t_bf, slope = cal.best_focus_temperature(t, foc["shift_um"])
    assert t_bf == pytest.approx(t_bf_orbit, abs=0.05)
    assert slope == pytest.approx(9.5 + 2 * 0.02 * (t_bf + 80.0), rel=1e-3)


def test_without_launch_shift_both_indices_agree_and_outside_the_plateaux_warns():
    cal = _calibration()
    t = BFT + 2.0
    g_true = float(_dz(t) - _dz(BFT))
    mu, sig, th, ph = _stars(cal, g_true, seed=3)
    a = gcal.corrected_shift(cal, mu, sig, th, ph, t, index="focus")
    b = gcal.corrected_shift(cal, mu, sig, th, ph, t, index="trp1")
    assert a["shift_um"] == pytest.approx(b["shift_um"], abs=0.1)
    with pytest.raises(ParameterError, match="index"):
        gcal.corrected_shift(cal, mu, sig, th, ph, t, index="temperature")
    far = gcal.corrected_shift(cal, mu + 200.0, sig, th, ph, -60.0, index="trp1")
    assert any("outside the ground plateaux" in w for w in far["warnings"])


def test_field_interpolation_exact_at_a_ground_position_and_weighted_between():
    cal = _calibration()
    idx, w = cal.neighbours(cal.theta_deg[2], cal.phi_deg[2])
    assert idx[0, 0] == 2 and w[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert cal.field_offsets_at(idx, w)[0] == pytest.approx(cal.field_offset_um[2], abs=1e-5)
    idx, w = cal.neighbours([10.0, 0.0], [100.0, 0.0])
    assert idx.shape == (2, gcal.IDW_NEIGHBOURS) and np.allclose(w.sum(axis=1), 1.0)
    c = cal.field_offsets_at(idx, w)
    lo, hi = min(cal.field_offset_um), max(cal.field_offset_um)
    assert np.all((c >= lo) & (c <= hi))


def test_field_map_follows_a_curved_focal_surface_between_ground_positions():
    rng = np.random.default_rng(3)
    th, ph = rng.uniform(1.0, 18.0, 24), rng.uniform(0.0, 360.0, 24)

    def surface(t, p):  # field curvature and a saddle (um)
        h = np.asarray(t) / gcal.FIELD_RADIUS_DEG
        return 12.0 * h**2 - 4.0 + 3.0 * h**2 * np.cos(2 * np.radians(p))

    cal = gcal.GroundCalibration(**{**_calibration().__dict__, "theta_deg": tuple(th),
                                    "phi_deg": tuple(ph), "field_offset_um": tuple(surface(th, ph)),
                                    "bias_um": ((0.0,) * 5,) * 24})  # fmt: skip
    assert cal.field_offsets(th[:3], ph[:3]) == pytest.approx(surface(th[:3], ph[:3]), abs=1e-9)
    t, p = rng.uniform(2.0, 17.0, 200), rng.uniform(0.0, 360.0, 200)
    trend = cal.field_offsets(t, p) - surface(t, p)
    idw = cal.field_offsets_at(*cal.neighbours(t, p)) - surface(t, p)
    assert np.abs(trend).max() < 1e-6  # the surface lies in the trend's terms
    assert np.sqrt(np.mean(idw**2)) > 0.1  # what inverse-distance weighting alone misses


def test_round_trip_and_bad_files(tmp_path):
    cal = _calibration()
    bias = [list(r) for r in cal.bias_um]
    bias[1][3] = float("nan")  # a field without a frame on a plateau
    cal = gcal.GroundCalibration(**{**cal.__dict__, "bias_um": tuple(map(tuple, bias))})
    back = gcal.load_ground_calibration(cal.save(tmp_path / "g.json"))
    assert np.isnan(back.bias_um[1][3])
    assert back.theta_deg == cal.theta_deg and back.thermal == cal.thermal
    idx, w = back.neighbours([5.0], [30.0])
    assert np.isfinite(back.bias_at(idx, w, 0.0)).all()
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="not a ground calibration"):
        gcal.load_ground_calibration(tmp_path / "x.json")
    d = json.loads((tmp_path / "g.json").read_text())
    d["field_offset_um"] = d["field_offset_um"][:-1]
    (tmp_path / "y.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="inconsistent"):
        gcal.load_ground_calibration(tmp_path / "y.json")


def test_sensitivity_is_how_far_the_solution_moves_for_an_error_of_the_mean():
    """k = 1 + the stars' mean bias slope at the solution; an error e of every star's offset
    moves the focus-indexed shift by e / k, so its sigma is divided by k."""
    cal = _calibration()
    t = BFT + 1.0
    g_true = float(_dz(t) - _dz(BFT))
    mu, sig, th, ph = _stars(cal, g_true, seed=5, noise_um=0.5)
    a = gcal.corrected_shift(cal, mu, sig, th, ph, t, index="focus")
    f = np.rint(np.interp(th, np.asarray(cal.theta_deg), np.arange(len(cal.theta_deg))))
    slope = (_bias(f, a["shift_um"] + 0.5) - _bias(f, a["shift_um"] - 0.5)) / 1.0
    k = a["sensitivity"]
    assert k == pytest.approx(1.0 + np.sum(slope[a["kept"]]) / a["kept"].sum(), abs=1e-6)
    assert 0.5 < k < 1.5 and k != pytest.approx(1.0, abs=0.02)
    b = gcal.corrected_shift(cal, mu + 0.4, sig, th, ph, t, index="focus")
    assert b["shift_um"] - a["shift_um"] == pytest.approx(0.4 / k, rel=0.05)
    assert sensitivity_scale(k) == pytest.approx(abs(k))
    assert sensitivity_scale(0.01) == SENSITIVITY_FLOOR
    assert sensitivity_scale(0.01, "trp1") == 1.0 and not gcal.low_sensitivity(0.0, "trp1")
    assert gcal.low_sensitivity(0.5) is (gcal.SENSITIVITY_OUTSIDE is not None)


def test_interpolation_error_is_the_remainder_of_a_quadratic_table():
    """A bias quadratic in g is read linearly between plateaux with the error f''/2 (g - g_j)
    (g_j+1 - g) exactly; a linear table has none; beyond the plateaux it counts 0."""
    base = _calibration(n_fields=3)
    a = np.array([0.004, -0.01, 0.0])  # um per um^2; the third field linear in g
    table = tuple(tuple(a[f] * GP**2 + 0.3 * GP) for f in range(3))
    cal = gcal.GroundCalibration(**{**base.__dict__, "bias_um": table})
    idx, w = np.arange(3)[:, None], np.ones((3, 1))
    for g in (0.5 * (GP[1] + GP[2]), GP[3] - 3.0):
        j = int(np.searchsorted(GP, g)) - 1
        expected = np.abs(a) * (g - GP[j]) * (GP[j + 1] - g)
        got = cal.interpolation_error_at(idx, w, g)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        true = a * g**2 + 0.3 * g
        np.testing.assert_allclose(np.abs(cal.bias_at(idx, w, g) - true), expected, rtol=1e-9,
                                   atol=1e-9)  # fmt: skip
    assert np.all(cal.interpolation_error_at(idx, w, GP[-1] + 10.0) == 0.0)
    t = BFT + 1.0
    mu, sig, th, ph = _stars(cal, float(_dz(t) - _dz(BFT)), seed=2)
    r = gcal.corrected_shift(cal, mu, sig, th, ph, t)
    assert r["sigma_interp_um"] >= 0.0 and np.isfinite(r["sigma_interp_um"])


def test_flagged_ground_fit_widens_the_systematic_sigma_and_old_files_infer_the_flag(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(gcal, "GROUND_SYSTEMATIC_UM", 2.0)
    monkeypatch.setattr(gcal, "GROUND_OUTSIDE_MODEL_UM", 1.5)
    cal = _calibration()
    flagged = gcal.GroundCalibration(**{**cal.__dict__, "forward_outside_model": True})
    assert gcal.systematic_um(cal) == 2.0 and gcal.systematic_um() == 2.0
    assert gcal.systematic_um(flagged) == pytest.approx(2.5)
    assert gcal.systematic_um(cal, outside=True) == pytest.approx(2.5)  # the check's own flag
    back = gcal.load_ground_calibration(flagged.save(tmp_path / "f.json"))
    assert back.forward_outside_model is True
    # a file written before the flag was stored: the forward fit's chi^2 warning says it
    from plato_cnn.forward import OUTSIDE_MODEL_PHRASE

    for warnings, expected in (([f"images are {OUTSIDE_MODEL_PHRASE} (...)"], True), ([], False)):
        d = json.loads((tmp_path / "f.json").read_text())
        del d["forward_outside_model"]
        d["forward_warnings"] = warnings
        (tmp_path / "old.json").write_text(json.dumps(d))
        assert gcal.load_ground_calibration(tmp_path / "old.json").forward_outside_model is expected


# ----------------------------------------------------------------------------- with the model
@pytest.fixture(scope="module")
def ground(tmp_path_factory):
    """A small real campaign, a forward report's field_focus block for it (fabricated: the
    physics labels are what is tested here, not the fit) and its calibration."""
    root = tmp_path_factory.mktemp("ground")
    camp = make_campaign(root, n_fields=3, n_dithers=2)
    fr = read_campaign(camp)
    fr = fr.select(fr.usable)
    th, ph = np.unique(np.c_[fr.field_theta_deg, fr.field_phi_deg], axis=0).T
    report = {
        "bft_degC": BFT,
        "sigma_degC": 0.05,
        "warnings": [],
        "field_focus": {
            "theta_deg": list(th), "phi_deg": list(ph), "thermal": dict(THERMAL),
            "dz_th_best_um": list(_dz(BFT) + np.array([-2.0, 0.0, 3.0])[: len(th)]),
        },
    }  # fmt: skip
    (root / "forward.json").write_text(json.dumps(report))
    with sampling.single_thread_torch():
        cal = gcal.measure_ground_calibration(fr, report)
    return camp, root / "forward.json", report, fr, cal


def test_measured_on_a_campaign_with_the_in_orbit_model(ground):
    _, _, report, fr, cal = ground
    _, card = load_model(inorbit_model_dir())
    assert cal.model_card_sha256 == card.sha256() and cal.camera == fr.camera
    assert len(cal.theta_deg) == 3 and len(cal.plateau_degC) == 5
    assert np.all(np.diff(cal.plateau_shift_um) > 0)
    assert cal.plateau_shift_um[2] == pytest.approx(_dz(-80.0) - _dz(BFT), abs=0.1)
    assert sorted(cal.field_offset_um) == pytest.approx([-2.0, 0.0, 3.0])
    assert np.isfinite(np.asarray(cal.bias_um)).all() and cal.spread_um > 0
    with pytest.raises(ParameterError, match="field_focus"):
        gcal.measure_ground_calibration(fr, {k: v for k, v in report.items() if k != "field_focus"})


def test_focus_check_with_ground_calibration_and_its_command_line(ground, tmp_path, monkeypatch):
    camp, fwd, _, _, cal = ground
    with sampling.single_thread_torch():
        cam = im.make_camera(21, bft_degC=-78.0, exact=False, n_wavelengths=3)
        field = im.emulate_imagettes(cam, -77.0, 24, seed=5, n_wavelengths=4)
        other = gcal.GroundCalibration(**{**cal.__dict__, "model_card_sha256": "cd" * 32})
        with pytest.raises(ParameterError, match="another in-orbit model"):
            focus_check(field, -77.0, ground=other)
        fc = focus_check(field, -77.0, ground=cal)
    info = fc.ground_calibration
    assert info["index"] == "focus" and info["camera"] == "testcam"
    assert any("testcam" in w for w in fc.warnings)  # the imagettes are of another camera
    t_bf, _ = cal.best_focus_temperature(-77.0, fc.shift_um)
    assert fc.delta_t_degC == pytest.approx(t_bf + 77.0)
    scale = sensitivity_scale(info["sensitivity"])
    assert info["outside_model"] is info["low_sensitivity"]
    assert info["low_sensitivity"] is (info["sensitivity"] < gcal.SENSITIVITY_OUTSIDE)
    assert any("outside what" in w for w in fc.warnings) is info["low_sensitivity"]
    assert info["interpolation_um"] >= 0.0
    assert fc.shift_sigma_sys_um == pytest.approx(
        np.hypot(gcal.systematic_um(cal, outside=info["low_sensitivity"]),
                 info["interpolation_um"]) / scale
    )  # fmt: skip
    # a ground fit flagged outside the model: same shift, wider sigma, said in the report
    flagged = gcal.GroundCalibration(**{**cal.__dict__, "forward_outside_model": True})
    with sampling.single_thread_torch():
        fcf = focus_check(field, -77.0, ground=flagged)
    assert fcf.shift_um == fc.shift_um and fcf.ground_calibration["outside_model"] is True
    assert fcf.shift_sigma_sys_um == pytest.approx(
        np.hypot(gcal.systematic_um(flagged), info["interpolation_um"]) / scale
    )
    assert fcf.shift_sigma_sys_um >= fc.shift_sigma_sys_um
    assert any("outside what the model knows" in w for w in fcf.warnings)
    # a sensitivity below the calibrated range: the check's own flag, same estimate
    monkeypatch.setattr(gcal, "SENSITIVITY_OUTSIDE", info["sensitivity"] + 0.1)
    with sampling.single_thread_torch():
        fck = focus_check(field, -77.0, ground=cal)
    k_info = fck.ground_calibration
    assert k_info["low_sensitivity"] and k_info["outside_model"] and fck.shift_um == fc.shift_um
    assert any("stars follow" in w and "outside what" in w for w in fck.warnings)
    monkeypatch.undo()
    out = tmp_path / "g.json"
    assert cnn_main(["ground-calibration", "--campaign", str(camp), "--forward-json", str(fwd),
                     "--out", str(out)]) == 0  # fmt: skip
    np.testing.assert_allclose(np.asarray(gcal.load_ground_calibration(out).bias_um), cal.bias_um)
    img = write_imagettes(tmp_path / "f.fits", field)
    rep = tmp_path / "r.json"
    argv = ["focus-check", str(img), "--temperature-degC", "-77", "--ground-calibration", str(out)]
    assert cnn_main([*argv, "--json", str(rep)]) == 0
    r = json.loads(rep.read_text())
    assert r["ground_calibration"]["camera"] == "testcam"
    assert "ground campaign" in r["model_reliance"]["field_offsets"]
    (tmp_path / "bad.json").write_text("[]")
    assert cnn_main([*argv[:-1], str(tmp_path / "bad.json")]) == 2
