"""FocusNet, its training loop (checkpoint, resume), model directories and the BFT fit."""

import json

import numpy as np
import pytest
import torch

from plato_cnn.fit import EEFTemplate, fit_bft
from plato_cnn.nn.card import ModelFormatError, load_model, save_model
from plato_cnn.nn.data import ArrayFocusDataset
from plato_cnn.nn.model import FocusNet, FocusNetConfig, prepare_inputs
from plato_cnn.pipelines.pretrain import TrainConfig, augment, pretrain, split_by_group
from plato_sim.optics.model import CameraModel
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.psf import FastEngine

SMALL = FocusNetConfig(crop=16, channels=(8, 16), blocks_per_stage=1, hidden=32)


@pytest.fixture(scope="module")
def tiny_dataset():
    """Noisy synthetic stamps of 4 random cameras, target = thermal focal shift."""
    rng = np.random.default_rng(3)
    eng = FastEngine()
    sp = ogse_spectrum(CameraModel().optics.camera, 4)
    stamps, th, ph, dz, grp = [], [], [], [], []
    for cam in range(4):
        model = CameraModel.random(rng, cam)
        n = 48
        t = rng.uniform(0, 18, n)
        p = rng.uniform(0, 360, n)
        d = rng.uniform(-150, 150, n)
        z = model.optics.zernikes_nm(t, p, d, sp.wavelengths_array_nm)
        off = rng.uniform(-0.5, 0.5, (n, 2))
        s = eng.render(z, sp, off, 32) * 2e5 + rng.normal(0, 50, (n, 32, 32))
        stamps.append(s)
        th.append(t)
        ph.append(p)
        dz.append(d)
        grp.append(np.full(n, cam))
    return ArrayFocusDataset(
        np.concatenate(stamps), np.concatenate(th), np.concatenate(ph),
        np.concatenate(dz), np.concatenate(grp),
    )  # fmt: skip


def test_prepare_inputs_is_flux_free():
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 1, (3, 32, 32)).astype(np.float32)
    a, sa = prepare_inputs(s, [1, 2, 3], [0, 90, 180])
    b, sb = prepare_inputs(10 * s, [1, 2, 3], [0, 90, 180])
    assert torch.allclose(a, b) and a.shape == (3, 1, 20, 20)
    assert torch.allclose(sb[:, -1] - sa[:, -1], torch.ones(3))
    with pytest.raises(ValueError, match="crop"):
        prepare_inputs(s[:, :10, :10], [1, 2, 3], [0, 90, 180])


def test_split_holds_out_whole_groups():
    g = np.repeat(np.arange(10), 7)
    tr, va = split_by_group(g, 0.2, 0)
    assert set(g[tr]).isdisjoint(set(g[va])) and len(set(g[va])) == 2
    assert len(tr) + len(va) == len(g)


def test_augmentation_maps_phi_with_the_image():
    # a stamp with its light to the +x side of the centre, at phi = 0
    s = torch.zeros(64, 8, 8)
    s[:, 4, 6] = 1.0
    phi = torch.zeros(64)
    x, p = augment(s, phi, torch.Generator().manual_seed(1))
    for k in range(64):
        r, c = np.unravel_index(int(torch.argmax(x[k])), (8, 8))
        assert (r - 4, c - 4) in {(0, 2), (0, -2), (2, 0), (-2, 0)}  # still 2 px from centre
        ang = np.degrees(np.arctan2(r - 4, c - 4))  # rows grow with y (camera convention)
        diff = (ang - float(p[k]) + 180.0) % 360.0 - 180.0
        assert abs(diff) < 1e-4


def test_pretrain_is_deterministic_and_loadable(tiny_dataset, tmp_path):
    cfg1 = TrainConfig(epochs=2, batch_size=32, seed=1, val_fraction=0.25, deterministic=True)
    full = pretrain(tiny_dataset, tmp_path / "a", cfg1, SMALL, progress=False)
    assert full["epochs"] == 2 and np.isfinite(full["best_val_rmse_um"])
    # the same run again in another folder gives bit-identical weights (CPU, deterministic mode)
    pretrain(tiny_dataset, tmp_path / "b", cfg1, SMALL, progress=False)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ck["state"]["epoch"] == 2
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    for k in wa:
        assert torch.equal(wa[k], ck["model"][k]), k
    model, desc = load_model(tmp_path / "a")
    assert desc["architecture"]["channels"] == [8, 16]
    log = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and log[0].startswith("epoch")
    pred = model.predict(
        tiny_dataset.stamps[:5], tiny_dataset.theta_deg[:5], tiny_dataset.phi_deg[:5]
    )
    assert pred["mu_um"].shape == (5,) and np.all(pred["sigma_um"] > 0)


