"""The CNN BFT path end to end on a tiny campaign: reader -> FocusNet -> thermal fit -> JSON.

The network here is untrained (its accuracy is measured by benchmarks/cnn_bft.py); these
tests check the plumbing, the report and the handling of bad model directories.
"""

import json

import numpy as np
import pytest
import torch
from campaign_builder import make_campaign
from model_builder import TEMPLATE, save_tiny_model

from plato_cnn.cli import main
from plato_cnn.nn.model import FocusNet
from plato_cnn.predict import cnn_bft
from plato_cnn.reader import read_campaign


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return make_campaign(tmp_path_factory.mktemp("camp"), n_fields=3, n_dithers=3)


def test_cnn_bft_library(campaign, model_dir):
    frames = read_campaign(campaign)
    fit, info = cnn_bft(frames, model_dir, n_boot=20)
    assert info["frames_used"] == int(frames.usable.sum())
    assert np.isfinite(fit.bft_degC) and np.isfinite(fit.sigma_degC)
    assert fit.n_plateaux == 5 and fit.s_measured
    assert len(fit.t_field_degC) == 3


def test_fitted_offsets_are_reported_beside_the_networks_own(campaign, model_dir):
    """The offsets the thermal fit used (after an offset correction) are in ``info`` beside
    the network's raw ones, which the re-check needs uncorrected; ``--plot`` shows the fitted."""
    from plato_cnn.offset_correction import fit_offset_correction

    frames = read_campaign(campaign)
    _, info = cnn_bft(frames, model_dir, n_boot=20)
    np.testing.assert_array_equal(info["frame_mu_fitted_um"], info["frame_mu_um"])
    sel = frames.select(frames.usable)
    raw = info["frame_mu_um"]
    corr = fit_offset_correction(sel, raw, raw - 3.0, info["model_card_sha256"])
    _, info2 = cnn_bft(frames, model_dir, n_boot=20, offset_correction=corr)
    np.testing.assert_array_equal(info2["frame_mu_um"], raw)
    np.testing.assert_allclose(info2["frame_mu_fitted_um"], raw - 3.0, atol=1e-4)


def test_cnn_bft_cli_report(campaign, model_dir, tmp_path):
    out = tmp_path / "r.json"
    png = tmp_path / "r.png"
    rc = main(["bft", str(campaign), "--method", "cnn", "--model", str(model_dir),
               "--n-boot", "20", "--json", str(out), "--plot", str(png)])  # fmt: skip
    assert rc == 0
    r = json.loads(out.read_text())
    for key in ("camera", "method", "fit", "bft_degC", "sigma_degC", "obsids", "frames_used",
                "frames_dropped", "drops", "warnings", "sign_ambiguous"):  # fmt: skip
        assert key in r, key
    assert r["method"] == "cnn" and isinstance(r["sign_ambiguous"], bool)
    assert all(isinstance(o, int) for o in r["obsids"]) and len(r["obsids"]) == 5
    assert png.stat().st_size > 1000
    # one plateau: s comes from the prior, and the report says so
    rc = main(["bft", str(campaign), "--method", "cnn", "--model", str(model_dir),
               "--obsids", str(r["obsids"][2]), "--n-boot", "20", "--json", str(out)])  # fmt: skip
    assert rc == 0
    r1 = json.loads(out.read_text())
    assert r1["n_plateaux"] == 1 and not r1["s_measured"]
    assert any("prior" in w for w in r1["warnings"])
    # the re-check: s and its sigma from the full sweep's report
    prior = f"{r['s_um_per_degC']},{max(r['s_sigma_um_per_degC'], 1e-3)}"
    rc = main(["bft", str(campaign), "--method", "cnn", "--model", str(model_dir),
               "--obsids", str(r["obsids"][2]), "--n-boot", "20", "--json", str(out),
               "--s-prior", prior])  # fmt: skip
    assert rc == 0
    r2 = json.loads(out.read_text())
    assert r2["s_prior_um_per_degC"][0] == pytest.approx(r["s_um_per_degC"])
    assert r2["s_um_per_degC"] == pytest.approx(r["s_um_per_degC"], rel=1e-3)


