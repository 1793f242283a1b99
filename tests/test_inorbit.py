"""In-orbit focus monitoring: imagette emulation, the imagette file, training shards and the
focus check end to end."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from astropy.io import fits

from plato_cnn.cli import main as cnn_main
from plato_cnn.focuscheck import focus_check
from plato_cnn.robust import robust_mean
from plato_sim import cli as sim_cli
from plato_sim.clitools import fix_negative_values
from plato_sim.errors import ParameterError
from plato_sim.io.imagette_format import ImagetteFormatError, read_imagettes, write_imagettes
from plato_sim.optics.camera import field_of_ccd
from plato_sim.optics.model import OpticalModel
from plato_sim.optics.spectra import blackbody_spectrum
from plato_sim.psf.fast import FastEngine
from plato_sim.psf.render import psf_stamp
from plato_sim.scenes import inorbit as im
from plato_sim.scenes import sampling
from plato_sim.stamps import ccd_to_focal_plane_orientation


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small FFTs: one intra-op thread (a second one only spins on the loaded 2-core machine)."""
    with sampling.single_thread_torch():
        yield


@pytest.fixture(scope="module")
def camera():
    # best-focus map with 3 wavelengths: a cheaper camera, the same code path
    return im.make_camera(21, bft_degC=-78.0, exact=False, n_wavelengths=3)


@pytest.fixture(scope="module")
def field(camera):
    return im.emulate_imagettes(camera, -76.5, 24, seed=5, n_wavelengths=4)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fits_round_trip_and_same_seed_same_bytes(tmp_path, camera, field):
    a = write_imagettes(tmp_path / "a.fits", field)
    back = read_imagettes(a)
    assert back.imagettes.dtype == np.uint16 and back.imagettes.shape == (24, 10, 10)
    assert np.array_equal(back.imagettes, field.imagettes)
    assert back.stars.tobytes() == field.stars.tobytes()
    assert back.header == field.header
    assert back.truth["star_truth"].tobytes() == field.truth["star_truth"].tobytes()
    assert back.truth["bft_degC"] == pytest.approx(field.truth["bft_degC"])
    assert read_imagettes(a, with_truth=False).truth is None
    again = im.emulate_imagettes(camera, -76.5, 24, seed=5, n_wavelengths=4)
    b = write_imagettes(tmp_path / "b.fits", again)
    assert _sha(a) == _sha(b)
    other = im.emulate_imagettes(camera, -76.5, 24, seed=6, n_wavelengths=4)
    assert _sha(write_imagettes(tmp_path / "c.fits", other)) != _sha(a)
    with pytest.raises(FileExistsError):
        write_imagettes(a, field)


