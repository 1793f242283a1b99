"""Fine-tuning the field head on cameras like forward-fitted ones: the variants' draws.

The pipeline's effect is measured by ``benchmarks/field_head_transfer.py`` (docs/cnn.md
section 7); these tests check what each variant is made of: foci that the reader keeps apart,
a thermal response from the head's own training prior, and the same draws from the same seed.
"""

import numpy as np
import pytest
import torch

from plato_cnn.pipelines.field_head import SeriesSet
from plato_cnn.pipelines.field_head_finetune import (
    FieldHeadFinetuneConfig,
    _thermal_prior,
    _variant,
    foci_degC,
)
from plato_sim.errors import ParameterError
from plato_sim.optics.tabulated import TabulatedCamera, TabulatedOptics
from plato_sim.optics.thermal import ThermalModel


def _camera() -> TabulatedCamera:
    z = np.zeros((2, 18))
    z[:, 0] = [30.0, -20.0]  # Z5
    z[:, 6] = [15.0, 10.0]  # Z11
    optics = TabulatedOptics(theta_deg=(0.0, 10.0), phi_deg=(0.0, 45.0),
                             focal_offset_um=(0.0, 5.0), zernike_nm=z, chrom_scale=1.0,
                             chrom_lin_um=0.0)  # fmt: skip
    return TabulatedCamera(optics=optics, thermal=ThermalModel(9.0, -75.0, 0.01),
                           diffusion_sigma_px=0.2)  # fmt: skip


def test_settings_are_checked():
    for bad in (dict(variants=0), dict(plateaux=1), dict(steps=0), dict(lr=0.0), dict(l2sp=-1.0),
                dict(focus_half_range_um=0.0), dict(rehearsal_fraction=0.0),
                dict(rehearsal_fraction=1.0), dict(lr_schedule="linear")):  # fmt: skip
        with pytest.raises(ParameterError):
            FieldHeadFinetuneConfig(**bad)


@pytest.mark.parametrize("s", [6.0, 14.0, -9.0])
def test_foci_cover_the_range_and_stay_apart(s):
    cfg = FieldHeadFinetuneConfig()
    t = np.asarray(foci_degC({"bft_degC": -80.0}, s, cfg, np.random.default_rng(1)))
    half = cfg.focus_half_range_um / abs(s)
    assert len(t) == cfg.plateaux and np.all(np.diff(t) > 0.5)  # the reader's tolerance
    assert np.all(np.abs(t + 80.0) <= half + 0.05)
    assert t[0] < -80.0 - 0.5 * half and t[-1] > -80.0 + 0.5 * half  # both sides of focus


@pytest.mark.parametrize("s", [6.0, 14.0])
def test_campaign_foci_span_a_test_window_with_the_bft_anywhere_in_it(s):
    cfg = FieldHeadFinetuneConfig(foci="campaign")
    where = []
    for k in range(200):
        t = np.asarray(foci_degC({"bft_degC": -80.0}, s, cfg, np.random.default_rng(k)))
        assert len(t) == cfg.plateaux and np.all(np.diff(t) > 0.5)
        # the TRP1 span is the window's whatever s (not 2 x 200 um / s)
        assert cfg.campaign_span_degC * 0.75 < np.ptp(t) <= cfg.campaign_span_degC + 0.05
        where.append((-80.0 - t[0]) / np.ptp(t))
    where = np.asarray(where)
    # the T_BF falls anywhere in the window: near either end as often as in the middle
    assert where.min() < 0.1 and where.max() > 0.9 and 0.4 < np.mean(where) < 0.6


def test_foci_mode_is_checked():
    with pytest.raises(ParameterError):
        FieldHeadFinetuneConfig(foci="plateaux")
    with pytest.raises(ParameterError):
        FieldHeadFinetuneConfig(foci="campaign", campaign_span_degC=0.0)


