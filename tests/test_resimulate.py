"""Tabulated cameras and the re-simulation of a camera fitted by the forward method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_builder import save_tiny_model

from plato_cnn.reader import read_campaign
from plato_cnn.resimulate import fitted_camera, resimulate_campaign, resimulated_labels
from plato_sim.errors import ParameterError
from plato_sim.optics.model import CameraModel
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.optics.tabulated import TabulatedOptics
from plato_sim.optics.wavefront import dz_to_z4_nm
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.fields import ground_test_fields
from plato_sim.truth.bestfocus import t0_for_best_focus

LAMBDA_NM = np.array([550.0, 700.0, 850.0])


def _design_camera(seed: int = 3):
    theta, phi = ground_test_fields(5)
    return CameraModel.random(np.random.default_rng(seed), seed), theta, phi


def _tabulate(cam, theta, phi) -> TabulatedOptics:
    z = cam.optics.zernikes_nm(theta, phi, 0.0, np.array([700.0]))[:, 0, :]
    tab = np.zeros((len(theta), 18))
    tab[:, : z.shape[1] - 4] = z[:, 4:]
    return TabulatedOptics(
        theta_deg=tuple(theta), phi_deg=tuple(phi),
        focal_offset_um=tuple(cam.optics.field_focal_offset_um(theta, phi)), zernike_nm=tab,
        chrom_scale=cam.optics.perturbation.chrom_scale, chrom_lin_um=0.0,
    )  # fmt: skip


def test_tabulated_optics_reproduce_the_camera_at_its_positions():
    """A design camera tabulated at its field positions gives its Noll coefficients per
    wavelength (Z4 with the thermal, field and chromatic focal terms) exactly there, and
    refuses a position that is not in the table."""
    cam, theta, phi = _design_camera()
    tab = _tabulate(cam, theta, phi)
    want = cam.optics.zernikes_nm(theta, phi, 12.5, LAMBDA_NM)
    got = tab.zernikes_nm(theta, phi, 12.5, LAMBDA_NM)
    np.testing.assert_allclose(got[..., : want.shape[2]], want, rtol=1e-12, atol=1e-9)
    assert np.all(got[..., want.shape[2] :] == 0.0)
    np.testing.assert_allclose(
        tab.local_focal_offset_um(theta, phi, 3.0, 620.0),
        cam.optics.local_focal_offset_um(theta, phi, 3.0, 620.0), rtol=1e-12,
    )  # fmt: skip
    with pytest.raises(ParameterError, match="not in the table"):
        tab.zernikes_nm([theta[0] + 0.5], [phi[0]], 0.0, LAMBDA_NM)
    with pytest.raises(ParameterError, match="zernike_nm"):
        TabulatedOptics((1.0,), (0.0,), (0.0,), np.zeros((1, 11)))


def _report(cam, theta, phi, t_bf, plateaux=(-86.0, -80.0, -74.0), q=0.0):
    """A forward report describing ``cam`` exactly (what a perfect fit would give)."""
    t_ref = float(np.mean(plateaux))
    s, t0 = cam.thermal.s_um_per_degC, cam.thermal.t0_degC
    z = cam.optics.zernikes_nm(theta, phi, 0.0, np.array([700.0]))[:, 0, :]
    rows = []
    for f in range(len(theta)):
        dz = float(cam.optics.field_focal_offset_um(theta[f], phi[f]))
        row = {"theta_deg": float(theta[f]), "phi_deg": float(phi[f]), "focal_offset_um": dz}
        for j in range(5, 23):
            row[f"Z{j}_nm"] = float(z[f, j - 1]) if j <= z.shape[1] else 0.0
        rows.append(row)
    params = {"b_um": s * (t_ref - t0) + q * (t_ref - t0) ** 2,
              "s_um_per_degC": s + 2 * q * (t_ref - t0), "q_um_per_degC2": q,
              "chrom_scale": cam.optics.perturbation.chrom_scale, "chrom_lin_um": 0.0,
              "diffusion_sigma_px": DEFAULT_DIFFUSION_SIGMA_PX}  # fmt: skip
    return {"params": params, "wavefront": rows, "plateaux_degC": list(plateaux),
            "t0_degC": t0, "bft_degC": t_bf}  # fmt: skip


def test_fitted_camera_keeps_the_reports_thermal_model_and_wavefront():
    """The thermal model is the report's ``b + s dT + q dT^2`` about T_ref rewritten about
    its zero; Z4 at a field is the thermal plus that field's focal offset."""
    cam, theta, phi = _design_camera()
    rep = _report(cam, theta, phi, -79.0, q=0.03)
    got = fitted_camera(rep)
    p, t = rep["params"], np.array([-90.0, -80.0, -71.5])
    d = t - np.mean(rep["plateaux_degC"])
    want = p["b_um"] + p["s_um_per_degC"] * d + p["q_um_per_degC2"] * d * d
    np.testing.assert_allclose(got.thermal.focal_shift_um(t), want, rtol=1e-10, atol=1e-9)
    assert got.thermal.focal_shift_um(cam.thermal.t0_degC) == pytest.approx(0.0, abs=1e-9)
    z4 = got.optics.zernikes_nm(theta, phi, 7.0, [700.0])[:, 0, 3]
    np.testing.assert_allclose(z4, dz_to_z4_nm(7.0 + cam.optics.field_focal_offset_um(theta, phi),
                                               cam.optics.camera.f_number), rtol=1e-12)  # fmt: skip
    assert got.diffusion_sigma_px == DEFAULT_DIFFUSION_SIGMA_PX
    with pytest.raises(ParameterError, match="not a forward report"):
        fitted_camera({"params": {}, "wavefront": []})


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """A design camera at T_BF -79 degC, a report describing it exactly, and that report
    re-simulated on two plateaux (one frame per field and plateau)."""
    eng = FastEngine(diffusion_sigma_px=DEFAULT_DIFFUSION_SIGMA_PX)
    cam, theta, phi = _design_camera()
    sp = ogse_spectrum(cam.optics.camera, 3)
    cam, bf = t0_for_best_focus(cam, -79.0, theta_deg=theta, phi_deg=phi, spectrum=sp, engine=eng,
                                n_sub=2)  # fmt: skip
    rep = _report(cam, theta, phi, bf.bft_degC)
    d = tmp_path_factory.mktemp("resim") / "camp"
    emulated, truth = resimulate_campaign(
        rep, d, (-85.0, -73.0), n_dithers=1, frames_per_dither=1,
        n_sub_truth=2, window_px=32, n_background_frames=1, n_wavelengths=3,
    )  # fmt: skip
    return dict(cam=cam, bf=bf, rep=rep, dir=d, emulated=emulated, truth=truth, eng=eng,
                theta=theta, phi=phi)  # fmt: skip