def _rewrite(src, dst, edit) -> None:
    with fits.open(src) as h:
        hdus = fits.HDUList([x.copy() for x in h])
    edit(hdus)
    hdus.writeto(dst, overwrite=True)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "truncated"),
        ("bitflip", "corrupt file"),
        ("not_imagettes", "not an imagette file"),
        ("missing_key", "missing key TRP1_T"),
        ("float_cube", "unsigned 16-bit"),
        ("missing_column", r"missing column\(s\) \['TEFF'\]"),
        ("nan_position", "THETA holds NaN"),
        ("bad_ccd", "CCD 7 not in 1-4"),
        ("row_count", "23 rows for 24 imagettes"),
    ],
)
def test_bad_files_name_the_file_and_the_reason(tmp_path, field, case, message):
    good = write_imagettes(tmp_path / "good.fits", field)
    bad = tmp_path / f"{case}.fits"
    raw = good.read_bytes()
    if case == "truncated":
        bad.write_bytes(raw[: len(raw) // 2 + 100])
    elif case == "bitflip":  # one bit in the cube's data
        loc = 2880 * 3 + 100
        bad.write_bytes(raw[:loc] + bytes([raw[loc] ^ 1]) + raw[loc + 1 :])
    else:

        def edit(h):
            if case == "not_imagettes":
                h[0].header["FORMAT"] = "SOMETHING-ELSE"
            elif case == "missing_key":
                del h[0].header["TRP1_T"]
            elif case == "float_cube":
                h[1] = fits.ImageHDU(h[1].data.astype(np.float32), name="IMAGETTES")
            elif case == "missing_column":
                cols = [c for c in h[2].columns if c.name != "TEFF"]
                h[2] = fits.BinTableHDU.from_columns(cols, name="STARS")
            elif case == "nan_position":
                h[2].data["THETA"][3] = np.nan
            elif case == "bad_ccd":
                h[2].data["CCD"][2] = 7
            elif case == "row_count":
                h[2] = fits.BinTableHDU(h[2].data[:-1], name="STARS")

        _rewrite(good, bad, edit)
    with pytest.raises(ImagetteFormatError, match=message) as exc:
        read_imagettes(bad)
    assert str(bad) in str(exc.value)


def test_saturation_of_bright_stars_is_flagged(camera):
    bright = im.emulate_imagettes(camera, -78.0, 6, seed=2, v_mag_range=(6.0, 7.0), n_wavelengths=4)
    faint = im.emulate_imagettes(
        camera, -78.0, 6, seed=2, v_mag_range=(12.0, 13.0), n_wavelengths=4
    )
    gain = bright.header["gain_e_per_adu"]
    assert im.imagette_saturated(bright.imagettes, gain).all()
    assert bright.truth["star_truth"]["saturated"].all()
    assert not im.imagette_saturated(faint.imagettes, gain).any()
    assert not faint.truth["star_truth"]["saturated"].any()


def test_saturated_field_is_refused(camera):
    bright = im.emulate_imagettes(camera, -78.0, 4, seed=3, v_mag_range=(6.0, 6.5), n_wavelengths=4)
    with pytest.raises(ValueError, match="no usable imagette.*'saturated': 4"):
        focus_check(bright, -78.0)


def test_motion_blur_conserves_flux_and_blurs():
    optics = OpticalModel()
    kw = dict(state=np.array([0]), teff_K=np.array([5000.0]), ccd=np.array([1]))
    pos = dict(star_row=np.array([100.2]), star_col=np.array([100.1]))
    win = dict(row0=np.array([92]), col0=np.array([92]), size_px=16, n_wavelengths=4)
    args = (np.array([5.0]), np.array([30.0]), np.array([0.0]))
    still = im.render_windows(FastEngine(), optics, *args, **kw, **pos, **win)
    moved = im.render_windows(
        FastEngine(jitter_sigma_px=0.3), optics, *args, **kw, **pos, **win, drift_px=[[0.8, 1.5]]
    )
    assert moved.sum() == pytest.approx(still.sum(), abs=2e-5)
    assert still.sum() > 0.999
    assert moved.max() < 0.8 * still.max()
    # the nominal in-orbit jitter and drift (tiny against a 15" pixel) change almost nothing
    j = im.JITTER_RMS_ARCSEC / optics.camera.pixel_arcsec
    d = im.DRIFT_ARCSEC / optics.camera.pixel_arcsec
    nominal = im.render_windows(
        FastEngine(jitter_sigma_px=j), optics, *args, **kw, **pos, **win, drift_px=[[d, 0.0]]
    )
    assert nominal.sum() == pytest.approx(still.sum(), abs=2e-5)
    assert np.abs(nominal - still).max() < 1e-3


def test_windows_in_ccd_axes_match_the_focal_plane_psf():
    optics, eng = OpticalModel(), FastEngine()
    sp = blackbody_spectrum(optics.camera, 4200.0, 4)
    row, col = 1200.3, 2400.8
    for ccd in (1, 2, 3, 4):
        th, ph = field_of_ccd(optics.camera, ccd, row, col)
        w = im.render_windows(
            eng,
            optics,
            np.atleast_1d(th),
            np.atleast_1d(ph),
            np.array([35.0]),
            np.array([0]),
            np.array([4200.0]),
            np.array([ccd]),
            np.array([row]),
            np.array([col]),
            np.array([1200 - 7]),
            np.array([2401 - 7]),
            15,
            n_wavelengths=4,
        )
        fp = ccd_to_focal_plane_orientation(w, np.array([ccd]), optics.camera.ccd_orientation_deg)
        g = np.radians(optics.camera.ccd_orientation_deg[ccd - 1])
        cg, sg = round(np.cos(g)), round(np.sin(g))
        dx, dy = cg * -0.2 - sg * 0.3, sg * -0.2 + cg * 0.3  # (d_col, d_row) = (-0.2, 0.3)
        ref = psf_stamp(eng, optics, float(th), float(ph), 35.0, (dx, dy), sp, 15)
        assert np.abs(fp[0] - ref).max() < 1e-6


def test_zero_point_and_sky():
    cam = OpticalModel().camera
    e0 = im.stellar_electrons(cam, 0.0, 5800.0, 1.0)
    # a 5800 K star of V = 0: ~2.8e8 e-/s through the 120 mm pupil, band, transmission, QE
    assert 2.5e8 < float(e0) < 3.1e8
    e = im.stellar_electrons(cam, np.array([10.0, 12.5]), 5800.0, 21.0)
    assert e[0] / e[1] == pytest.approx(10.0, rel=1e-9)
    cool, hot = im.stellar_electrons(cam, 11.0, np.array([3500.0, 7500.0]), 21.0)
    assert cool > hot  # at the same V a red star puts more photons in the 500-1000 nm band
    sky = im.sky_electrons_per_px(cam, 21.0)
    assert 0.4 * 220 * 21 < sky < 0.6 * 220 * 21


def test_inorbit_dataset_config_and_shard(camera):
    base = sampling.load_config()
    assert "imagettes" not in base  # the default datasets are unchanged
    cfg = sampling.load_config(
        im.inorbit_config_path(),
        overrides={"spectrum": {"n_wavelengths": 4}, "shards": {"samples_per_optical_state": 8}},
    )
    assert cfg["imagettes"]["size_px"] == 10
    with pytest.raises(ValueError, match="imagettes"):
        sampling.load_config(im.inorbit_config_path(), overrides={"imagettes": {"size": 3}})
    with pytest.raises(ValueError, match=r"imagettes.size_px"):
        sampling.load_config(im.inorbit_config_path(), overrides={"imagettes": {"size_px": 40}})
    stamps, lab = im.make_imagette_shard(cfg, 3, 0, 20, [camera])
    assert stamps.shape == (20, 10, 10) and stamps.dtype == np.float32
    assert lab.dtype == im.imagette_label_dtype()
    assert np.allclose(lab["dz_from_best_um"], lab["dz_th_um"] - lab["dz_field_best_um"])
    assert np.all((lab["teff_K"] >= 3500) & (lab["teff_K"] <= 7500))
    assert np.all((lab["v_mag"] >= 8.5) & (lab["v_mag"] <= 13.0))
    assert len(np.unique(lab["optical_state"])) == 3
    again = im.make_imagette_shard(cfg, 3, 0, 20, [camera])
    assert np.array_equal(again[0], stamps) and again[1].tobytes() == lab.tobytes()


def test_imagette_pool_may_hold_high_order_cameras(camera):
    """The families section works for imagettes as for ground-test samples: its recipe loads,
    a pool index drawn from the high-order family is rendered beside a design camera, each
    star labelled from its own camera, and the same seed gives the same bytes."""
    path = im.inorbit_config_path().parent / "inorbit_dataset_families.yaml"
    recipe = sampling.load_config(path)
    assert recipe["families"]["highorder_fraction"] == 0.5 and "imagettes" in recipe
    over = {"spectrum": {"n_wavelengths": 4}, "shards": {"samples_per_optical_state": 8},
            "families": {"highorder_fraction": 1.0, "highorder_strength": 1.0}}  # fmt: skip
    cfg = sampling.load_config(im.inorbit_config_path(), overrides=over)
    ho = sampling.build_camera(cfg, seed=3, index=1)
    assert ho.family == "highorder"
    stamps, lab = im.make_imagette_shard(cfg, 3, 0, 32, [camera, ho])
    assert set(np.unique(lab["camera_id"])) == {camera.camera_id, ho.camera_id}
    assert np.all(np.isfinite(stamps))
    for cam in (camera, ho):
        sel = lab["camera_id"] == cam.camera_id
        np.testing.assert_allclose(
            lab["temperature_degC"][sel], cam.model().thermal.temperature_degC(lab["dz_th_um"][sel])
        )
    again = im.make_imagette_shard(cfg, 3, 0, 32, [camera, ho])
    assert np.array_equal(again[0], stamps) and again[1].tobytes() == lab.tobytes()


def test_robust_mean_rejects_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, 200)
    x[:5] = 80.0
    m, s, keep, birge = robust_mean(x, np.ones_like(x))
    assert abs(m - 3.0) < 3 * s and not keep[:5].any() and keep[5:].mean() > 0.98
    assert 0.8 < birge < 1.2


@pytest.mark.parametrize("delta_t_degC", [3.0, -3.0])
def test_focus_check_recovers_a_large_defocus(camera, delta_t_degC):
    t = camera.bft_degC - delta_t_degC  # TRP1 now; best focus is delta_t away
    f = im.emulate_imagettes(camera, t, 80, seed=11, v_mag_range=(9.0, 12.0))
    fc = focus_check(f, t)
    assert np.sign(fc.delta_t_degC) == np.sign(delta_t_degC)
    assert abs(fc.delta_t_degC - delta_t_degC) < max(fc.delta_t_sigma_degC, 0.5)
    assert not fc.sign_ambiguous
    assert fc.n_used >= 70 and fc.drops["saturated"] == 0


def test_split_votes_at_best_focus_set_the_flag_without_a_warning(camera):
    """At best focus each star lies on either side of its own optimum: the flag says it, a
    warning would fire on most good checks (one is kept for |dT| > 2 sigma)."""
    t = camera.bft_degC
    f = im.emulate_imagettes(camera, t, 40, seed=3, v_mag_range=(9.0, 12.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fc = focus_check(f, t)
    assert fc.sign_ambiguous and abs(fc.delta_t_degC) <= 2 * fc.delta_t_sigma_degC
    assert not [w for w in caught if "side of focus" in str(w.message)]
    assert not [w for w in fc.warnings if "side of focus" in w]


def test_focus_check_cli(tmp_path, camera, field):
    path = write_imagettes(tmp_path / "f.fits", field)
    out = tmp_path / "r.json"
    assert (
        cnn_main(["focus-check", str(path), "--temperature-degC", "-76.5", "--json", str(out)]) == 0
    )
    rep = json.loads(out.read_text())
    for key in ("delta_t_degC", "delta_t_sigma_degC", "sign_ambiguous", "model_reliance"):
        assert key in rep
    assert rep["n_stars"] == 24 and "field_offsets" in rep["model_reliance"]
    bad = tmp_path / "bad.fits"
    bad.write_bytes(path.read_bytes()[:5000])
    assert cnn_main(["focus-check", str(bad), "--temperature-degC", "-76.5"]) == 2


def test_imagettes_cli_parses_negative_values_and_refuses_bad_ranges(tmp_path, capsys):
    argv = ["imagettes", "--out", str(tmp_path / "x.fits"), "--temperature-degC", "-75"]
    argv += ["--bft-degC", "-78.5", "--v-mag", "9,12"]
    a = sim_cli._parser().parse_args(fix_negative_values(argv))
    assert (a.temperature_degC, a.bft_degC, a.v_mag, a.size_px) == (-75.0, -78.5, [9.0, 12.0], 10)
    assert sim_cli.main(argv[:-1] + ["9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--v-mag and --teff-K need two values" in err


def test_a_camera_of_the_high_order_family_is_imaged_as_the_design_one_is():
    ho = im.make_camera(21, bft_degC=-78.0, exact=False, n_wavelengths=3, family="highorder")
    design = im.make_camera(21, bft_degC=-78.0, exact=False, n_wavelengths=3)
    assert ho.family == "highorder" and design.family == "design"
    assert ho.bft_degC == design.bft_degC == -78.0 and ho.dz_bf_um != design.dz_bf_um
    f = im.emulate_imagettes(ho, -76.5, 6, seed=5, n_wavelengths=4)
    assert f.imagettes.shape[0] == 6 and f.truth["bft_degC"] == -78.0
    assert np.isfinite(f.truth["star_truth"]["dz_field_best_um"]).all()
    with pytest.raises(ParameterError, match="family"):
        im.make_camera(21, family="nodal")


def test_a_nodal_camera_is_imaged_with_its_own_diffusion_and_truths():
    from plato_sim.scenes import inorbit_nodal as nod
    from plato_sim.truth.bestfocus import field_best_focus_um

    (a, ta), (b, tb) = nod.draw_nodal_camera(7), nod.draw_nodal_camera(7)
    c, tc = nod.draw_nodal_camera(8)
    assert json.dumps(a.to_dict(), default=list) == json.dumps(b.to_dict(), default=list)
    assert ta == tb and tc != ta and c.diffusion_sigma_px != a.diffusion_sigma_px
    assert -84.0 <= ta <= -72.0
    cam = nod.make_nodal_camera(7, bft_degC=-78.0, n_wavelengths=3)
    assert cam.family == "nodal" and cam.bft_degC == -78.0
    assert cam.model().thermal.focal_shift_um(-78.0) == pytest.approx(cam.dz_bf_um, abs=1e-9)
    assert cam.engine().diffusion_sigma_px == a.diffusion_sigma_px
    f = im.emulate_imagettes(cam, -76.5, 6, seed=5, n_wavelengths=4, engine=cam.engine())
    assert f.imagettes.shape[0] == 6 and f.truth["bft_degC"] == -78.0
    assert f.truth["dz_bf_um"] == cam.dz_bf_um
    # the per-star truth is the map of the search grid: within its fit residual (~0.6 um
    # measured) of a direct search at the stars' own positions
    with torch.no_grad():
        direct, _ = field_best_focus_um(cam.model().optics, f.stars["theta_deg"],
                                        f.stars["phi_deg"], cam.spectrum(3), cam.engine(),
                                        4, 100.0, search="fast")  # fmt: skip
    assert np.abs(f.truth["star_truth"]["dz_field_best_um"] - direct).max() < 1.5
    # its QE droop acts on the stars as on the lamp: fewer electrons, most of them lost in the
    # red (a 3500 K star loses a larger share than a 7500 K one)
    qe = cam.model().qe_factor
    assert a.qe_droop > 0 and qe(500.0) == 1.0 and qe(1000.0) == pytest.approx(1 - a.qe_droop)
    optics_cam = cam.model().optics.camera
    ratio = im.stellar_electrons(optics_cam, 11.0, [3500.0, 7500.0], 21.0, qe) / (
        im.stellar_electrons(optics_cam, 11.0, [3500.0, 7500.0], 21.0)
    )
    assert np.all(ratio < 1.0) and ratio[0] < ratio[1]
    with pytest.raises(ParameterError, match="seed"):
        nod.draw_nodal_camera(-1)