def test_variants_draw_the_thermal_prior_and_repeat_with_the_seed():
    s_spec, _, reach = _thermal_prior()
    base = _camera()
    cams = [_variant(base, np.random.default_rng(k)) for k in range(40)]
    s = np.array([c.thermal.s_um_per_degC for c in cams])
    q = np.array([c.thermal.q_um_per_degC2 for c in cams])
    assert s.min() >= s_spec[0] and s.max() <= s_spec[1] and np.ptp(s) > 3.0
    assert np.all(np.abs(q) <= s**2 / (4.0 * reach) + 1e-12) and np.any(q != 0.0)
    assert all(c.thermal.t0_degC == base.thermal.t0_degC for c in cams)
    z = np.array([np.asarray(c.optics.zernike_nm) for c in cams])
    assert np.ptp(z[:, :, 0]) > 0  # turned, mirrored, scaled: not one camera 40 times
    again = _variant(base, np.random.default_rng(3))
    assert again.thermal == cams[3].thermal
    np.testing.assert_array_equal(np.asarray(again.optics.zernike_nm), z[3])


# ----------------------------------------------------------------------------- cross-validation
@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory):
    """A tiny FocusNet, an untrained field head for it, 3 small campaigns (their own seeds)
    and a synthetic variant set: 6 series of 8 plateaux per camera."""
    from campaign_builder import T_BEST, make_campaign
    from model_builder import save_tiny_model

    from plato_cnn.nn.card import load_model
    from plato_cnn.nn.field_head import (
        FieldHead,
        FieldHeadCard,
        FieldHeadConfig,
        feature_dim,
        network_digest,
        save_field_head,
    )
    from plato_cnn.pipelines.field_head import SeriesSet
    from plato_cnn.reader import read_campaign

    root = tmp_path_factory.mktemp("cv")
    model = save_tiny_model(root / "model", 0)
    net, _ = load_model(model)
    torch.manual_seed(0)
    head = FieldHead(FieldHeadConfig(feature_dim=feature_dim(net), hidden=8))
    card = FieldHeadCard(config={}, base_weights_sha256=network_digest(model),
                         systematic_sigma_degC={"5": 0.3, "1": 2.0},
                         family_sigma_degC={"5": 0.4})  # fmt: skip
    save_field_head(head, card, root / "head")
    frames = []
    for k in range(3):
        fr = read_campaign(make_campaign(root / f"c{k}", n_fields=3, n_dithers=2, seed=k))
        frames.append(fr.select(fr.usable))
    rng = np.random.default_rng(5)
    n, d = 18, feature_dim(net)
    series = SeriesSet(
        features=rng.normal(size=(n, 8, d)).astype(np.float32),
        temperature_degC=-90.0 + 2.5 * np.arange(8)[None].repeat(n, 0),
        t_best_degC=T_BEST + rng.normal(0.0, 0.5, n),
        camera_id=np.repeat(np.arange(3), 6),
    )
    reports = [{"bft_degC": T_BEST} for _ in range(3)]
    return dict(model=model, head=root / "head", digest=network_digest(model), frames=frames,
                series=series, reports=reports)  # fmt: skip


def test_a_held_out_camera_never_reaches_its_own_fold(tiny_head):
    """Leave-one-camera-out: changing camera 0's variant labels leaves camera 0's error
    (its fold never trained on them) bit for bit and moves camera 1's (trained on them); the
    term of every plateau count is the quadrature RMS of the errors beyond their statistical
    sigma."""
    from dataclasses import replace

    from plato_cnn.pipelines.field_head_finetune import cross_validated_terms

    t = tiny_head
    cfg = FieldHeadFinetuneConfig(steps=20, batch=8, lr=1e-2, l2sp=0.0)
    args = (t["frames"], t["reports"], cfg, t["model"])
    base = cross_validated_terms(t["head"], t["digest"], t["series"], *args)
    assert sorted(base) == ["1", "2", "3", "5"]
    s = t["series"]
    poisoned = replace(s, t_best_degC=np.where(s.camera_id == 0, s.t_best_degC + 30.0,
                                               s.t_best_degC))  # fmt: skip
    moved = cross_validated_terms(t["head"], t["digest"], poisoned, *args)
    for k in base:
        assert moved[k]["errors_degC"][0] == base[k]["errors_degC"][0]
        assert moved[k]["errors_degC"][1] != base[k]["errors_degC"][1]
        row = base[k]
        assert row["n_fits"] == 3 and len(row["errors_degC"]) == 3
        assert row["rms_error_degC"] == pytest.approx(
            np.sqrt(np.mean(np.square(row["errors_degC"])))
        )
        e, stat = np.asarray(row["errors_degC"]), np.asarray(row["stat_sigma_degC"])
        term = np.sqrt(max(0.0, np.mean(e**2 - stat**2)))
        assert row["systematic_sigma_degC"] == pytest.approx(term)
        assert row["coverage"] == pytest.approx(np.mean(np.abs(e) <= np.hypot(stat, term)))