def test_resimulated_campaign_of_an_exact_report_is_the_camera(exact):
    """A report that describes a camera exactly, re-simulated: the emulator puts its thermal
    zero where the camera's is (same optics, same T_BF), the campaign reads back, and the
    labels are each frame's thermal shift less its field's optimum: negative on the cold
    plateau, positive on the warm one (s > 0)."""
    e = exact
    assert e["truth"]["family"] == "tabulated"
    assert e["truth"]["bft_degC"] == pytest.approx(e["bf"].bft_degC)
    assert e["emulated"].thermal.t0_degC == pytest.approx(e["cam"].thermal.t0_degC, abs=0.01)
    fr = read_campaign(e["dir"])
    fr = fr.select(fr.usable)
    assert len(fr) == 2 * len(e["theta"])
    lab = resimulated_labels(
        fr, e["emulated"], n_sub=2, spectrum=ogse_spectrum(e["cam"].optics.camera, 3)
    )
    cold = fr.temperature_degC < -80
    assert np.all(lab[cold] < -40) and np.all(lab[~cold] > 40)


def test_finetune_trains_on_the_resimulated_fitted_camera(exact, tmp_path):
    """``FinetuneConfig(resimulate=True)``: each camera's report is re-simulated under the
    model folder and its frames, with exact labels, join the camera's own frames in every
    epoch, and so do those of ``resim_variants`` varied copies of it (one campaign each,
    kept beside the fitted camera's); without physics labels it is refused."""

    from plato_cnn.pipelines.finetune import FinetuneConfig, finetune
    from plato_sim.truth.bestfocus import field_best_focus_um

    e = exact
    fr = read_campaign(e["dir"])
    fr = fr.select(fr.usable)
    p = e["rep"]["params"]
    best, _ = field_best_focus_um(e["cam"].optics, e["theta"], e["phi"], engine=e["eng"], n_sub=2,
                                  spectrum=ogse_spectrum(e["cam"].optics.camera, 3))  # fmt: skip
    rep = dict(e["rep"], sigma_degC=0.01, outside_model=False, chi2={"reduced": 1.0},
               s_um_per_degC=p["s_um_per_degC"],
               field_focus={"theta_deg": list(e["theta"]), "phi_deg": list(e["phi"]),
                            "dz_th_best_um": list(best), "n_sub": 2,
                            "thermal": {"t_ref_degC": float(np.mean(e["rep"]["plateaux_degC"])),
                                        "b_um": p["b_um"], "s_um_per_degC": p["s_um_per_degC"],
                                        "q_um_per_degC2": p["q_um_per_degC2"]}})  # fmt: skip
    base = save_tiny_model(tmp_path / "base", template=False)
    cfg = FinetuneConfig(epochs=1, batch_size=16, resimulate=True, resim_dithers=1,
                         resim_frames_per_dither=1, resim_n_sub_truth=2, resim_variants=1,
                         variant_dithers=1, variant_n_sub_truth=2, resim_n_wavelengths=3,
                         cv_sigma=False)  # fmt: skip
    out = tmp_path / "ft"
    summary = finetune([fr], out, base, cfg, progress=False, forward_reports=[rep])
    kept = sorted((out / "resimulated").glob("*.truth.json"), key=lambda p: "_v00." in p.name)
    resim, variant = kept
    assert variant.name.endswith("_v00.truth.json") and "_v00." not in resim.name
    # the fitted camera and its variant, each 5 plateaux x 1 frame per field
    assert summary["history"][0]["samples"] == len(fr) + 2 * 5 * len(e["theta"])
    with pytest.raises(ParameterError, match="resim_variants"):
        finetune([fr], tmp_path / "ft3", base, FinetuneConfig(resim_variants=2), progress=False)
    with pytest.raises(ParameterError, match="physics labels"):
        finetune([fr], tmp_path / "ft2", base, FinetuneConfig(labels="eef", resimulate=True),
                 progress=False)  # fmt: skip


