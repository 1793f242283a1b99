"""The field head: through-focus series, the network, its training, calibration and estimate.

The networks here are tiny and barely trained (the head's accuracy is measured by
benchmarks/out_of_family.py); these tests check the series' targets against the physics
labels, the head's invariances, and the plumbing from a dataset to a report.
"""

import json

import numpy as np
import pytest
import torch
from campaign_builder import make_campaign
from model_builder import save_tiny_model

from plato_cnn.cli import main
from plato_cnn.field_bft import field_head_bft, with_family_term
from plato_cnn.nn.card import load_model
from plato_cnn.nn.field_head import (
    FAMILY_TUNED,
    FieldHead,
    FieldHeadCard,
    FieldHeadConfig,
    feature_dim,
    field_series,
    load_field_head,
    network_digest,
    save_field_head,
    stamp_features,
)
from plato_cnn.pipelines.field_head import (
    FieldHeadTrainConfig,
    SeriesSet,
    calibrate_field_head,
    dataset_series,
    draw_batch,
    measure_family_term,
    train_field_head,
)
from plato_cnn.predict import unchecked_reason
from plato_cnn.reader import read_campaign
from plato_sim.errors import DataError, ModelFormatError, ParameterError
from plato_sim.generate import generate
from plato_sim.io.store import read_shard
from plato_sim.scenes import sampling

SERIES = {
    "shards": {"samples_per_shard": 24, "samples_per_optical_state": 2},
    "spectrum": {"n_wavelengths": 3},
    "best_focus": {"rings_h": [0.5, 0.8, 1.0], "azimuths": 5, "n_wavelengths": 3},
    "focus": {"dz_um": [-120.0, 120.0]},
    "field_series": {"states_per_field": 3},
}


def _tiny_model(d, seed: int):
    return save_tiny_model(d, seed)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("model"), 0)


@pytest.fixture(scope="module")
def series_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "ds"
    cfg = sampling.load_config(overrides=SERIES)
    generate(out, cfg, n=96, seed=3, workers=1, progress=False, camera_pool=2)
    return out


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return make_campaign(tmp_path_factory.mktemp("camp"), n_fields=3, n_dithers=2)