def test_cnn_bft_refuses_a_broken_model(campaign, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text("{}")
    rc = main(["bft", str(campaign), "--method", "cnn", "--model", str(bad)])
    assert rc == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_calibrated_systematic_sigma_is_added(campaign, model_dir, tmp_path):
    import shutil

    d = tmp_path / "calibrated"
    shutil.copytree(model_dir, d)
    desc = json.loads((d / "model.json").read_text())
    desc["systematic_sigma_degC"] = {"1": 2.0, "3": 0.7, "5": 0.5}
    (d / "model.json").write_text(json.dumps(desc))
    frames = read_campaign(campaign)
    raw, _ = cnn_bft(frames, d, n_boot=20, systematic=False)
    cal, _ = cnn_bft(frames, d, n_boot=20)
    assert cal.sigma_degC == pytest.approx(np.hypot(raw.sigma_degC, 0.5))
    assert cal.bft_degC == raw.bft_degC
    assert any("systematic" in w for w in cal.warnings)
    # a calibrated bootstrap scale multiplies the bootstrap sigma before the sum
    desc["bootstrap_scale"] = {"1": 1.0, "3": 1.0, "5": 0.5}
    (d / "model.json").write_text(json.dumps(desc))
    scaled, _ = cnn_bft(frames, d, n_boot=20)
    assert scaled.sigma_degC == pytest.approx(np.hypot(0.5 * raw.sigma_degC, 0.5))


def test_finetune_on_campaigns(tmp_path, model_dir):
    """Fine-tuning runs end to end on two tiny campaigns and writes a loadable model."""
    from plato_cnn.nn.card import load_model
    from plato_cnn.pipelines.finetune import FinetuneConfig, eef_field_optima, finetune

    frames = []
    for k in range(2):
        fr = read_campaign(make_campaign(tmp_path / f"c{k}", n_fields=3, n_dithers=3, seed=k))
        frames.append(fr.select(fr.usable))
    import shutil

    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    d0 = json.loads((base / "model.json").read_text())
    d0["systematic_sigma_degC"] = {"5": 0.1, "1": 0.3}
    (base / "model.json").write_text(json.dumps(d0))
    out = tmp_path / "ft"
    cfg = FinetuneConfig(epochs=1, batch_size=32, labels="eef")
    summary = finetune(frames, out, base, cfg, progress=False)
    model, desc = load_model(out)
    # the anchors' classical sigma is added in quadrature to the base calibration
    a = summary["anchor_sigma_degC"]
    assert a > 0
    assert desc["systematic_sigma_degC"]["5"] == pytest.approx(np.hypot(0.1, a))
    assert desc["systematic_sigma_degC"]["1"] == pytest.approx(np.hypot(0.3, a))
    assert desc["finetune"]["cameras"] == [fr.camera for fr in frames]
    for info in summary["before"] + summary["after"]:
        assert np.isfinite(info["s_um_per_degC"])
        assert len(info["t_field_eef_degC"]) == 3
    # too few plateaux to anchor the fields with the EEF: a clear error
    one = frames[0].select(frames[0].obsid == frames[0].obsid[0])
    with pytest.raises(ValueError, match="plateaux"):
        finetune([one], tmp_path / "ft1", model_dir, FinetuneConfig(epochs=1, labels="eef"),
                 progress=False)  # fmt: skip
    # the EEF anchor finds a field's peak from its EEF-vs-temperature curve
    t = np.repeat([-90.0, -85.0, -80.0, -75.0, -70.0], 4)
    e = TEMPLATE(10.0 * (t + 78.0))
    tf, rms = eef_field_optima(e, t, np.zeros(t.size, int), np.repeat(np.arange(5), 4), 10.0,
                               TEMPLATE, 1)  # fmt: skip
    assert tf[0] == pytest.approx(-78.0, abs=0.05) and rms[0] < 1e-6


def test_logpoly_field_anchor_recovers_each_fields_peak():
    """The default fine-tuning anchor: per field, the maximum of log-EEF fitted in T."""
    from plato_cnn.pipelines.finetune import eef_field_optima_logpoly

    rng = np.random.default_rng(5)
    plates = np.array([-90.0, -85.0, -80.0, -75.0, -70.0])
    peaks = np.array([-78.0, -82.5, -74.0])
    t = np.repeat(plates, 12)
    p = np.repeat(np.arange(5), 12)
    e, tt, ff, pp = [], [], [], []
    for f, t0 in enumerate(peaks):
        e.append(0.8 * np.exp(-(((t - t0) / 7.0) ** 2)) * (1 + 0.01 * rng.normal(size=t.size)))
        tt.append(t), ff.append(np.full(t.size, f)), pp.append(p)
    e, tt, ff, pp = map(np.concatenate, (e, tt, ff, pp))
    tf, rms = eef_field_optima_logpoly(e, tt, ff, pp, 3)
    assert tf == pytest.approx(peaks, abs=0.15)
    assert np.all(rms < 0.02)
    # a field seen on only two plateaux has no anchor
    keep = ~((ff == 1) & (pp >= 2))
    tf2, _ = eef_field_optima_logpoly(e[keep], tt[keep], ff[keep], pp[keep], 3)
    assert np.isnan(tf2[1]) and np.isfinite(tf2[0])


def test_fixed_sigma_loss_moves_the_offset_not_sigma():
    """With fixed_sigma_um the offset's gradient does not depend on the predicted sigma."""
    import torch

    from plato_cnn.nn.model import FocusNet

    grads = []
    for log_sig in (-3.0, 1.0):
        out = torch.tensor([[0.3, log_sig, 0.0]], requires_grad=True)
        loss, _ = FocusNet.loss(out, torch.tensor([10.0]), fixed_sigma_um=5.0)
        loss.backward()
        grads.append(out.grad[0, 0].item())
    assert grads[0] == pytest.approx(grads[1]) and grads[0] > 0
    out = torch.tensor([[0.3, -3.0, 0.0]], requires_grad=True)
    FocusNet.loss(out, torch.tensor([10.0]))[0].backward()
    assert out.grad[0, 0].item() != pytest.approx(grads[0])


def test_calibrate_systematic_measures_what_the_bootstrap_misses(campaign, model_dir, tmp_path):
    """sigma_sys^2 = mean(max(0, err^2 - (c boot)^2)), c = min(1, q68(|err| / boot)), written
    to model.json for every subset."""
    import shutil

    from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS, RECHECK_KEY, calibrate_systematic

    d = tmp_path / "cal"
    shutil.copytree(model_dir, d)
    frames = read_campaign(campaign)
    full, _ = cnn_bft(frames, d, n_boot=100, systematic=False)
    truth = full.bft_degC - 1.5  # a camera whose estimate is 1.5 degC off
    res = calibrate_systematic(d, [(campaign, truth)], write=True)
    desc = json.loads((d / "model.json").read_text())
    keys = {str(n) for n in PLATEAU_SUBSETS} | {RECHECK_KEY}
    assert set(desc["systematic_sigma_degC"]) == set(desc["bootstrap_scale"]) == keys
    r = res["by_plateaux"]
    # the campaign has fewer plateaux than 5: every subset maps onto its nearest ones
    for n in keys:
        e, b = r[n]["rms_error_degC"], r[n]["rms_bootstrap_sigma_degC"]
        c = min(1.0, e / b)  # one camera: its own ratio is the 68th percentile
        assert r[n]["bootstrap_scale"] == pytest.approx(c)
        assert r[n]["systematic_sigma_degC"] == pytest.approx(
            np.sqrt(max(0.0, e**2 - (c * b) ** 2)), abs=1e-9
        )
        assert r[n]["coverage"] == 1.0  # |err| <= hypot(c boot, sys) by construction
    n_all = str(max(PLATEAU_SUBSETS))
    assert r[n_all]["bias_degC"] == pytest.approx(1.5, abs=0.5)


def test_plateau_mask_picks_the_nearest_observation_per_nominal_temperature(campaign):
    frames = read_campaign(campaign)
    temps = {o.obsid: o.temperature_mean_degC for o in frames.observations}
    coldest = min(temps, key=temps.get)
    m = frames.plateau_mask([min(temps.values()) - 30.0])  # far below: still the nearest one
    assert m.any() and set(np.unique(frames.obsid[m])) == {coldest}
    assert frames.plateau_mask(list(temps.values())).all()


def test_s_prior_from_an_earlier_sweep_sets_the_one_plateau_scale(campaign, model_dir):
    """With one plateau T - T_BF = mean(delta) / s: the given prior's s is the one used."""
    import argparse

    from plato_cnn.cli import s_prior_arg

    frames = read_campaign(campaign)
    one = frames.select(frames.obsid == np.unique(frames.obsid)[0])
    t = float(np.mean(one.temperature_degC[one.usable]))
    a, _ = cnn_bft(one, model_dir, n_boot=5, systematic=False, s_prior=(5.0, 1e-3))
    b, _ = cnn_bft(one, model_dir, n_boot=5, systematic=False, s_prior=(20.0, 1e-3))
    assert not a.s_measured and a.s_um_per_degC == pytest.approx(5.0, rel=1e-3)
    assert (t - a.bft_degC) == pytest.approx(4.0 * (t - b.bft_degC), rel=0.02)
    with pytest.raises(ValueError, match="prior"):
        cnn_bft(one, model_dir, n_boot=5, s_prior=(0.0, 1.0))
    assert s_prior_arg("9.5,0.3") == (9.5, 0.3)
    for bad in ("9.5", "a,b", "10,0", "0,1"):
        with pytest.raises(argparse.ArgumentTypeError):
            s_prior_arg(bad)


def test_finetune_refuses_forward_reports_without_field_focus(campaign, model_dir, tmp_path,
                                                              capsys):  # fmt: skip
    """Physics labels need the fit's per-field best focus: a report without it, a report that
    is not one JSON object, or one report too few end in one line and exit 2."""
    no_block = tmp_path / "r.json"
    no_block.write_text(json.dumps({"bft_degC": -80.0, "sigma_degC": 0.1}))
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    base = ["finetune", "--campaign", str(campaign), "--model", str(model_dir), "--out",
            str(tmp_path / "ft"), "--epochs", "1"]  # fmt: skip
    for reports, says in (([no_block], "field_focus"), ([not_object], "one JSON object"),
                          ([no_block, no_block], "one per campaign")):  # fmt: skip
        rc = main(base + ["--forward-json", *map(str, reports)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and says in err[0], err
        assert not (tmp_path / "ft").exists()


def test_finetune_with_physics_labels_measures_its_sigma_by_cross_validation(tmp_path,
                                                                            model_dir):  # fmt: skip
    """Physics labels from forward reports (here written by hand: the labels' physics is
    tested in test_forward.py); with 3 cameras the systematic sigma of the fine-tuned model
    comes from leave-one-camera-out fine-tunings scored against the reports' T_BF."""
    from plato_cnn.forward import physics_labels
    from plato_cnn.nn.card import load_model
    from plato_cnn.pipelines.finetune import FinetuneConfig, finetune

    frames, reports = [], []
    for k in range(3):
        fr = read_campaign(make_campaign(tmp_path / f"c{k}", n_fields=3, n_dithers=3, seed=k))
        fr = fr.select(fr.usable)
        th, ph = np.unique(np.c_[fr.field_theta_deg, fr.field_phi_deg], axis=0).T
        reports.append({
            "bft_degC": -80.0 + k, "sigma_degC": 0.01, "outside_model": False,
            "chi2": {"reduced": 1.0}, "s_um_per_degC": 10.0,
            "field_focus": {
                "theta_deg": th.tolist(), "phi_deg": ph.tolist(),
                "dz_th_best_um": [0.0, 5.0, -5.0], "t_best_degC": [-80.0, -79.5, -80.5],
                "n_sub": 4,
                "thermal": {"t_ref_degC": -80.0, "b_um": 0.0, "s_um_per_degC": 10.0,
                            "q_um_per_degC2": 0.0},
            },
        })  # fmt: skip
        frames.append(fr)
        assert np.isfinite(physics_labels(fr, reports[-1])).all()
    out = tmp_path / "ft"
    cfg = FinetuneConfig(epochs=1, batch_size=32)
    summary = finetune(frames, out, model_dir, cfg, progress=False, forward_reports=reports)
    _, desc = load_model(out)
    cv = summary["cross_validation"]
    assert set(cv) == {"5", "3", "2", "1"}
    for key, row in cv.items():
        assert desc["systematic_sigma_degC"][key] == row["systematic_sigma_degC"] >= 0.0
        assert 0.0 <= row["coverage"] <= 1.0
    assert [f["bft_degC"] for f in summary["forward"]] == [-80.0, -79.0, -78.0]
    for info in summary["before"] + summary["after"]:
        assert info["labels"] == "forward" and np.isfinite(info["net_minus_label_um_rms"])
        # the part that does not average out: per plateau and per (field, plateau) group
        assert np.isfinite(info["field_plateau_mean_rms_um"])
        assert len(info["per_plateau_mean_um"]) == 5


def test_finetune_stops_when_the_label_fit_of_its_cameras_stops_improving():
    """Early stopping looks only at the cameras trained on: it keeps the weights of the best
    (field, plateau) fit and stops after ``patience`` epochs without a ``min_gain`` gain."""
    from plato_cnn.pipelines.finetune import FinetuneConfig, _BestEpoch, _label_fit_um

    infos = [{"field_plateau_mean_rms_um": 4.0}, {"field_plateau_mean_rms_um": 8.0}]
    assert _label_fit_um(infos) == 6.0
    assert _label_fit_um([{"net_minus_eef_degC_mean": 0.1}]) is None  # EEF labels: no stopping
    net = FocusNet()
    best = _BestEpoch(FinetuneConfig(patience=2, min_gain=0.02))
    fits = [10.0, 8.0, 7.0, 6.95, 7.2]  # after 0..4 epochs: 6.95 is not 2 % better than 7
    stops = []
    for epoch, fit in enumerate(fits):
        with torch.no_grad():
            next(net.parameters()).fill_(float(epoch))  # weights that name their epoch
        stops.append(best.stop(net, fit, epoch))
    assert stops == [False, False, False, False, True]
    assert best.epoch == 2 and best.fit == 7.0
    assert best.restore(net, 7.2) == 2
    assert float(next(net.parameters()).flatten()[0]) == 2.0  # the best epoch's weights
    assert best.restore(net, 6.0) is None  # the last weights fit better: kept
    off = _BestEpoch(FinetuneConfig(patience=0))
    assert not any(off.stop(net, f, e) for e, f in enumerate([1.0, 5.0, 9.0, 9.0]))