def _random_table(seed: int = 5) -> TabulatedOptics:
    rng = np.random.default_rng(seed)
    theta, phi = ground_test_fields(5)
    return TabulatedOptics(
        theta_deg=tuple(theta), phi_deg=tuple(phi), focal_offset_um=tuple(rng.normal(0, 5, 5)),
        zernike_nm=rng.normal(0.0, 40.0, (5, 18)),
    )  # fmt: skip


@pytest.mark.parametrize("turns, mirror", [(1, False), (2, False), (3, True), (0, True)])
def test_turned_optics_give_the_turned_image(turns, mirror):
    """Every Noll term through Z22 turns with the optics: the stamp of the turned optics at
    the turned position is the original stamp turned (a quarter turn towards +phi maps the
    pixel at (x, y) to (-y, x)) after the mirror (y -> -y), to float64 precision."""
    tab = _random_table()
    eng = FastEngine(fov_px=16, dtype=torch.float64)
    sp = ogse_spectrum(tab.camera, 1)
    got_tab = tab.turned(turns, mirror)
    np.testing.assert_allclose(got_tab.theta_deg, tab.theta_deg)
    for f in range(2):
        z0 = tab.zernikes_nm(tab.theta_deg[f], tab.phi_deg[f], 30.0, sp.wavelengths_nm)
        z1 = got_tab.zernikes_nm(got_tab.theta_deg[f], got_tab.phi_deg[f], 30.0, sp.wavelengths_nm)
        a = eng.render(z0, sp, np.zeros((1, 1, 2)), size=33)[0, 0]
        b = eng.render(z1, sp, np.zeros((1, 1, 2)), size=33)[0, 0]
        want = np.flipud(a) if mirror else a
        want = np.rot90(want, k=-turns)  # rows are +y: numpy's k=-1 is +90 deg in (x, y)
        # within the engine's window on both (it spans -8 < x <= 8 about the star: asymmetric)
        core = (slice(9, 24), slice(9, 24))
        np.testing.assert_allclose(b[core], want[core], atol=1e-9 * a.sum())
        assert np.abs(b - a).max() > 1e-4 * a.sum() or turns % 4 == 0 and not mirror


