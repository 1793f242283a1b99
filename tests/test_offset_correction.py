"""Per-camera offset correction (plato_cnn.offset_correction): a known bias per field and
focus is measured and removed, interpolated between plateaux; unknown fields; model and camera
checks; JSON round trip; bad input."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from plato_cnn.offset_correction import fit_offset_correction, load_offset_correction
from plato_sim.errors import DataError, ParameterError, PlatoFocusWarning

SHA = "ab" * 32
PLATEAUX = (-90.0, -85.0, -80.0, -75.0, -70.0)


def _frames(n_fields=8, plateaux=PLATEAUX, per_group=20, seed=0, camera="cam1", t_shift=0.0):
    rng = np.random.default_rng(seed)
    f = np.repeat(np.arange(n_fields), len(plateaux) * per_group)
    p = np.tile(np.repeat(np.arange(len(plateaux)), per_group), n_fields)
    theta = np.linspace(1.0, 18.0, n_fields)[f]
    phi = (45.0 * np.arange(n_fields))[f] % 360.0
    t = np.asarray(plateaux)[p] + t_shift + rng.normal(0, 0.01, len(f))
    return SimpleNamespace(field_id=f.astype(np.int32), obsid=(1000 + 11 * p).astype(np.int64),
                           field_theta_deg=theta, field_phi_deg=phi, temperature_degC=t,
                           camera=camera)  # fmt: skip


def _bias(fr, labels):
    """A network error that depends on the field and, non-linearly, on the focus (um)."""
    f = fr.field_id
    return 5.0 * np.cos(f) + 15.0 * np.exp(-((labels / 30.0) ** 2)) * (1 + 0.1 * f)


def _labels(fr, t_bf=-80.0):
    return 10.0 * (fr.temperature_degC - t_bf) + 3.0 * (fr.field_id - 4)  # um


def test_bias_of_each_field_and_plateau_measured_and_removed():
    fr = _frames()
    lab = _labels(fr)
    rng = np.random.default_rng(2)
    mu = lab + _bias(fr, lab) + rng.normal(0.0, 2.0, len(lab))
    corr = fit_offset_correction(fr, mu, lab, SHA)
    assert len(corr.theta_deg) == 8 and corr.plateau_degC == pytest.approx(PLATEAUX, abs=0.01)
    assert corr.spread_um > 5.0  # the bias it measured
    assert 0.3 < corr.noise_um < 0.6  # 2 um / sqrt(20)
    fixed = corr.apply(fr, mu, SHA)
    means = np.bincount(fr.field_id * 5 + (fr.obsid - 1000) // 11, fixed - lab) / 20
    # the earlier campaign itself: its labels (up to the interpolation over TRP1 jitter)
    assert np.abs(means).max() < 0.1
    # the camera's later campaign: focus moved by 0.4 degC (4 um), plateaux 1 degC warmer
    later = _frames(seed=5, t_shift=1.0)
    lab_b = _labels(later, t_bf=-79.6)
    mu_b = lab_b + _bias(later, lab_b) + np.random.default_rng(6).normal(0.0, 2.0, len(lab_b))
    before = np.abs(np.bincount(later.field_id, mu_b - lab_b) / 100).max()
    after = np.abs(np.bincount(later.field_id, corr.apply(later, mu_b, SHA) - lab_b) / 100)
    assert before > 8.0 and after.max() < 2.0


def test_weighted_cells_take_the_inverse_variance_mean():
    fr = _frames(per_group=2)
    lab = _labels(fr)
    first = np.arange(len(lab)) % 2 == 0  # each cell: one confident frame, one unsure
    err = np.where(first, 1.0, 4.0)
    sig = np.where(first, 1.0, 2.0)
    plain = fit_offset_correction(fr, lab + err, lab, SHA)
    weighted = fit_offset_correction(fr, lab + err, lab, SHA, sigma_um=sig)
    assert np.allclose(plain.offset_um, 2.5)
    assert np.allclose(weighted.offset_um, (1.0 + 4.0 / 4.0) / 1.25)  # weights 1 and 1/4
    # the standard error of the weighted mean from the frames' scatter (2 frames)
    m = 1.6
    se = np.sqrt(((1.0 * (1.0 - m)) ** 2 + (0.25 * (4.0 - m)) ** 2) / 1.25**2 * 2.0)
    assert weighted.noise_um == pytest.approx(se)
    assert plain.noise_um == pytest.approx(1.5)  # |1 - 4| / 2


def test_unknown_field_gets_mean_over_fields_and_camera_mismatch_warns(caplog):
    fr = _frames()
    lab = _labels(fr)
    corr = fit_offset_correction(fr, lab + 4.0, lab, SHA)
    assert corr.mean_offset_um == pytest.approx((4.0,) * 5)
    other = _frames(n_fields=2, camera="cam2")
    other.field_theta_deg = other.field_theta_deg + 0.5  # positions the table does not hold
    with caplog.at_level("WARNING"):
        back = corr.apply(other, np.full(len(other.field_id), 25.0), SHA)
    assert np.allclose(back, 21.0)
    assert "cam2" in caplog.text


def test_field_missing_a_plateau_interpolates_and_round_trip(tmp_path):
    fr = _frames()
    lab = _labels(fr)
    mu = lab + 10.0 * (fr.field_id == 0) * (fr.temperature_degC + 90.0) / 20.0
    keep = ~((fr.field_id == 0) & (fr.obsid == 1022))  # field 0 has no frame at -80 degC
    sub = SimpleNamespace(**{k: (v[keep] if isinstance(v, np.ndarray) else v)
                             for k, v in vars(fr).items()})  # fmt: skip
    corr = fit_offset_correction(sub, mu[keep], lab[keep], SHA)
    assert np.isnan(corr.offset_um[0][2])
    at = corr.per_frame(fr)[(fr.field_id == 0) & (fr.obsid == 1022)]
    assert np.allclose(at, 5.0, atol=0.05)  # halfway between -85 and -75
    corr = replace(corr, s_prior_um_per_degC=(9.5, 0.02))
    again = load_offset_correction(corr.save(tmp_path / "c.json"))
    assert np.allclose(again.per_frame(fr), corr.per_frame(fr))
    assert again.s_prior_um_per_degC == (9.5, 0.02)
    assert again.camera == corr.camera and again.plateau_degC == corr.plateau_degC


def test_other_model_and_bad_input_refused(tmp_path):
    fr = _frames()
    lab = _labels(fr)
    corr = fit_offset_correction(fr, lab + 1.0, lab, SHA)
    with pytest.raises(ParameterError, match="another model"):
        corr.apply(fr, lab, "cd" * 32)
    one = _frames(plateaux=(-80.0,))
    with pytest.raises(DataError, match="2 plateaux"):
        fit_offset_correction(one, _labels(one), _labels(one), SHA)
    with pytest.raises(DataError):
        fit_offset_correction(fr, lab, np.full(len(lab), np.nan), SHA)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError):
        load_offset_correction(tmp_path / "bad.json")


def test_recheck_measures_the_focus_change_on_the_earlier_physics():
    from plato_cnn.forward import solve_thermal

    fr = _frames()
    lab = _labels(fr)
    rng = np.random.default_rng(3)
    mu = lab + _bias(fr, lab) + rng.normal(0.0, 2.0, len(lab))
    thermal = dict(t_ref_degC=-80.0, b_um=0.0, s_um_per_degC=10.0, q_um_per_degC2=0.04)
    dz_best = [3.0 * (f - 4) for f in range(8)]  # so that the labels above are the physics
    first = dict(bft_degC=-80.0, sigma_degC=0.01, thermal=thermal, dz_best_um=dz_best)
    corr = replace(fit_offset_correction(fr, mu, lab, SHA), first=first)
    # the later campaign: the thermal focus moved by +6 um, one plateau
    later = _frames(plateaux=(-80.0,), seed=7)
    d = later.temperature_degC + 80.0
    lab_b = 10.0 * d + 0.04 * d * d + 6.0 - np.asarray(dz_best)[later.field_id]
    mu_b = lab_b + _bias(later, lab_b) + np.random.default_rng(8).normal(0.0, 2.0, len(lab_b))
    # this bias is a narrow bump in focus, flat at this plateau: corrected at its TRP1
    r = corr.recheck(later, mu_b, index="trp1")
    assert r["delta_um"] == pytest.approx(6.0, abs=1.0) and r["fields"] == 8
    truth = solve_thermal(thermal, -6.0, -80.0)  # dz(T) + 6 = dz(-80) = 0
    assert truth == pytest.approx(-80.6, abs=0.01)
    assert abs(r["bft_degC"] - truth) < 0.1 and r["sigma_degC"] >= 0.01
    with pytest.raises(DataError, match="no forward fit"):
        replace(corr, first=None).recheck(later, mu_b)
    with pytest.raises(ParameterError, match="index"):
        corr.recheck(later, mu_b, index="plateau")


def test_focus_indexed_recheck_follows_a_bias_that_grows_with_focus():
    """A network whose offsets are 30 % too large (a scale error, common out of family): at
    the later campaign's TRP1 the earlier bias is that of another focus; indexed by focus the
    re-check finds the focus change itself."""
    fr = _frames()
    lab = _labels(fr)
    rng = np.random.default_rng(4)
    mu = 1.3 * lab + rng.normal(0.0, 1.0, len(lab))
    thermal = dict(t_ref_degC=-80.0, b_um=0.0, s_um_per_degC=10.0, q_um_per_degC2=0.0)
    first = dict(bft_degC=-80.0, sigma_degC=0.01, thermal=thermal,
                 dz_best_um=[-3.0 * (f - 4) for f in range(8)])  # fmt: skip
    corr = replace(fit_offset_correction(fr, mu, lab, SHA), first=first)
    later = _frames(plateaux=(-85.0, -80.0, -75.0), seed=9)
    lab_b = _labels(later) + 8.0  # the thermal focus moved by +8 um: T_BF -80.8 degC
    mu_b = 1.3 * lab_b + np.random.default_rng(10).normal(0.0, 1.0, len(lab_b))
    at_trp1 = corr.recheck(later, mu_b, index="trp1")
    by_focus = corr.recheck(later, mu_b)
    assert at_trp1["delta_um"] == pytest.approx(1.3 * 8.0, abs=0.2)
    assert by_focus["delta_um"] == pytest.approx(8.0, abs=0.2) and by_focus["solutions"] == 1
    assert by_focus["bft_degC"] == pytest.approx(-80.8, abs=0.02)
    # a network that barely sees focus (its bias falls almost as fast as focus rises, where a
    # fixed-point iteration oscillates): the focus change is still the self-consistent one
    mu = 0.1 * lab + rng.normal(0.0, 0.2, len(lab))
    corr = replace(fit_offset_correction(fr, mu, lab, SHA), first=first)
    mu_b = 0.1 * lab_b + np.random.default_rng(11).normal(0.0, 0.2, len(lab_b))
    flat = corr.recheck(later, mu_b)
    assert flat["delta_um"] == pytest.approx(8.0, abs=0.5) and flat["solutions"] == 1


def test_recheck_sigma_divided_by_the_networks_sensitivity(monkeypatch):
    """A network that shows 1.3 or 0.1 of a focus change (its offsets scaled) has that
    sensitivity k = 1 - F'(delta); the sigma's corrected-mean terms are divided by it (by the
    floor 0.1 at most); below the threshold the re-check is flagged outside what the model
    knows and the report warns.  The TRP1 index reads no sensitivity (k = 1)."""
    import plato_cnn.offset_correction as oc
    from plato_cnn.predict import _recheck

    monkeypatch.setattr(oc, "RECHECK_SENSITIVITY_OUTSIDE", 0.5)
    thermal = dict(t_ref_degC=-80.0, b_um=0.0, s_um_per_degC=10.0, q_um_per_degC2=0.0)
    first = dict(bft_degC=-80.0, sigma_degC=0.01, thermal=thermal,
                 dz_best_um=[-3.0 * (f - 4) for f in range(8)])  # fmt: skip
    fr = _frames()
    lab = _labels(fr)
    later = _frames(plateaux=(-85.0, -80.0, -75.0), seed=9)
    lab_b = _labels(later) + 8.0
    out = {}
    for gain in (1.3, 0.1):
        rng = np.random.default_rng(4)
        corr = replace(fit_offset_correction(fr, gain * lab + rng.normal(0, 0.2, len(lab)), lab,
                                             SHA), first=first)  # fmt: skip
        mu_b = gain * lab_b + rng.normal(0.0, 0.2, len(lab_b))
        r = out[gain] = corr.recheck(later, mu_b)
        assert r["sensitivity"] == pytest.approx(gain, abs=0.03)
        scale = oc.sensitivity_scale(r["sensitivity"])
        assert scale == pytest.approx(max(gain, oc.SENSITIVITY_FLOOR), abs=0.03)
        assert r["sigma_degC"] == pytest.approx(oc.recheck_sigma_degC(
            r["sigma_fields_degC"], 0.01, 3, r["bft_degC"] + 80.0, r["spread_degC"],
            r["interp_degC"], scale))  # fmt: skip
        assert r["sigma_delta_um"] == pytest.approx(r["sigma_fields_degC"] * 10.0 / scale, rel=0.01)
        trp1 = corr.recheck(later, mu_b, index="trp1")
        assert trp1["sensitivity"] == 1.0 and not trp1["outside_model"]
        fit = SimpleNamespace(warnings=[])
        if gain < 0.5:
            with pytest.warns(PlatoFocusWarning, match="outside what the model knows"):
                assert _recheck(corr, later, mu_b, fit)["outside_model"]
            assert any("0.10 of a focus change" in w for w in fit.warnings)
        else:
            assert not _recheck(corr, later, mu_b, fit)["outside_model"] and not fit.warnings
    # the linear table has no interpolation error to speak of
    assert out[1.3]["interp_degC"] < 0.01 and out[0.1]["interp_degC"] < 0.01
    monkeypatch.setattr(oc, "RECHECK_SENSITIVITY_OUTSIDE", None)
    assert not corr.recheck(later, mu_b)["outside_model"]


def test_interpolation_remainder_of_a_quadratic_table_is_exact():
    """A quadratic y = a x^2 read linearly between nodes errs by a (x - x_j)(x_j+1 - x) on
    uneven nodes; a line not at all; 0 beyond the end nodes and with fewer than 3; a
    correction table quadratic in TRP1 gives each frame that remainder."""
    from plato_cnn.offset_correction import interpolation_remainder

    x = np.array([-10.0, -4.0, 0.0, 7.0, 15.0])
    xq = np.array([-12.0, -7.0, -4.0, -1.5, 3.0, 10.0, 16.0])
    got = interpolation_remainder(x, 0.3 * x**2 - x + 2.0, xq)
    j = np.clip(np.searchsorted(x, xq) - 1, 0, len(x) - 2)
    want = 0.3 * (xq - x[j]) * (x[j + 1] - xq)
    want[(xq <= x[0]) | (xq >= x[-1])] = 0.0
    assert got == pytest.approx(want, abs=1e-12) and got[0] == 0.0 and got[-1] == 0.0
    assert interpolation_remainder(x, 2.0 * x - 1.0, xq) == pytest.approx(0.0, abs=1e-12)
    assert not interpolation_remainder(x[:2], x[:2] ** 2, [-7.0]).any()
    fr = _frames()
    lab = _labels(fr)
    d = fr.temperature_degC + 80.0
    corr = fit_offset_correction(fr, lab + 0.2 * d**2, lab, SHA)
    later = _frames(plateaux=(-82.5,), seed=3)
    e = corr.interpolation_error(later)
    tq = later.temperature_degC
    assert e == pytest.approx(0.2 * (tq + 85.0) * (-80.0 - tq), rel=0.02)


def test_campaign_with_other_field_positions_gets_no_recheck_but_a_warning():
    from plato_cnn.predict import _recheck

    fr = _frames()
    lab = _labels(fr)
    thermal = dict(t_ref_degC=-80.0, b_um=0.0, s_um_per_degC=10.0, q_um_per_degC2=0.0)
    first = dict(bft_degC=-80.0, sigma_degC=0.01, thermal=thermal, dz_best_um=[0.0] * 8)
    corr = replace(fit_offset_correction(fr, lab, lab, SHA), first=first)
    other = _frames(n_fields=3)
    other.field_theta_deg = other.field_theta_deg + 0.5
    fit = SimpleNamespace(warnings=[])
    with pytest.warns(PlatoFocusWarning, match="no re-check"):
        assert _recheck(corr, other, np.zeros(len(other.field_id)), fit) is None
    assert any("no re-check" in w for w in fit.warnings)
    assert _recheck(None, other, np.zeros(len(other.field_id)), fit) is None


def test_recheck_by_a_fine_tuned_network_is_flagged_uncalibrated():
    """The re-check's sigma was calibrated with networks not fine-tuned on the camera: a
    fine-tuned one's re-check says so (a warning and ``sigma_calibrated`` false), the same
    estimate otherwise."""
    import warnings

    from plato_cnn.predict import _recheck

    fr = _frames()
    lab = _labels(fr)
    thermal = dict(t_ref_degC=-80.0, b_um=0.0, s_um_per_degC=10.0, q_um_per_degC2=0.0)
    first = dict(bft_degC=-80.0, sigma_degC=0.01, thermal=thermal,
                 dz_best_um=list(3.0 * (np.arange(8) - 4)))  # fmt: skip
    corr = replace(fit_offset_correction(fr, lab, lab, SHA), first=first)
    later = _frames(seed=4)
    mu = _labels(later, t_bf=-79.6) - 3.0 * (later.field_id - 4)
    plain = SimpleNamespace(warnings=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = _recheck(corr, later, mu, plain)
    assert r["sigma_calibrated"] and not plain.warnings
    tuned = SimpleNamespace(warnings=[])
    with pytest.warns(PlatoFocusWarning, match="fine-tuned network"):
        rt = _recheck(corr, later, mu, tuned, fine_tuned=True)
    assert not rt["sigma_calibrated"] and len(tuned.warnings) == 1
    assert rt["bft_degC"] == r["bft_degC"] and rt["sigma_degC"] == r["sigma_degC"]


def test_recheck_sigma_takes_the_largest_calibrated_count_not_above(monkeypatch):
    import plato_cnn.offset_correction as oc

    table = {5: (0.04, 0.0, 0.0), 3: (0.03, 0.1, 0.0), 1: (0.12, 0.0, 0.5)}
    monkeypatch.setattr(oc, "RECHECK_SYSTEMATIC", table)
    assert oc.recheck_systematic_degC(4, 0.0) == pytest.approx(0.03)  # 3's entry
    assert oc.recheck_systematic_degC(3, -0.4) == pytest.approx(np.hypot(0.03, 0.04))
    assert oc.recheck_systematic_degC(6, 2.0) == pytest.approx(0.04)
    assert oc.recheck_systematic_degC(2, 0.0) == pytest.approx(0.12)
    # the spread form: a fraction of the correction's RMS (degC)
    assert oc.recheck_systematic_degC(1, 0.0, 0.4) == pytest.approx(np.hypot(0.12, 0.2))
    assert oc.recheck_systematic_degC(5, 0.0, 0.4) == pytest.approx(0.04)
    assert oc.recheck_sigma_degC(0.03, 0.04, 1, 0.0) == pytest.approx(
        np.sqrt(0.03**2 + 0.04**2 + 0.12**2)
    )
    # the TRP1 index has its own table; sigma's corrected-mean terms are divided by the scale
    monkeypatch.setattr(oc, "RECHECK_SYSTEMATIC_TRP1", {1: (0.5, 0.0, 0.0)})
    assert oc.recheck_systematic_degC(3, 0.0, index="trp1") == pytest.approx(0.5)
    assert oc.recheck_sigma_degC(0.03, 0.04, 1, 0.0, 0.0, 0.0, 1.0, "trp1") == pytest.approx(
        np.sqrt(0.03**2 + 0.04**2 + 0.5**2)
    )
    assert oc.recheck_sigma_degC(0.03, 0.04, 1, 0.0, 0.0, 0.05, 0.5) == pytest.approx(
        np.sqrt(0.04**2 + (0.03**2 + 0.05**2 + 0.12**2) / 0.25)
    )
    monkeypatch.setattr(oc, "RECHECK_SYSTEMATIC", {})
    assert oc.recheck_systematic_degC(5, 1.0) is None
    assert oc.recheck_sigma_degC(0.03, 0.04, 5, 1.0) == pytest.approx(0.05)