def test_cross_validation_needs_one_campaign_per_report_and_three_cameras(tiny_head, tmp_path):
    from plato_cnn.pipelines.field_head_finetune import (
        cross_validated_terms,
        finetune_field_head,
    )

    t = tiny_head
    cfg = FieldHeadFinetuneConfig(steps=2)
    with pytest.raises(ParameterError, match="one per camera"):
        cross_validated_terms(t["head"], t["digest"], t["series"], t["frames"][:2], t["reports"],
                              cfg, t["model"])  # fmt: skip
    with pytest.raises(ParameterError, match="at least 3"):
        finetune_field_head(t["reports"][:2], tmp_path / "o", tmp_path / "w", t["head"],
                            t["model"], cfg, frames_list=t["frames"][:2])  # fmt: skip


def test_own_series_carry_the_forward_fits_field_labels(tiny_head):
    """A fitted camera's own series: one per field position of its table, labelled with that
    position's ``t_best_degC``; a position the fit's table lacks is left out; without a
    ``field_focus`` block the report is refused."""
    from plato_cnn.nn.card import load_model
    from plato_cnn.pipelines.field_head_finetune import own_series

    t = tiny_head
    fr = t["frames"][0]
    net, _ = load_model(t["model"])
    first = [np.flatnonzero(fr.field_id == f)[0] for f in np.unique(fr.field_id)]
    theta, phi = fr.field_theta_deg[first], fr.field_phi_deg[first]
    ff = {"theta_deg": theta[1:].tolist(), "phi_deg": phi[1:].tolist(),
          "t_best_degC": [-81.0, -77.5][: len(theta) - 1]}  # fmt: skip
    ser = own_series(fr, {"field_focus": ff}, net, 7)
    assert len(ser.t_best_degC) == len(theta) - 1 and np.all(ser.camera_id == 7)
    assert sorted(ser.t_best_degC) == sorted(ff["t_best_degC"])
    assert ser.features.shape[1] == 5 and ser.temperature_degC.shape == (len(theta) - 1, 5)
    with pytest.raises(ParameterError, match="field_focus"):
        own_series(fr, {"bft_degC": -80.0}, net, 0)


def test_mixed_batches_pad_the_plateaux_and_follow_the_repeats(tiny_head):
    """Series of 8 and of 5 plateaux in one batch: padded plateaux are masked out, and each
    set is drawn in proportion to its size times its repeats."""
    from plato_cnn.nn.field_head import TEMPERATURE_SCALE_DEGC
    from plato_cnn.pipelines.field_head_finetune import _draw

    s = tiny_head["series"]  # 18 series of 8 plateaux
    short = SeriesSet(s.features[:3, :3], s.temperature_degC[:3, :3], s.t_best_degC[:3] + 100.0,
                      s.camera_id[:3])  # fmt: skip
    x, dt, mask, y, n = _draw([(s, 1), (short, 6)], 4000, np.random.default_rng(0))
    assert x.shape[:2] == dt.shape == mask.shape == (4000, 5)
    assert np.array_equal(mask.sum(1).numpy(), n)
    far = y.numpy() * TEMPERATURE_SCALE_DEGC > 50.0  # the short ones: 100 degC away
    from_short = far.mean()
    assert from_short == pytest.approx(18 / 36, abs=0.03)
    assert np.all(n[far] <= 3)