def test_scaled_and_varied_cameras():
    """``scaled`` multiplies each named Noll term at every position; ``varied_camera`` is a
    turned, mirrored or not, term-by-term scaled copy with the same thermal model, drawn
    reproducibly from its generator."""
    from plato_cnn.resimulate import VARIANT_AMPLITUDE, varied_camera
    from plato_sim.optics.tabulated import TabulatedCamera
    from plato_sim.optics.thermal import ThermalModel

    tab = _random_table()
    z = np.array(tab.scaled({5: 2.0, 22: 0.0}).zernike_nm)
    np.testing.assert_allclose(z[:, 0], 2.0 * np.array(tab.zernike_nm)[:, 0])
    np.testing.assert_allclose(z[:, 1:17], np.array(tab.zernike_nm)[:, 1:17])
    assert np.all(z[:, 17] == 0.0)
    with pytest.raises(ParameterError):
        tab.scaled({4: 1.0})
    cam = TabulatedCamera(optics=tab, thermal=ThermalModel(10.0, -80.0), diffusion_sigma_px=0.25)
    a = varied_camera(cam, np.random.default_rng(7))
    assert a == varied_camera(cam, np.random.default_rng(7))
    assert a.thermal == cam.thermal and 0.2 <= a.diffusion_sigma_px <= 0.3
    # a varied camera's term j, up to the turn of its pair, lies within the amplitude range
    rms_var = np.sqrt(np.sum(np.square(a.optics.zernike_nm), axis=0))
    rms_cam = np.sqrt(np.sum(np.square(tab.zernike_nm), axis=0))
    m0 = [11 - 5, 22 - 5]  # the rotationally symmetric terms keep their values per position
    ratio = rms_var[m0] / rms_cam[m0]
    assert np.all((ratio >= VARIANT_AMPLITUDE[0]) & (ratio <= VARIANT_AMPLITUDE[1]))


def test_variant_share_caps_each_epochs_varied_frames():
    """``variant_share``: the varied cameras' frames of an epoch are a random subset holding
    at most that share of the epoch; None keeps them all."""
    from torch.utils.data import TensorDataset

    from plato_cnn.pipelines.finetune import _variant_subset

    rng = np.random.default_rng(0)
    variants = [TensorDataset(torch.arange(300)), TensorDataset(torch.arange(500))]
    assert _variant_subset(variants, 200, None, rng) is variants
    (sub,) = _variant_subset(variants, 200, 0.5, rng)
    assert len(sub) == 200  # as many as the other frames
    assert len(set(sub.indices)) == 200
    (sub,) = _variant_subset(variants, 10_000, 0.5, rng)
    assert len(sub) == 800  # never more than there are


def test_resimulated_folders_are_named_by_what_defines_them():
    """A kept re-simulated campaign is reused on its truth file alone, so its folder's name
    carries the fit and the design: another fit, design or variant range is another folder."""
    from plato_cnn.pipelines.finetune import _resim_tag

    rep = {"params": {"s_um_per_degC": 10.0}, "wavefront": [{"Z5_nm": 1.0}],
           "plateaux_degC": [-85.0, -75.0], "t0_degC": -80.0, "wall_s": 3.0}  # fmt: skip
    tag = _resim_tag(rep, 5, 2, 4, 10, (0.5, 1.5))
    assert tag == _resim_tag(dict(rep, wall_s=9.0), 5, 2, 4, 10, (0.5, 1.5))  # timing is not fit
    assert tag != _resim_tag(rep, 5, 2, 4, 10, (0.5, 2.0))
    assert tag != _resim_tag(rep, 6, 2, 4, 10, (0.5, 1.5))
    assert tag != _resim_tag(dict(rep, t0_degC=-79.0), 5, 2, 4, 10, (0.5, 1.5))
    assert len(tag) == 8