def test_resume_after_interruption_equals_uninterrupted(tiny_dataset, tmp_path):
    kw = dict(batch_size=32, seed=2, val_fraction=0.25, deterministic=True, patience=99)
    pretrain(tiny_dataset, tmp_path / "x", TrainConfig(epochs=3, **kw), SMALL, progress=False)
    # interrupted after epoch 1: emulate by training a 1-epoch checkpoint with the same config
    out = tmp_path / "y"
    cfg = TrainConfig(epochs=3, **kw)
    import plato_cnn.pipelines.pretrain as tr

    real = tr.evaluate
    calls = {"n": 0}

    def crash_after_first(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash in epoch 2")
        return real(*a, **k)

    tr.evaluate = crash_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(tiny_dataset, out, cfg, SMALL, progress=False)
    finally:
        tr.evaluate = real
    assert torch.load(out / "checkpoint.pt", weights_only=False)["state"]["epoch"] == 1
    pretrain(tiny_dataset, out, cfg, SMALL, progress=False)
    a = torch.load(tmp_path / "x" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_model_dir_mismatch_is_refused(tmp_path):
    m = FocusNet(SMALL)
    save_model(m, tmp_path)
    desc = json.loads((tmp_path / "model.json").read_text())
    desc["architecture"]["channels"] = [8, 32]
    (tmp_path / "model.json").write_text(json.dumps(desc))
    with pytest.raises(ModelFormatError, match="does not match"):
        load_model(tmp_path)
    with pytest.raises(ModelFormatError, match="missing"):
        load_model(tmp_path / "nowhere")


def test_fit_bft_recovers_the_thermal_model():
    rng = np.random.default_rng(0)
    nf, s_true = 40, 8.5
    t_f = -79.0 + rng.normal(0, 1.0, nf)
    temps = np.repeat([-90.0, -85, -80, -75, -70], nf * 6) + rng.normal(0, 0.02, nf * 30)
    fid = np.tile(np.repeat(np.arange(nf), 6), 5)
    d = s_true * (temps - t_f[fid]) + rng.normal(0, 6.0, temps.size)
    d[::97] += 300.0  # a few wild frames: the fit is robust
    r = fit_bft(d, np.full(d.size, 6.0), temps, fid, n_boot=50)
    assert r.s_measured and r.s_um_per_degC == pytest.approx(s_true, rel=0.03)
    assert r.bft_degC == pytest.approx(t_f.mean(), abs=0.1)
    assert 0.0 < r.sigma_degC < 0.3
    # an asymmetric EEF template moves T_BF towards the side where the EEF falls slowly
    g = EEFTemplate((-200.0, 0.0, 400.0), (0.0, 1.0, 0.0))
    r2 = fit_bft(d, np.full(d.size, 6.0), temps, fid, template=g, n_boot=10, combine="template")
    assert r2.template_shift_degC > 0.0
    assert r2.bft_degC == pytest.approx(r.bft_degC + r2.template_shift_degC, abs=1e-9)
    # by default the template is a diagnostic only: T_BF stays the mean of the T_f
    r4 = fit_bft(d, np.full(d.size, 6.0), temps, fid, template=g, n_boot=10)
    assert r4.bft_degC == pytest.approx(r.bft_degC, abs=1e-12)
    assert r4.template_shift_degC == pytest.approx(r2.template_shift_degC, abs=1e-12)
    # one plateau: s is the prior's, the sign head decides or flags ambiguity
    one = np.abs(temps + 80) < 1
    r3 = fit_bft(d[one], np.full(one.sum(), 6.0), temps[one], fid[one],
                 p_behind=np.full(one.sum(), 0.5), n_boot=20)  # fmt: skip
    assert not r3.s_measured and r3.sign_ambiguous
    assert not any("implausible" in w or "outside" in w for w in r.warnings)


def test_thermal_residual_sees_a_bias_the_model_cannot_absorb_not_frame_noise():
    """Offsets on the thermal model plus frame noise: ~0 um; plus a per-(field, plateau) bias
    of known RMS that no s and T_f can absorb: that RMS back; one plateau: 0."""
    from plato_cnn.fit import thermal_residual_um

    rng = np.random.default_rng(3)
    nf, per, plats = 30, 8, np.array([-90.0, -85, -80, -75, -70])
    temps = np.repeat(plats, nf * per)
    fid = np.tile(np.repeat(np.arange(nf), per), 5)
    t_f = -79.0 + rng.normal(0, 1.0, nf)
    clean = 9.0 * (temps - t_f[fid])
    noisy = clean + rng.normal(0, 15.0, temps.size)
    r = fit_bft(noisy, np.full(temps.size, 15.0), temps, fid, n_boot=0)
    assert r.thermal_residual_um < 1.5  # 15 um frame noise: 5.3 um per cell mean, removed
    # a bias alternating in sign between plateaux and fields: orthogonal to s and T_f
    sign = np.where((fid + np.searchsorted(plats, temps)) % 2 == 0, 1.0, -1.0)
    biased = noisy + 10.0 * sign
    r = fit_bft(biased, np.full(temps.size, 15.0), temps, fid, n_boot=0)
    assert r.thermal_residual_um == pytest.approx(10.0, rel=0.15)
    one = temps == -80.0  # one plateau: each cell is its field's, absorbed by its T_f
    t_f_one = -80.0 - np.bincount(fid[one], biased[one]) / per / 9.0
    assert thermal_residual_um(biased[one], temps[one], fid[one], temps[one], 9.0, t_f_one) < 1e-6
    assert np.isnan(thermal_residual_um(clean[::per], temps[::per], fid[::per], temps[::per],
                                        9.0, t_f))  # fmt: skip


def test_fit_bft_warns_when_the_offsets_do_not_follow_temperature():
    """A network blind to focus (offsets almost flat in T) must not pass silently."""
    rng = np.random.default_rng(1)
    nf = 20
    temps = np.repeat([-90.0, -85, -80, -75, -70], nf * 4)
    fid = np.tile(np.repeat(np.arange(nf), 4), 5)
    d = 0.8 * (temps + 120.0) + rng.normal(0, 2.0, temps.size)  # s ~ 0.8, T_f ~ -120
    r = fit_bft(d, np.full(d.size, 2.0), temps, fid, n_boot=10)
    assert r.s_um_per_degC == pytest.approx(0.8, rel=0.1)
    assert any("implausible" in w for w in r.warnings)
    assert any("outside the sampled range" in w for w in r.warnings)