def test_fine_tuning_can_read_its_series_in_windows(tiny_head):
    """With a draw window, every drawn set of states fits in the window's largest width;
    a reversed window is refused."""
    from plato_cnn.pipelines.field_head_finetune import _draw

    s = tiny_head["series"]
    x, dt, mask, y, n = _draw([(s, 1)], 500, np.random.default_rng(1), (4.0, 6.0, 1.0))
    span = (dt.numpy() * mask.numpy()).max(1) - (dt.numpy() + 99 * ~mask.numpy()).min(1)
    assert np.all(span[n > 1] * 10.0 <= 6.0 + 1e-6)  # dT in units of 10 degC
    with pytest.raises(ParameterError):
        FieldHeadFinetuneConfig(draw_window_degC=(30.0, 10.0))


def test_command_refuses_bad_reports_and_outputs_in_inputs(tiny_head, tmp_path, capsys):
    """One line and exit status 2: a forward report per campaign, each with field_focus;
    neither the head nor the variants' folder inside a campaign."""
    import json

    from campaign_builder import make_campaign

    from plato_cnn.cli import main

    camp = str(make_campaign(tmp_path, n_fields=2, n_dithers=1))
    rep = tmp_path / "fw.json"
    rep.write_text(json.dumps({"bft_degC": -80.0, "field_focus": {}}))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"bft_degC": -80.0}))
    common = ["--model", str(tiny_head["model"]), "--field-head", str(tiny_head["head"]),
              "--out", str(tmp_path / "ft")]  # fmt: skip
    for reports, says in (([rep], "one per campaign"), ([rep, bare], "no field_focus block")):
        argv = ["field-head-finetune", "--campaign", camp, camp, "--forward-json",
                *map(str, reports), *common]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err
    assert not (tmp_path / "ft").exists()
    for out in (["--out", f"{camp}/ft"], ["--out", str(tmp_path / "ft"), "--workdir", camp]):
        argv = ["field-head-finetune", "--campaign", camp, "--forward-json", str(rep),
                *common[:4], *out]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "outputs never go into inputs" in err and len(err.strip().splitlines()) == 1


def test_plateau_subsets_by_rank_are_the_standard_ones_on_a_standard_campaign(tmp_path):
    """On the standard five plateaux the rank rule picks PLATEAU_SUBSETS; on seven others it
    keeps their pattern (coldest, middle, warmest; a quarter of the way in from each end; the
    middle one) with no plateau twice."""
    from campaign_builder import make_campaign

    from plato_cnn.pipelines.calibrate import PLATEAU_SUBSETS, plateau_subset_masks
    from plato_cnn.reader import read_campaign

    fr = read_campaign(make_campaign(tmp_path / "std", n_fields=1, n_dithers=1))
    got = plateau_subset_masks(fr)
    assert sorted(got) == sorted(PLATEAU_SUBSETS)
    for k, temps in PLATEAU_SUBSETS.items():
        np.testing.assert_array_equal(got[k], fr.plateau_mask(temps))
    temps = (-95.0, -88.0, -83.0, -79.0, -76.0, -70.0, -62.0)
    fr = read_campaign(make_campaign(tmp_path / "odd", temps=temps, n_fields=1, n_dithers=1))
    by_obs = {k: sorted({round(t) for t in fr.temperature_degC[m]}) for k, m in
              plateau_subset_masks(fr).items()}  # fmt: skip
    assert by_obs[3] == [-95, -79, -62] and by_obs[1] == [-79] and len(by_obs[5]) == 5
    assert by_obs[2] == [-83, -70] and by_obs[5] == [-95, -83, -79, -70, -62]


