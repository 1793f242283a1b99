"""Campaign format v1: names, HK CSV, cube FITS I/O, and the emulator that writes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from plato_cnn.reader import read_campaign
from plato_sim import cli as sim_cli
from plato_sim.clitools import fix_negative_values
from plato_sim.io import campaign_format as cf
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.ground_test import emulate_campaign, truth_path

PRIMARY = {"DATE-OBS": "2026-01-01T00:00:00.000", "OBSID": 1024, "SITE": "INTA", "CAMERA": "c"}
IMAGE = {
    "CCD_ID": 2,
    "V_START": 100,
    "H_START": 200,
    "EXPTIME": 0.1,
    "CYCLETIM": 2.5,
    "SHUTTER": "OPEN",
    "FOV_TH": 5.5,
    "FOV_PHI": 60.0,
}


# ------------------------------------------------------------------------------ names
def test_names_round_trip():
    t = cf.parse_utc("2023-04-05T10:11:12.345")
    assert cf.obs_dir_name(1024, "INTA", "duvel") == "01024_INTA_duvel"
    assert cf.parse_obs_dir_name("01024_INTA_duvel") == (1024, "INTA", "duvel")
    hk = cf.hk_file_name(1024, "INTA", "duvel", t)
    assert hk == "01024_INTA_duvel_TCS-HK_20230405.csv"
    assert cf.parse_hk_file_name(hk) == (1024, "INTA", "duvel", "20230405")
    cube = cf.cube_file_name(1024, "INTA", 7, t)
    assert cube == "01024_INTA_N-FEE_CCD_00007_20230405_cube.fits"
    assert cf.parse_cube_file_name(cube) == (1024, "INTA", 7, "20230405")
    assert cf.parse_cube_file_name("notes.txt") is None
    assert cf.parse_image_ext_name("IMAGE_3_F") == (3, "F")
    assert cf.parse_image_ext_name("SPRE_3_F") is None
    with pytest.raises(ValueError):
        cf.image_ext_name(5, "E")


def test_times_are_utc():
    a = cf.parse_utc("2023-04-05T10:11:12.345")
    assert cf.parse_utc("2023-04-05T12:11:12.345+02:00") == pytest.approx(a)
    assert cf.parse_utc("2023-04-05T10:11:12.345Z") == pytest.approx(a)
    assert cf.format_utc(a) == "2023-04-05T10:11:12.345000"


# ------------------------------------------------------------------------------ HK
def test_hk_round_trip_unsorted_duplicates(tmp_path):
    t0 = cf.parse_utc("2026-01-01T00:00:00")
    p = cf.write_hk_csv(tmp_path / "hk.csv", t0 + np.array([10.0, 0.0, 5.0]), [-80.2, -80.0, -80.1])
    # append a repeated timestamp and an extra column-free row order shuffle
    with open(p, "a") as fh:
        fh.write(f"{cf.format_utc(t0 + 5.0)},-80.3\n")
    hk = cf.read_hk_csv(p)
    assert np.all(np.diff(hk.time_s) > 0)
    assert np.allclose(hk.trp1_degC, [-80.0, -80.2, -80.2])  # duplicates averaged
    temp, ok = hk.temperature_at(t0 + np.array([2.5, 70.0, 71.0]))
    assert temp[0] == pytest.approx(-80.1) and ok[0]
    assert ok[1] and not ok[2] and np.isnan(temp[2])  # > 60 s from every sample


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty_hk"),
        ("timestamp,GTCS_TRP1_T_AVG\n", "empty_hk"),
        ("timestamp,OTHER\n2026-01-01T00:00:00,1\n", "missing_column"),
        ("timestamp,GTCS_TRP1_T_AVG\nyesterday,-80\n", "bad_hk_row"),
    ],
)
def test_hk_errors_name_file_and_reason(tmp_path, text, reason):
    p = tmp_path / "01024_INTA_c_TCS-HK_20260101.csv"
    p.write_text(text)
    with pytest.raises(cf.FormatError) as ei:
        cf.read_hk_csv(p)
    assert ei.value.reason == reason and p.name in str(ei.value)


def test_hk_missing_file(tmp_path):
    with pytest.raises(cf.FormatError, match="missing_hk"):
        cf.read_hk_csv(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------ cubes
def test_cube_round_trip_uint16_exact_and_mapped(tmp_path):
    d = np.arange(2 * 8 * 16, dtype=np.int64).reshape(2, 8, 16) * 257 % 65536
    d = d.astype(np.uint16)
    d[0, 0, :3] = (0, 32768, 65535)
    p = cf.write_cube(tmp_path / "c.fits", PRIMARY, [("IMAGE_2_E", IMAGE, d)])
    h = fits.getheader(p, 1)
    assert h["BITPIX"] == 16 and h["BZERO"] == 32768
    cube = cf.read_cube(p)
    try:
        (ext,) = cube.extensions
        assert ext.name == "IMAGE_2_E" and ext.data.dtype == np.uint16
        assert np.array_equal(ext.data, d)
        assert cube._hdul[1]._file.memmap  # the file is memory-mapped, not read
    finally:
        cube.close()


def test_other_extensions_ignored(tmp_path):
    d = np.ones((1, 4, 4), np.uint16)
    p = cf.write_cube(tmp_path / "c.fits", PRIMARY, [("IMAGE_1_F", IMAGE, d)])
    with fits.open(p, mode="append") as hl:
        hl.append(fits.ImageHDU(np.zeros((4, 4), np.float32), name="SPRE_1_F"))
    cube = cf.read_cube(p)
    assert [e.name for e in cube.extensions] == ["IMAGE_1_F"]
    assert cube.ignored_extensions == ["SPRE_1_F"]
    cube.close()


def test_cube_errors(tmp_path):
    d = np.ones((2, 8, 8), np.uint16)
    good = cf.write_cube(tmp_path / "good.fits", PRIMARY, [("IMAGE_1_E", IMAGE, d)])
    raw = good.read_bytes()
    (tmp_path / "trunc.fits").write_bytes(raw[:-2000])
    (tmp_path / "junk.fits").write_bytes(b"\x00" * 5000)
    cases = {
        "trunc.fits": "truncated",
        "junk.fits": "corrupt",
    }
    prim = dict(PRIMARY)
    del prim["OBSID"]
    cf.write_cube(tmp_path / "nokey.fits", prim, [("IMAGE_1_E", IMAGE, d)])
    cases["nokey.fits"] = "missing_key"
    img = dict(IMAGE)
    del img["CYCLETIM"]
    cf.write_cube(tmp_path / "noext.fits", PRIMARY, [("IMAGE_1_E", img, d)])
    cases["noext.fits"] = "missing_key"
    hdu = fits.ImageHDU(d.astype(np.int16), name="IMAGE_1_E")  # signed: no BZERO
    for k, v in IMAGE.items():
        hdu.header[k] = v
    ph = fits.PrimaryHDU()
    for k, v in PRIMARY.items():
        ph.header[k] = v
    fits.HDUList([ph, hdu]).writeto(tmp_path / "int16.fits")
    cases["int16.fits"] = "wrong_dtype"
    for name, reason in cases.items():
        with pytest.raises(cf.FormatError) as ei:
            cf.read_cube(tmp_path / name)
        assert ei.value.reason == reason, name
        assert name in str(ei.value)


# ------------------------------------------------------------------------------ emulator
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("emu")
    kw = dict(
        camera_name="tiny",
        bft_degC=-79.0,
        plateaux_degC=(-88.0, -79.0, -70.0),
        n_fields=2,
        n_dithers=3,
        frames_per_dither=2,
        window_px=32,
        seed=5,
        n_sub_truth=2,
        n_wavelengths=3,
    )
    truth = emulate_campaign(root / "camp", engine=FastEngine(fov_px=12), **kw)
    return root, truth, kw


def test_emulator_writes_format_and_truth_beside(tiny):
    root, truth, _ = tiny
    camp = root / "camp"
    assert truth_path(camp) == root / "camp.truth.json"
    assert not list(camp.rglob("*.json"))  # readers never see the truth
    saved = json.loads(truth_path(camp).read_text())
    assert saved["bft_degC"] == pytest.approx(-79.0)
    assert saved["obsids"] == [1024, 1035, 1046]
    # thermal zero solved: T0 differs from T_BF (other aberrations move the EEF optimum)
    assert saved["thermal"]["t0_degC"] != pytest.approx(-79.0, abs=1e-3)
    dirs = sorted(p.name for p in camp.iterdir())
    assert dirs == ["01024_INTA_tiny", "01035_INTA_tiny", "01046_INTA_tiny"]
    obs = camp / dirs[0]
    assert len(list(obs.glob("*_TCS-HK_*.csv"))) == 1
    cubes = sorted(obs.glob("*_cube.fits"))
    assert len(cubes) == 2 * 2  # background + source per field
    with fits.open(cubes[0]) as hl:
        assert hl[1].header["SHUTTER"] == "CLOSED" and hl[1].data.shape == (2, 32, 32)
        assert hl[1].header["BITPIX"] == 16 and hl[1].header["BZERO"] == 32768
        assert 900 < np.median(hl[1].data) < 1100  # electronic offset ~1000 ADU
    with fits.open(cubes[1]) as hl:
        assert hl[1].header["SHUTTER"] == "OPEN" and hl[1].data.shape == (6, 32, 32)


def test_emulated_campaign_reads_back(tiny):
    root, truth, _ = tiny
    fr = read_campaign(root / "camp")
    assert len(fr) == 3 * 2 * 6 and np.all(fr.flags == 0)
    achieved = truth["plateaux_achieved_degC"]
    for o, t in zip(truth["obsids"], achieved, strict=True):
        assert abs(np.mean(fr.temperature_degC[fr.obsid == o]) - t) < 0.1
    # flux in electrons as emulated (8e5 e-), minus the light beyond the stamp
    assert np.median(fr.stamps.sum(axis=(1, 2))) == pytest.approx(8e5, rel=0.03)
    # the EEF is best on the plateau nearest the true best focus
    from plato_cnn.metrics import eef_2x2

    e = eef_2x2(fr.stamps)
    means = [np.mean(e[fr.obsid == o]) for o in truth["obsids"]]
    assert int(np.argmax(means)) == 1


def test_emulator_is_deterministic(tiny, tmp_path):
    root, _, kw = tiny
    emulate_campaign(tmp_path / "camp", engine=FastEngine(fov_px=12), **kw)
    for a in sorted((root / "camp").rglob("*_cube.fits")):
        b = tmp_path / "camp" / a.parent.name / a.name
        with fits.open(a) as ha, fits.open(b) as hb:
            assert np.array_equal(ha[1].data, hb[1].data)
    for a in sorted((root / "camp").rglob("*.csv")):
        assert a.read_text() == (tmp_path / "camp" / a.parent.name / a.name).read_text()


def test_campaign_cli_parses_negative_lists():
    ap = sim_cli._parser()
    for argv in (
        ["campaign", "--out", "x", "--camera", "c", "--bft-degC", "-78.5", "--plateaux", "-90,-85"],
        ["campaign", "--out", "x", "--camera", "c", "--bft-degC=-78.5", "--plateaux=-90,-85"],
    ):
        a = ap.parse_args(fix_negative_values(argv))
        assert a.bft_degC == -78.5 and a.plateaux_degC == [-90.0, -85.0]
        assert a.fields == 40 and a.dithers == 25 and a.frames_per_dither == 2 and a.window_px == 64


def test_emulator_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="camera_name"):
        emulate_campaign(tmp_path / "a", camera_name="bad_name")
    with pytest.raises(ValueError, match="window_px"):
        emulate_campaign(tmp_path / "a", window_px=16)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(FileExistsError):
        emulate_campaign(tmp_path / "full")


def test_emulate_or_load_reuses_a_complete_campaign_and_redoes_an_interrupted_one(tmp_path):
    from plato_sim.scenes.ground_test import emulate_or_load, truth_path

    kw = dict(camera_name="cache", n_fields=2, n_dithers=1, frames_per_dither=1,
              plateaux_degC=(-80.0,), window_px=32, seed=5, n_sub_truth=2,
              n_wavelengths=2)  # fmt: skip
    d = tmp_path / "c"
    first = emulate_or_load(d, **kw)
    stamp = truth_path(d).stat().st_mtime_ns
    assert emulate_or_load(d, **kw) == first  # read back, not emulated again
    assert truth_path(d).stat().st_mtime_ns == stamp
    truth_path(d).unlink()  # as if killed before the sidecar was written
    assert emulate_or_load(d, **kw)["bft_degC"] == first["bft_degC"]
    assert truth_path(d).is_file()
    # a truth computed by other numerics (another truth_version) is emulated again
    from plato_sim.truth.bestfocus import TRUTH_VERSION

    assert first["truth_version"] == TRUTH_VERSION
    old = json.loads(truth_path(d).read_text())
    old["truth_version"] = TRUTH_VERSION + 1
    truth_path(d).write_text(json.dumps(old))
    again = emulate_or_load(d, **kw)
    assert again["truth_version"] == TRUTH_VERSION and again["bft_degC"] == first["bft_degC"]
    assert json.loads(truth_path(d).read_text())["truth_version"] == TRUTH_VERSION


def test_a_design_object_and_keyword_overrides_write_the_same_campaign(tiny, tmp_path):
    """One CampaignDesign for the emulator and the bound; keywords override its fields."""
    from plato_sim.bounds import CampaignDesign as BoundDesign
    from plato_sim.scenes.design import CampaignDesign

    assert BoundDesign is CampaignDesign
    root, _, kw = tiny
    kw = dict(kw)
    design = CampaignDesign(
        **{k: kw.pop(k) for k in ("plateaux_degC", "n_fields", "n_dithers", "frames_per_dither",
                                  "window_px", "n_wavelengths")}
    )  # fmt: skip
    emulate_campaign(tmp_path / "camp", design, engine=FastEngine(fov_px=12), **kw)
    for a in sorted((root / "camp").rglob("*.*")):
        b = tmp_path / "camp" / a.parent.name / a.name
        assert a.read_bytes() == b.read_bytes(), a.name
    with pytest.raises(ValueError, match="n_dithers"):
        CampaignDesign(n_dithers=0)
    assert design.with_(n_fields=7).n_fields == 7
    explicit = CampaignDesign(theta_deg=(1.0, 2.0), phi_deg=(0.0, 90.0))
    assert explicit.n_fields == 2 and explicit.field_table_deg()[0].tolist() == [1.0, 2.0]