@pytest.fixture(scope="module")
def head_dir(series_ds, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("head")
    cfg = FieldHeadTrainConfig(steps=40, batch=16, holdout_every=2, hidden=8)
    train_field_head(series_ds, out, model_dir, cfg)
    return out


def test_series_targets_follow_the_thermal_model_of_each_field(series_ds, model_dir):
    """Each series holds one field position at several foci; its target is the TRP1 of that
    field's best focus: T_state - T_best = dz_from_best / s for these linear cameras."""
    net, _ = load_model(model_dir)
    s = dataset_series(series_ds, net)
    assert s.features.shape == (16, 3, feature_dim(net))
    stamps, lab, _ = read_shard(series_ds / "shard-00000.h5")
    first = lab[::2]  # two samples per state
    np.testing.assert_allclose(s.temperature_degC[:4].ravel(), first["temperature_degC"])
    want = first["temperature_degC"] - first["dz_from_best_um"] / first["s_um_per_degC"]
    np.testing.assert_allclose(np.repeat(s.t_best_degC[:4], 3), want, atol=1e-6)
    f = stamp_features(net, stamps[:2], lab["theta_deg"][:2], lab["phi_deg"][:2])
    np.testing.assert_allclose(s.features[0, 0], f.mean(0), rtol=1e-5, atol=1e-6)


def test_dataset_without_series_is_refused(tmp_path, model_dir):
    out = tmp_path / "ds"
    cfg = sampling.load_config(overrides={k: v for k, v in SERIES.items() if k != "field_series"})
    generate(out, cfg, n=24, seed=3, workers=1, progress=False, camera_pool=1)
    net, _ = load_model(model_dir)
    with pytest.raises(DataError, match="field_series"):
        dataset_series(out, net)


def test_head_ignores_the_order_of_plateaux_and_masked_ones():
    torch.manual_seed(1)
    head = FieldHead(FieldHeadConfig(feature_dim=5, hidden=8))
    x = torch.randn(2, 4, 5)
    dt = torch.randn(2, 4)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    out = head(x, dt, mask)
    perm = torch.tensor([2, 0, 1, 3])
    torch.testing.assert_close(head(x[:, perm], dt[:, perm], mask[:, perm])[0], out[0])
    junk = x.clone()
    junk[~mask] = 1e3
    torch.testing.assert_close(head(junk, dt + (~mask) * 7.0, mask), out)
    t_f, sig = head.predict(x.numpy(), -80 + 5 * np.arange(4)[None].repeat(2, 0), mask.numpy())
    assert t_f.shape == sig.shape == (2,) and np.all(sig > 0)


def _synthetic_series(n=400, k=8, seed=0):
    """Series whose foci are spread over +-200 um around best focus, as the dataset's."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(6.0, 14.0, n)
    t_best = rng.uniform(-84.0, -72.0, n)
    dz = np.sort(rng.uniform(-200.0, 200.0, (n, k)), axis=1)
    feats = rng.normal(size=(n, k, 3)).astype(np.float32)
    return SeriesSet(feats, t_best[:, None] + dz / s[:, None], t_best, np.arange(n))


def test_random_draws_are_unchanged_without_a_window():
    series = _synthetic_series()
    idx = np.arange(64)
    x, dt, mask, y, n = draw_batch(series, idx, np.random.default_rng(3))
    rng = np.random.default_rng(3)  # the draws of every head trained before windows
    n_ref = rng.integers(1, 6, 64)
    pick = np.argsort(rng.random((64, 8)), axis=1)[:, :5]
    np.testing.assert_array_equal(n, n_ref)
    np.testing.assert_array_equal(x.numpy(), series.features[idx[:, None], pick])


def test_windowed_draws_read_a_series_as_a_campaign_would():
    series = _synthetic_series()
    idx = np.arange(400)
    rng = np.random.default_rng(5)
    x, dt, mask, y, n = draw_batch(series, idx, rng, window=(8.0, 20.0, 1.0))
    m = mask.numpy()
    pos = []
    for i in range(len(idx)):
        t_all = series.temperature_degC[i]
        t = t_all[np.isin(series.features[i, :, 0], x[i, m[i], 0].numpy())]
        assert len(t) == n[i] >= 1
        if len(t) > 1:  # states of one window: within its largest width
            assert np.ptp(t) <= 20.0 + 1e-9
        pos.append((series.t_best_degC[i] - t.min()) / max(np.ptp(t), 1e-9))
    pos = np.asarray(pos)[n > 2]
    # the best focus falls near either end of the drawn states, not only in their middle
    assert np.mean(pos < 0.2) > 0.1 and np.mean(pos > 0.8) > 0.1
    # the fraction 0 leaves every series free, as without a window (same counts of states)
    _, _, _, _, n0 = draw_batch(series, idx, np.random.default_rng(5), window=(8.0, 20.0, 0.0))
    assert n0.max() == 5 and n0.min() == 1


def test_field_series_averages_each_field_and_plateau():
    feats = np.arange(12, dtype=np.float32).reshape(6, 2)
    fid = np.array([0, 0, 1, 1, 0, 1])
    pl = np.array([7, 7, 7, 9, 9, 9])
    t = np.array([-80.0, -80.2, -80.1, -70.0, -70.1, -69.9])
    ser = field_series(feats, fid, pl, t, np.array([1.0, 1, 2, 2, 1, 2]), np.zeros(6))
    np.testing.assert_allclose(ser.features[0, 0], [1.0, 2.0])  # frames 0 and 1
    np.testing.assert_allclose(ser.features[1, 1], [8.0, 9.0])  # frames 3 and 5
    np.testing.assert_allclose(ser.temperature_degC[0], [-80.1, -70.1])
    assert ser.mask.all() and ser.n_frames.tolist() == [[2, 1], [1, 2]]
    np.testing.assert_allclose(ser.theta_deg, [1.0, 2.0])


def test_train_calibrate_and_estimate(head_dir, model_dir, campaign, tmp_path):
    head, card = load_field_head(head_dir)
    assert card.base_weights_sha256 == network_digest(model_dir)
    assert card.systematic_sigma_degC == {}
    assert set(card.training["holdout_rmse_per_field_degC"]) <= {"1", "2", "3"}
    block = calibrate_field_head(head_dir, [(str(campaign), -80.0)], model_dir)
    _, card = load_field_head(head_dir)
    assert set(card.systematic_sigma_degC) == {"5", "3", "2", "1"}
    assert block["per_count"]["5"]["coverage"] == 1.0  # one camera, covered by its own term
    frames = read_campaign(campaign)
    r = field_head_bft(frames, model_dir, head_dir)
    fh = r["field_head"]
    assert r["n_plateaux"] == 5 and len(fh["t_best_degC"]) == 3
    assert r["bft_degC"] == pytest.approx(np.mean(fh["t_best_degC"]))
    stat = np.sqrt(np.sum(np.square(fh["sigma_degC"]))) / 3
    assert r["sigma_degC"] == pytest.approx(np.hypot(stat, card.systematic_sigma_degC["5"]))
    # the command line: the same estimate, in a report
    out = tmp_path / "r.json"
    rc = main(["bft", str(campaign), "--method", "field", "--model", str(model_dir),
               "--field-head", str(head_dir), "--no-cross-check", "--json", str(out)])  # fmt: skip
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["method"] == "field" and rep["bft_degC"] == pytest.approx(r["bft_degC"])


def test_head_for_another_network_is_refused(head_dir, campaign, tmp_path, capsys):
    other = _tiny_model(tmp_path / "other", 5)
    with pytest.raises(ModelFormatError, match="reads the FocusNet"):
        field_head_bft(read_campaign(campaign), other, head_dir)
    rc = main(["bft", str(campaign), "--method", "field", "--model", str(other),
               "--field-head", str(head_dir)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "reads the FocusNet" in err[0]


def test_field_head_command_needs_something_to_do(tmp_path, capsys):
    rc = main(["field-head", "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "--dataset" in err[-1]
    # a calibration family it cannot use is refused before the training starts
    rc = main(["field-head", "--dataset", str(tmp_path), "--out", str(tmp_path / "h"),
               "--calibrate", "nodal:1:4"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown family nodal" in err[0]
    assert not (tmp_path / "h").exists()
    # the out-of-family term needs both its reference head and the families it never saw
    rc = main(["field-head", "--out", str(tmp_path / "h"), "--family-reference", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--family-sets" in err[0]
    rc = main(["field-head", "--out", str(tmp_path / "h"), "--family-reference", str(tmp_path),
               "--family-sets", "nodal:1:4"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown family nodal" in err[0]


def test_windowed_training_is_recorded_and_a_reversed_window_refused(
    series_ds, model_dir, tmp_path, capsys
):
    out = tmp_path / "hw"
    cfg = FieldHeadTrainConfig(steps=5, batch=8, holdout_every=2, hidden=8, window_degC=(8, 32))
    train_field_head(series_ds, out, model_dir, cfg)
    _, card = load_field_head(out)
    assert list(card.training["config"]["window_degC"]) == [8, 32]
    assert card.training["config"]["window_fraction"] == 0.5
    capsys.readouterr()  # the training's own log lines
    rc = main(["field-head", "--dataset", str(series_ds), "--out", str(tmp_path / "hr"),
               "--model", str(model_dir), "--steps", "5", "--window-degC", "30", "10"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "window" in err[0]
    assert not (tmp_path / "hr").exists()


def test_cnn_falls_back_on_the_field_head_where_its_residual_check_flags(
    head_dir, model_dir, campaign, tmp_path
):
    """``--field-head-fallback``: a camera the thermal-residual check flags gets the field
    head's estimate, the CNN's kept under ``cnn_estimate``; an unflagged one keeps the CNN's."""
    import shutil

    from plato_cnn.nn.card import update_model_json

    flagging = tmp_path / "flagging"
    shutil.copytree(model_dir, flagging)
    zero = {k: {"5": 0.0, "3": 0.0, "2": 0.0} for k in ("threshold_um", "sigma_per_residual")}
    update_model_json(flagging, thermal_residual_check=zero)
    out = tmp_path / "r.json"
    argv = ["bft", str(campaign), "--method", "cnn", "--n-boot", "20", "--no-cross-check",
            "--field-head", str(head_dir), "--field-head-fallback", "--json", str(out)]  # fmt: skip
    assert main([*argv, "--model", str(flagging)]) == 0
    r = json.loads(out.read_text())
    want = field_head_bft(read_campaign(campaign), flagging, head_dir)
    assert r["thermal_residual"]["outside"] and r["fit"] == "field-head (fallback)"
    assert r["bft_degC"] == pytest.approx(want["bft_degC"])
    assert r["cnn_estimate"]["fit"] == "thermal-model" and "field_head" in r
    # flagged: the field head's out-of-family term applies (this tiny head has none: said so)
    assert r["family_check"]["outside"] and r["family_check"]["family_sigma_degC"] is None
    assert any("no out-of-family term" in w for w in r["warnings"])
    assert any("--field-head-fallback" in w for w in r["warnings"])
    assert main([*argv, "--model", str(model_dir)]) == 0  # no residual check: no fallback
    r = json.loads(out.read_text())
    assert r["fit"] == "thermal-model" and "cnn_estimate" not in r


def test_out_of_family_term_widens_sigma_only_where_flagged():
    card = FieldHeadCard(config={}, base_weights_sha256="x", family_sigma_degC={"5": 0.4, "2": 0.9})
    assert card.family_for(5) == 0.4 and card.family_for(3) == 0.9 and card.family_for(1) is None
    est = {"bft_degC": -80.0, "sigma_degC": 0.3, "n_plateaux": 3, "warnings": []}
    kept = with_family_term(est, card, outside=False)
    assert kept["sigma_degC"] == 0.3 and not kept["outside_model"] and kept["warnings"] == []
    wide = with_family_term(est, card, outside=True, check={"ran": True, "residual_um": 9.0})
    assert wide["sigma_degC"] == pytest.approx(np.hypot(0.3, 0.9)) and wide["outside_model"]
    assert wide["family_check"]["family_sigma_degC"] == 0.9 and "0.90 degC" in wide["warnings"][0]
    assert est["warnings"] == [] and est["sigma_degC"] == 0.3  # the input is not changed
    # flagged, but no term measured for one plateau: said so, sigma not made up
    one = with_family_term({**est, "n_plateaux": 1}, card, outside=True)
    assert one["sigma_degC"] == 0.3 and "no out-of-family term" in one["warnings"][0]
    # not flagged because the check could not run (one plateau): said so, sigma in-family
    unchecked = {"ran": False, "outside": False, "reason": unchecked_reason(1)}
    lone = with_family_term({**est, "n_plateaux": 1}, card, outside=False, check=unchecked)
    assert lone["sigma_degC"] == 0.3 and not lone["outside_model"]
    assert f"not checked ({unchecked_reason(1)})" in lone["warnings"][0]
    # a head fine-tuned on a new family, its sigma measured there: said so instead
    tuned = FieldHeadCard(config={}, base_weights_sha256="x", calibration={"source": FAMILY_TUNED})
    ft = with_family_term(est, tuned, outside=True)
    assert ft["sigma_degC"] == 0.3 and ft["outside_model"] and "fine-tuned" in ft["warnings"][0]


def test_family_term_is_what_the_reference_lacks_on_the_held_out_cameras(
    head_dir, model_dir, campaign, tmp_path
):
    """The term is the 68th percentile of sqrt(e^2 - sigma^2), sigma the reference head's
    full sigma; it is written into the target head's card, and the command line refuses a
    reference without its in-family calibration."""
    import shutil

    ref = tmp_path / "ref"
    shutil.copytree(head_dir, ref)
    head, card = load_field_head(ref)
    card.systematic_sigma_degC = {}  # (head_dir may have been calibrated by another test)
    save_field_head(head, card, ref)
    with pytest.raises(ParameterError, match="no in-family calibration"):
        measure_family_term(head_dir, ref, [(str(campaign), -80.0)], model_dir)
    calibrate_field_head(ref, [(str(campaign), -80.0)], model_dir)
    target = tmp_path / "target"
    shutil.copytree(head_dir, target)
    truth = -79.0  # an estimate 1 degC off the head's calibration camera
    block = measure_family_term(target, ref, [(str(campaign), truth)], model_dir)
    _, card = load_field_head(target)
    _, ref_card = load_field_head(ref)
    r = field_head_bft(read_campaign(campaign), model_dir, ref, outside=False)
    err = r["bft_degC"] - truth
    assert block["per_count"]["5"]["errors_degC"] == [pytest.approx(err)]
    assert card.family_for(5) == pytest.approx(np.sqrt(max(0.0, err**2 - r["sigma_degC"] ** 2)))
    assert set(card.family_sigma_degC) == {"5", "3", "2", "1"}
    assert card.systematic_sigma_degC == load_field_head(head_dir)[1].systematic_sigma_degC
    assert ref_card.family_sigma_degC == {}


def test_field_method_reports_its_family_check(head_dir, model_dir, campaign):
    """``--method field`` runs the CNN's residual check on the same frames; a model without
    that check's calibration leaves the estimate in family, and says the check did not run."""
    r = field_head_bft(read_campaign(campaign), model_dir, head_dir)
    assert r["family_check"]["ran"] is False and r["family_check"]["outside"] is False
    assert r["outside_model"] is False and r["family_check"]["family_sigma_degC"] is None


def test_one_network_pass_serves_the_field_head_and_the_cnn_fit(head_dir, model_dir, campaign):
    """The raw outputs kept in the field head's features are FocusNet's predictions, so the
    CNN fit behind the family check gives the same result from them as from its own pass."""
    from plato_cnn.field_bft import field_head_inputs
    from plato_cnn.nn.field_head import network_outputs
    from plato_cnn.predict import cnn_bft, predict_frames

    frames = read_campaign(campaign)
    sel = frames.select(frames.usable)
    *_, feats = field_head_inputs(sel, model_dir, head_dir)
    got = network_outputs(feats)
    ref = predict_frames(sel, model_dir)
    for k in ("mu_um", "sigma_um", "p_behind"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-3)
    a, _ = cnn_bft(sel, model_dir, n_boot=5, seed=1, predictions=got)
    b, _ = cnn_bft(sel, model_dir, n_boot=5, seed=1)
    assert a.bft_degC == pytest.approx(b.bft_degC, abs=1e-3)
    with pytest.raises(ParameterError, match="predictions for"):
        cnn_bft(sel, model_dir, predictions={k: v[:-1] for k, v in got.items()})


def test_head_with_image_moments_reads_them_everywhere(series_ds, model_dir, campaign, tmp_path):
    """A head trained with ``moments`` records it, reads the network's features and then the
    stamps' moments (dataset, campaign), and its family check still finds the network's
    outputs at the front of the rows."""
    from plato_cnn.field_bft import field_head_inputs
    from plato_cnn.nn.field_head import head_features, network_outputs
    from plato_cnn.nn.stamp_moments import N_MOMENTS, stamp_moments
    from plato_cnn.predict import network_stamps, predict_frames

    net, _ = load_model(model_dir)
    out = tmp_path / "hm"
    cfg = FieldHeadTrainConfig(steps=5, batch=8, holdout_every=2, hidden=8, moments=True)
    train_field_head(series_ds, out, model_dir, cfg)
    head, card = load_field_head(out)
    assert head.config.moments and head.config.feature_dim == feature_dim(net) + N_MOMENTS
    assert head.config.network_dim == feature_dim(net)
    s = dataset_series(series_ds, net, moments=True)
    stamps, lab, _ = read_shard(series_ds / "shard-00000.h5")
    m = stamp_moments(stamps[:2], lab["phi_deg"][:2])
    np.testing.assert_allclose(s.features[0, 0, -N_MOMENTS:], m.mean(0), rtol=1e-5, atol=1e-6)
    frames = read_campaign(campaign)
    sel = frames.select(frames.usable)
    *_, feats = field_head_inputs(sel, model_dir, out)
    want = head_features(net, network_stamps(sel), sel.field_theta_deg, sel.field_phi_deg, True)
    np.testing.assert_array_equal(feats, want)
    got = network_outputs(feats[:, : head.config.network_dim])
    np.testing.assert_allclose(got["mu_um"], predict_frames(sel, model_dir)["mu_um"], atol=1e-3)
    r = field_head_bft(frames, model_dir, out, systematic=False)
    assert np.isfinite(r["bft_degC"]) and len(r["field_head"]["t_best_degC"]) == 3