def test_field_head_finetune_command(exact, tmp_path, capsys):
    """``plato-cnn field-head-finetune``: three campaigns with their forward reports give a
    head for the same FocusNet, trained on variants of the fitted cameras, whose systematic
    terms are its leave-one-camera-out ones (the starting head's family term dropped), and
    ``bft --method field --field-head`` reads it."""
    import json

    from plato_cnn.cli import main
    from plato_cnn.nn.card import load_model
    from plato_cnn.nn.field_head import (
        FAMILY_TUNED,
        FieldHead,
        FieldHeadCard,
        FieldHeadConfig,
        feature_dim,
        load_field_head,
        network_digest,
        save_field_head,
    )

    model = save_tiny_model(tmp_path / "model", 0)
    net, _ = load_model(model)
    torch.manual_seed(0)
    head = FieldHead(FieldHeadConfig(feature_dim=feature_dim(net), hidden=8))
    card = FieldHeadCard(config={}, base_weights_sha256=network_digest(model),
                         systematic_sigma_degC={"5": 0.3},
                         family_sigma_degC={"5": 0.4})  # fmt: skip
    save_field_head(head, card, tmp_path / "start")
    rep = dict(exact["rep"], chi2={"reduced": 1.0}, field_focus={})
    (tmp_path / "fw.json").write_text(json.dumps(rep))
    camp, out = str(exact["dir"]), tmp_path / "tuned"
    rc = main(["field-head-finetune", "--campaign", camp, camp, camp, "--forward-json",
               *[str(tmp_path / "fw.json")] * 3, "--field-head", str(tmp_path / "start"),
               "--model", str(model), "--variants", "1", "--steps", "20", "--workers", "1",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "leave-one-camera-out RMS" in capsys.readouterr().out
    _, tuned = load_field_head(out, network_digest(model))
    cv = tuned.training["finetune"]["cross_validation"]
    assert tuned.systematic_sigma_degC == {k: v["systematic_sigma_degC"] for k, v in cv.items()}
    assert tuned.family_sigma_degC == {} and tuned.training["finetune"]["n_series"] > 0
    assert tuned.calibration["source"] == FAMILY_TUNED
    assert len(list((out / "variants").glob("cam*_v000_*.truth.json"))) == 3
    assert len(list((out / "variants").glob("cam*_v000_*.labels.json"))) == 3
    js = tmp_path / "r.json"
    assert main(["bft", camp, "--method", "field", "--model", str(model), "--field-head",
                 str(out), "--json", str(js)]) == 0  # fmt: skip
    assert json.loads(js.read_text())["n_plateaux"] == 2


def test_a_kept_variant_is_read_back_with_its_labels(exact, tmp_path, monkeypatch):
    """A variant imaged before (same draw, same folder) is not labelled again: its labels
    are read from beside its campaign, equal to the first ones."""
    import json

    from plato_cnn.pipelines import field_head_finetune as fhf

    rep = dict(exact["rep"], chi2={"reduced": 1.0}, field_focus={})
    job = dict(cfg=fhf.FieldHeadFinetuneConfig(dithers=1, plateaux=2), report=rep, camera=0,
               variant=0, workdir=str(tmp_path))  # fmt: skip
    first = fhf._image_variant(job)
    kept = json.loads((tmp_path / (first["folder"].split("/")[-1] + ".labels.json")).read_text())
    np.testing.assert_array_equal(kept["t_best_degC"], first["t_f"])

    def no_search(camera):
        raise AssertionError("labelled again")

    monkeypatch.setattr(fhf, "_field_labels_degC", no_search)
    again = fhf._image_variant(job)
    assert again["folder"] == first["folder"]
    np.testing.assert_array_equal(again["t_f"], first["t_f"])
