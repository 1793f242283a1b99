"""The plateau head: field features, training, storage, its use by the CNN BFT."""

import json

import numpy as np
import pytest
import torch
from campaign_builder import make_campaign

from plato_cnn.nn.card import ModelFormatError, load_model, save_model
from plato_cnn.nn.model import FocusNet, FocusNetConfig
from plato_cnn.nn.plateau_head import (
    FIELD_FEATURES,
    PlateauHead,
    PlateauHeadConfig,
    Snapshot,
    field_features,
    load_plateau_head,
    predict_correction_um,
    random_field_subsets,
    subset_targets_um,
)
from plato_cnn.pipelines.plateau_head import save_plateau_head, train_plateau_head
from plato_cnn.predict import cnn_bft
from plato_cnn.reader import read_campaign


def test_field_features_are_per_field_means_and_spreads():
    f = np.array([0, 0, 1, 1, 1])
    x = field_features(
        mu_um=np.array([10.0, 30.0, -50.0, -50.0, -50.0]),
        sigma_um=np.full(5, 20.0),
        p_behind=np.array([1.0, 0.0, 0.2, 0.2, 0.2]),
        eef=np.array([0.5, 0.7, 0.3, 0.3, 0.3]),
        theta_deg=np.array([9.0, 9.0, 18.0, 18.0, 18.0]),
        phi_deg=np.array([90.0, 90.0, 0.0, 0.0, 0.0]),
        field_index=f,
        n_fields=2,
        field_radius_deg=18.0,
    )
    assert x.shape == (2, len(FIELD_FEATURES)) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :6], [0.2, 0.1, 0.2, 0.5, 0.6, 0.1], atol=1e-6)
    np.testing.assert_allclose(x[1, :6], [-0.5, 0.0, 0.2, 0.2, 0.3, 0.0], atol=1e-6)
    np.testing.assert_allclose(x[:, 6:], [[0.5, 0.25, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="every field"):
        field_features(np.zeros(2), np.ones(2), np.zeros(2), np.zeros(2), np.zeros(2),
                       np.zeros(2), np.array([0, 0]), 2, 18.0)  # fmt: skip


def _planted_snapshots(n, n_fields=8, seed=0):
    """Targets that depend on the fields' mean P(behind) and EEF jointly (a sign x size)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.uniform(0, 1, (n_fields, len(FIELD_FEATURES))).astype(np.float32)
        target = 40.0 * (x[:, 3].mean() - 0.5) * (x[:, 4].mean() - 0.2)
        out.append(Snapshot(f"c{i}", x, 0.0, -80.0, float(target), 10.0, -80.0))
    return out


def test_head_learns_a_planted_relation_and_round_trips(tmp_path):
    train, val = _planted_snapshots(400), _planted_snapshots(60, seed=1)
    cfg = PlateauHeadConfig(hidden=16, members=2, epochs=60, batch=64, seed=3)
    head, summary = train_plateau_head(train, cfg, val)
    assert summary["validation_rms_residual_um"] < 0.5 * summary["validation_rms_target_um"]
    # stored next to a FocusNet, described in its model.json, loaded back identically
    save_model(FocusNet(FocusNetConfig(crop=16, channels=(8,), blocks_per_stage=1)), tmp_path)
    save_plateau_head(head, tmp_path, summary)
    _, desc = load_model(tmp_path)
    again = load_plateau_head(tmp_path, desc)
    x = val[0].x
    assert predict_correction_um(again, x) == predict_correction_um(head, x)
    desc["plateau_head"]["features"] = ["something else"]
    with pytest.raises(ModelFormatError, match="plateau head"):
        load_plateau_head(tmp_path, desc)
    assert load_plateau_head(tmp_path, {}) is None


def test_cnn_bft_applies_the_head_to_each_plateau(tmp_path):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    save_model(FocusNet(FocusNetConfig(crop=16, channels=(8, 16), blocks_per_stage=1,
                                       hidden=16)), model_dir)  # fmt: skip
    head = PlateauHead(PlateauHeadConfig(hidden=8, members=1))
    with torch.no_grad():  # a head that always says +20 um
        for p in head.parameters():
            p.zero_()
        head.members[0].rho[-1].bias.fill_(2.0)
    save_plateau_head(head, model_dir, {"note": "test"})
    frames = read_campaign(make_campaign(tmp_path / "camp", n_fields=3, n_dithers=3))
    one = frames.select(frames.plateau_mask([-80.0]))
    fit, info = cnn_bft(one, model_dir, n_boot=0, systematic=False)
    plain, info0 = cnn_bft(one, model_dir, n_boot=0, systematic=False, plateau_head=False)
    assert list(info["plateau_head_correction_um"].values()) == pytest.approx([20.0])
    assert info0["plateau_head_correction_um"] is None
    assert fit.bft_degC == pytest.approx(plain.bft_degC - 20.0 / fit.s_um_per_degC, abs=1e-6)
    assert any("plateau head" in w for w in fit.warnings)
    # several plateaux: each plateau's offsets get its own correction (here +20 um on all
    # five, which moves every T_f by -20/s and leaves s alone)
    full, info5 = cnn_bft(frames, model_dir, n_boot=0, systematic=False)
    full0, _ = cnn_bft(frames, model_dir, n_boot=0, systematic=False, plateau_head=False)
    assert list(info5["plateau_head_correction_um"].values()) == pytest.approx([20.0] * 5)
    assert full.s_um_per_degC == pytest.approx(full0.s_um_per_degC, rel=1e-9)
    assert full.bft_degC == pytest.approx(full0.bft_degC - 20.0 / full.s_um_per_degC)
    # a head trained on 40 field positions is not used on a plateau with 3, and the sigma
    # then comes from the calibration made without the head
    save_plateau_head(head, model_dir, {"fields_per_snapshot": 40})
    desc = json.loads((model_dir / "model.json").read_text())
    desc["systematic_sigma_degC"] = {"1": 0.1, "5": 0.1}
    desc["without_plateau_head"] = {"systematic_sigma_degC": {"1": 7.0, "5": 7.0}}
    (model_dir / "model.json").write_text(json.dumps(desc))
    few_sys, _ = cnn_bft(one, model_dir, n_boot=0)
    assert any("systematic 7.00 degC" in w for w in few_sys.warnings)
    few, info3 = cnn_bft(one, model_dir, n_boot=0, systematic=False)
    assert info3["plateau_head_correction_um"] is None
    assert few.bft_degC == plain.bft_degC
    assert any("plateau head not used on OBSID" in w and "(3 field positions" in w
               for w in few.warnings)  # fmt: skip
    # a head trained on random tables of 3..40 positions serves the 3-position plateau
    save_plateau_head(head, model_dir, {"fields_per_snapshot": 40, "min_fields_per_snapshot": 3})
    small, info_small = cnn_bft(one, model_dir, n_boot=0, systematic=False)
    assert list(info_small["plateau_head_correction_um"].values()) == pytest.approx([20.0])
    assert small.bft_degC == pytest.approx(fit.bft_degC)


def test_random_field_subsets_are_tables_of_the_snapshots_own_positions():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3)
    sizes = set()
    for _ in range(40):
        sub, keep = random_field_subsets(x, 3, g)
        assert torch.equal(sub, torch.stack([x[b][keep[b]] for b in range(2)]))
        sizes.add(sub.shape[1])
        for b in range(2):  # every row is one of that snapshot's own positions, none twice
            rows = {tuple(r.tolist()) for r in sub[b]}
            assert len(rows) == sub.shape[1] and rows <= {tuple(r.tolist()) for r in x[b]}
    assert min(sizes) == 3 and max(sizes) == 8
    assert random_field_subsets(x, 3, g, n=5)[0].shape == (2, 5, 3)
    with pytest.raises(ValueError, match="min_fields"):
        random_field_subsets(x, 9, g)


def _field_snapshots(n, n_fields=8, seed=0, s_true=10.0, s0=10.0):
    """Snapshots whose per-field optima lie u_f degC from T_BF, u_f the first feature: the
    target of a table of fields is s0 * mean(u_f) + (s_true - s0) (T_mean - T_BF)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.uniform(-1, 1, (n_fields, len(FIELD_FEATURES))).astype(np.float32)
        t_bf, t_field = -80.0, np.full(n_fields, -80.0 + rng.uniform(-5, 5))
        t_f = t_bf + x[:, 0].astype(float)
        m0 = s0 * (t_field.mean() - t_f.mean())
        target = s_true * (t_field.mean() - t_bf) - m0
        out.append(Snapshot(f"c{i}", x, m0, float(t_field.mean()), float(target), s_true, t_bf,
                            t_f, t_field, s0))  # fmt: skip
    return out


def test_subset_targets_are_the_targets_of_the_smaller_tables():
    snaps = _field_snapshots(3, s_true=12.0)
    every = torch.arange(8).repeat(3, 1)
    got = subset_targets_um(snaps, every).numpy()
    np.testing.assert_allclose(got, [s.target_um for s in snaps], rtol=1e-5, atol=1e-4)
    keep = torch.tensor([[0, 1], [2, 5], [7, 3]])
    want = [10.0 * float(s.field_t_opt_degC[k].mean() - s.t_bf_true_degC)
            + 2.0 * (s.t_mean_degC - s.t_bf_true_degC)
            for s, k in zip(snaps, keep.numpy(), strict=True)]  # fmt: skip
    np.testing.assert_allclose(subset_targets_um(snaps, keep).numpy(), want, rtol=1e-5)
    with pytest.raises(ValueError, match="per-field optima"):
        subset_targets_um(_planted_snapshots(1), keep[:1])


def test_head_trained_on_random_tables_learns_from_few_positions():
    """Trained on random subsets (3..8 of 8 positions) with each subset's own target, the
    head learns the relation on the smallest tables too (reported in its summary)."""
    train, val = _field_snapshots(400), _field_snapshots(60, seed=1)
    cfg = PlateauHeadConfig(hidden=16, members=2, epochs=60, batch=64, seed=3, min_fields=3)
    _, summary = train_plateau_head(train, cfg, val)
    assert summary["min_fields_per_snapshot"] == 3 and summary["fields_per_snapshot"] == 8
    assert summary["validation_rms_residual_um"] < 0.5 * summary["validation_rms_target_um"]
    small_target = summary["validation_rms_target_um_min_fields"]
    assert summary["validation_rms_residual_um_min_fields"] < 0.5 * small_target
    with pytest.raises(ValueError, match="per-field optima"):  # snapshots of the old kind
        train_plateau_head(_planted_snapshots(10), cfg)


def test_build_plateau_head_end_to_end(tmp_path):
    """Emulated training cameras -> snapshots -> head in the model directory; CLI errors."""
    from plato_cnn.cli import main
    from plato_cnn.pipelines.plateau_head import build_plateau_head

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    save_model(FocusNet(FocusNetConfig(crop=16, channels=(8,), blocks_per_stage=1, hidden=8)),
               model_dir)  # fmt: skip
    cfg = PlateauHeadConfig(hidden=8, members=1, epochs=2)
    summary = build_plateau_head(model_dir, tmp_path / "work", n_cameras=2, validation_cameras=1,
                                 workers=1, config=cfg, fields=3, dithers=1, frames=1)  # fmt: skip
    assert summary["train_snapshots"] == 5 and summary["validation_snapshots"] == 5
    _, desc = load_model(model_dir)
    assert desc["plateau_head"]["training"]["train_cameras"] == 1
    assert load_plateau_head(model_dir, desc) is not None
    rc = main(["plateau-head", "--model", str(model_dir), "--cameras", "2",
               "--validation-cameras", "2"])  # fmt: skip
    assert rc == 2