def test_forward_fits_are_kept_as_soon_as_made(tiny_head, tmp_path, monkeypatch):
    """Without --forward-json each campaign's forward fit (minutes) is written under
    OUT/forward before the next begins, as ``bft --json`` writes a report, so that a run
    stopped later keeps them.  The fit itself is replaced here by a fixed report: this checks
    where and how it is kept, not the fit (tests/test_forward.py)."""
    import argparse
    import json

    import plato_cnn.forward as forward
    from plato_cnn import cli

    fixed = {"bft_degC": -79.25, "field_focus": {"t_best_degC": [-79.0]}, "outside_model": False,
             "chi2": {"reduced": 1.02}}  # fmt: skip
    monkeypatch.setattr(forward, "forward_bft", lambda fr, seed=0, field_focus=False: fixed)
    fr = tiny_head["frames"][0]
    args = argparse.Namespace(out=str(tmp_path / "ft"), seed=0)
    got = cli._kept_forward_fit(fr, 3, args)
    kept = list((tmp_path / "ft" / "forward").glob("03_*.json"))
    assert got == fixed and len(kept) == 1 and json.loads(kept[0].read_text()) == fixed


def test_rehearsal_makes_up_its_fraction_of_the_draws(tiny_head):
    """With the starting head's training series (rehearsal) about ``rehearsal_fraction`` of
    the draws come from them, the variants and the cameras' own series keeping their ratio;
    without, the sets are the variants' (and own) alone, as before."""
    from dataclasses import replace

    from plato_cnn.nn.field_head import TEMPERATURE_SCALE_DEGC
    from plato_cnn.pipelines.field_head_finetune import _draw, tuning_sets

    s = tiny_head["series"]  # 18 series
    rep = {
        f: np.repeat(getattr(s, f), 10, 0) for f in ("features", "temperature_degC", "camera_id")
    }
    big = SeriesSet(t_best_degC=np.repeat(s.t_best_degC, 10, 0) + 100.0, **rep)
    own = SeriesSet(s.features[:3], s.temperature_degC[:3], s.t_best_degC[:3], s.camera_id[:3])
    cfg = FieldHeadFinetuneConfig(own_repeats=2)
    assert tuning_sets(s, own, None, cfg) == [(s, 1), (own, 2)]
    for frac in (0.5, 0.25):
        sets = tuning_sets(s, own, big, replace(cfg, rehearsal_fraction=frac))
        assert [r for _, r in sets][-1] == 1 and sets[-1][0] is big
        assert sets[1][1] == 2 * sets[0][1]  # own : variants as without rehearsal
        y = _draw(sets, 6000, np.random.default_rng(2))[3].numpy() * TEMPERATURE_SCALE_DEGC
        got = float(np.mean(y > 50.0))  # the rehearsal series: 100 degC away
        assert got == pytest.approx(frac, abs=0.06)


def test_cosine_schedule_brings_the_rate_to_zero(tiny_head, monkeypatch):
    """``lr_schedule="cosine"``: the steps' learning rate falls from ``lr`` towards 0 (half of
    it at mid-course); the default keeps ``lr`` throughout."""
    from plato_cnn.nn.field_head import load_field_head
    from plato_cnn.pipelines.field_head_finetune import tune_head

    seen: list[float] = []
    step = torch.optim.AdamW.step

    def recording(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    assert FieldHeadFinetuneConfig().lr_schedule == "constant"
    for schedule in ("constant", "cosine"):
        seen.clear()
        head, _ = load_field_head(tiny_head["head"], tiny_head["digest"])
        cfg = FieldHeadFinetuneConfig(steps=20, batch=8, lr=1e-2, lr_schedule=schedule)
        tune_head(head, [(tiny_head["series"], 1)], cfg)
        assert len(seen) == 20 and seen[0] == pytest.approx(1e-2)
        if schedule == "constant":
            assert seen == [pytest.approx(1e-2)] * 20
        else:
            assert seen[10] == pytest.approx(5e-3) and seen[-1] < 1e-4
            assert all(a > b for a, b in zip(seen, seen[1:], strict=False))
