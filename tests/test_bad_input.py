"""Bad input beyond the format spec's list (issue 7): every case ends in a clear error or a
reported drop, never a bare traceback, never a BFT computed from data that could not be read.

The spec's own list (missing/empty HK, missing column, HK not covering, truncated/corrupt
FITS, missing key, wrong shape/type, NaN/inf, saturation, no star, no background, unstable
plateau, too few plateaux) is in ``test_campaign_reader.py``; this module adds: signed 16-bit
data without the unsigned offset, float data, zero-length files, cubes with 0 frames,
duplicated OBSIDs, two cameras in one campaign, HK time stamps with zone offsets and with
gaps, non-UTF-8 bytes and a byte-order mark in a CSV, symbolic-link loops, out-of-range header
values, and the ``plato-cnn bft`` command on such campaigns.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from campaign_builder import CAMERA, cubes, make_campaign, obs_dirs

from plato_cnn import cli as cnn_cli
from plato_cnn.reader import CampaignError, read_campaign
from plato_sim.io import campaign_format as cf

#: Small campaign: 2 plateaux x 2 fields x 2 dithers x 2 frames = 16 source frames.
SMALL = dict(temps=(-85.0, -80.0), n_fields=2, n_dithers=2)
N_SMALL = 16
FRAMES_PER_SOURCE_CUBE = 4


@pytest.fixture(scope="module")
def small_master(tmp_path_factory) -> Path:
    return make_campaign(tmp_path_factory.mktemp("master"), **SMALL)


@pytest.fixture()
def camp(small_master, tmp_path) -> Path:
    """A fresh copy of the small campaign for each test to damage."""
    return Path(shutil.copytree(small_master, tmp_path / "camp", symlinks=True))


@pytest.fixture(scope="module")
def reference(small_master):
    """The small campaign read intact."""
    fr = read_campaign(small_master)
    assert len(fr) == N_SMALL and fr.drops.n_frames == 0 and not fr.drops.warnings
    return fr


def _set_data(path: Path, data: np.ndarray, drop_keys: tuple[str, ...] = ()) -> None:
    """Replace the data of a cube's first image extension, keeping its header keys."""
    with fits.open(path) as hl:
        prim, head = hl[0].header.copy(), hl[1].header.copy()
    for k in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BZERO", "BSCALE", *drop_keys):
        head.pop(k, None)
    hdu = fits.ImageHDU(data, header=head, name=head["EXTNAME"])
    fits.HDUList([fits.PrimaryHDU(header=prim), hdu]).writeto(path, overwrite=True)


def _physical(path: Path) -> np.ndarray:
    """The raw ADU of a cube's first image extension (uint16)."""
    with fits.open(path) as hl:
        return np.asarray(hl[1].data).astype(np.uint16)


def _set_key(path: Path, hdu: int, key: str, value) -> None:
    with fits.open(path, mode="update") as hl:
        hl[hdu].header[key] = value


def _files(fr) -> dict[str, tuple[str, str]]:
    """Dropped file name -> (reason, message)."""
    return {Path(p).name: (r, m) for p, r, m in fr.drops.files}


def _cube_ids(fr) -> set[str]:
    """Names of the cubes that gave frames."""
    return {fr.cube_paths[i].name for i in np.unique(fr.cube_index)}


# ------------------------------------------------------------------------------ data type
def test_signed_16bit_without_offset_is_refused(camp):
    """int16 data stored without BZERO=32768: raw values read negative, the cube is refused."""
    src = cubes(obs_dirs(camp)[0])[1]
    signed = (_physical(src).astype(np.int32) - 32768).astype(np.int16)
    assert signed.max() < 0  # what a careless reader would take as raw ADU
    _set_data(src, signed)
    fr = read_campaign(camp)
    reason, msg = _files(fr)[src.name]
    assert reason == "wrong_dtype" and "IMAGE_1_E" in msg and "BZERO" in msg
    assert fr.drops.frames["wrong_dtype"] == FRAMES_PER_SOURCE_CUBE
    assert len(fr) == N_SMALL - FRAMES_PER_SOURCE_CUBE and src.name not in _cube_ids(fr)
    with pytest.raises(cf.FormatError, match="wrong_dtype"):
        read_campaign(camp, strict=True)


def test_float_data_holding_raw_adu_read_like_uint16(camp, reference):
    """Float data (an adapter's output) holding the raw ADU give the very same frames."""
    for c in cubes(obs_dirs(camp)[0])[:2]:
        _set_data(c, _physical(c).astype(np.float32))
    fr = read_campaign(camp)
    assert fr.drops.n_frames == 0 and len(fr) == N_SMALL
    np.testing.assert_array_equal(fr.stamps, reference.stamps)
    np.testing.assert_array_equal(fr.temperature_degC, reference.temperature_degC)


def test_float_data_that_is_not_raw_adu_is_dropped(camp):
    """Bias-subtracted (negative) or scaled (> 65535) float data are not raw: dropped, named."""
    d0, d1 = obs_dirs(camp)
    src = cubes(d0)[1]
    sub = _physical(src).astype(np.float32) - 1000.0  # offset already removed
    _set_data(src, sub)
    bg = cubes(d1)[2]  # a closed-shutter cube in electrons: its source loses its background
    _set_data(bg, _physical(bg).astype(np.float32) * 100.0)
    fr = read_campaign(camp)
    assert sub.min() < 0
    files = _files(fr)
    assert files[src.name][0] == "out_of_range" and "0-65535 ADU" in files[src.name][1]
    assert files[bg.name][0] == "out_of_range"
    assert files[cubes(d1)[3].name][0] == "no_background"
    assert fr.drops.frames["out_of_range"] == FRAMES_PER_SOURCE_CUBE
    assert fr.drops.frames["no_background"] == FRAMES_PER_SOURCE_CUBE
    assert len(fr) == N_SMALL - 2 * FRAMES_PER_SOURCE_CUBE
    assert not {src.name, cubes(d1)[3].name} & _cube_ids(fr)


# ------------------------------------------------------------------------------ empty
def test_zero_length_files(camp):
    d0, d1 = obs_dirs(camp)
    src, bg = cubes(d0)[1], cubes(d1)[0]
    src.write_bytes(b"")
    bg.write_bytes(b"")
    fr = read_campaign(camp)
    files = _files(fr)
    assert files[src.name] == ("empty", f"{src}: empty: cube file is empty (0 bytes)")
    assert files[bg.name][0] == "empty"
    assert files[cubes(d1)[1].name][0] == "no_background"
    assert len(fr) == N_SMALL - 2 * FRAMES_PER_SOURCE_CUBE
    # every file empty, HK included: an error naming the problems, not a traceback
    for p in Path(camp).rglob("*.*"):
        p.write_bytes(b"")
    with pytest.raises(CampaignError, match="no usable source frame.*empty"):
        read_campaign(camp)


def test_cube_with_zero_frames(camp):
    d0, d1 = obs_dirs(camp)
    src, bg = cubes(d0)[1], cubes(d1)[2]
    _set_data(src, _physical(src)[:0])
    _set_data(bg, _physical(bg)[:0])
    fr = read_campaign(camp)
    files = _files(fr)
    assert files[src.name][0] == "wrong_shape" and "no frame" in files[src.name][1]
    assert files[bg.name][0] == "wrong_shape"
    assert files[cubes(d1)[3].name][0] == "no_background"
    assert len(fr) == N_SMALL - 2 * FRAMES_PER_SOURCE_CUBE


# ------------------------------------------------------------------------------ identity
def test_duplicated_obsid_is_an_error(camp):
    d0 = obs_dirs(camp)[0]
    shutil.copytree(d0, camp / d0.name.replace("INTA", "SRON"))
    with pytest.raises(CampaignError, match=r"OBSID 1024 appears in several") as ei:
        read_campaign(camp)
    assert "01024_INTA_testcam" in str(ei.value) and "01024_SRON_testcam" in str(ei.value)


def test_cube_from_another_observation_is_dropped(camp):
    """A cube copied into the wrong folder (its OBSID header disagrees) is not used."""
    d0, d1 = obs_dirs(camp)
    stray = d0 / cubes(d0)[1].name.replace("_00002_", "_00099_")
    shutil.copy(cubes(d1)[1], stray)
    _set_key(stray, 0, "OBSID", 1035)
    fr = read_campaign(camp)
    reason, msg = _files(fr)[stray.name]
    assert reason == "header_mismatch" and "OBSID 1035 in the header but 1024" in msg
    assert fr.drops.frames["header_mismatch"] == FRAMES_PER_SOURCE_CUBE
    assert len(fr) == N_SMALL


def test_two_cameras_in_one_campaign(camp):
    d0, d1 = obs_dirs(camp)
    # a cube of another camera inside this camera's folder: dropped, named
    _set_key(cubes(d0)[1], 0, "CAMERA", "othercam")
    fr = read_campaign(camp)
    reason, msg = _files(fr)[cubes(d0)[1].name]
    assert reason == "header_mismatch" and "'othercam'" in msg and f"'{CAMERA}'" in msg
    assert len(fr) == N_SMALL - FRAMES_PER_SOURCE_CUBE
    # a whole observation folder of another camera: the campaign is refused
    d1.rename(camp / d1.name.replace(CAMERA, "othercam"))
    with pytest.raises(CampaignError, match=r"one camera per campaign.*othercam.*testcam"):
        read_campaign(camp)


# ------------------------------------------------------------------------------ HK times
def _rewrite_hk_times(hk: Path, fmt) -> None:
    """Rewrite the time stamps of an HK file with ``fmt(row_index, unix_s) -> str``."""
    with open(hk, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for i, r in enumerate(rows[1:]):
        r[0] = fmt(i, cf.parse_utc(r[0]))
    with open(hk, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def test_hk_zone_offsets_are_converted(camp, reference):
    zones = [timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)), None]

    def local(i: int, t: float) -> str:
        z = zones[i % 3]
        if z is None:
            return cf.format_utc(t)[:-3] + "Z"
        return datetime.fromtimestamp(t, tz=z).isoformat(timespec="milliseconds")

    for d in obs_dirs(camp):
        (hk,) = d.glob("*.csv")
        _rewrite_hk_times(hk, local)
    assert "-05:30" in hk.read_text() and "+02:00" in hk.read_text()
    src = cubes(obs_dirs(camp)[1])[1]
    t0 = cf.parse_utc(fits.getval(src, "DATE-OBS"))
    _set_key(src, 0, "DATE-OBS", datetime.fromtimestamp(t0, tz=zones[1]).isoformat())
    fr = read_campaign(camp)
    # read as UTC, the local times would lie hours away from the frames: all dropped
    assert fr.drops.n_frames == 0 and len(fr) == N_SMALL
    np.testing.assert_allclose(fr.time_s, reference.time_s, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fr.temperature_degC, reference.temperature_degC, atol=1e-9)


def test_hk_gap_drops_only_the_frames_it_leaves_uncovered(tmp_path):
    camp = make_campaign(tmp_path, temps=(-80.0,), n_fields=8, n_dithers=4)
    full = read_campaign(camp)
    t = np.sort(full.time_s)
    gap = (t[0] + 20.0, t[-1] - 20.0)  # > 2 x 60 s: the middle frames lose their temperature
    (hk,) = obs_dirs(camp)[0].glob("*.csv")
    rows = hk.read_text().splitlines()
    keep = [r for r in rows[1:] if not gap[0] < cf.parse_utc(r.split(",")[0]) < gap[1]]
    hk.write_text("\n".join([rows[0], *keep]) + "\n")
    hk_t = np.array([cf.parse_utc(r.split(",")[0]) for r in keep])
    nearest = np.min(np.abs(full.time_s[:, None] - hk_t[None, :]), axis=1)
    uncovered = nearest > cf.HK_MAX_GAP_S
    assert 0 < uncovered.sum() < len(full)
    fr = read_campaign(camp)
    assert fr.drops.frames == {"hk_not_covering": int(uncovered.sum())}
    assert len(fr) == int((~uncovered).sum())
    np.testing.assert_array_equal(np.sort(fr.time_s), np.sort(full.time_s[~uncovered]))
    assert np.all(np.abs(fr.temperature_degC + 80.0) < 0.05)  # interpolated across the gap


# ------------------------------------------------------------------------------ encodings
def test_non_utf8_bytes_in_hk_csv(camp):
    hk = next(obs_dirs(camp)[0].glob("*.csv"))
    raw = hk.read_bytes()
    hk.write_bytes(raw.replace(cf.HK_TRP1.encode(), cf.HK_TRP1.encode() + b",T_\xb0C", 1))
    fr = read_campaign(camp)
    reason, msg = _files(fr)[hk.name]
    assert reason == "unreadable_hk" and "0xb0" in msg and str(hk) in msg
    assert fr.drops.frames["unreadable_hk"] == N_SMALL // 2
    assert set(fr.obsid.tolist()) == {1035}
    with pytest.raises(cf.FormatError, match="unreadable_hk"):
        read_campaign(camp, strict=True)


def test_byte_order_mark_in_hk_csv(camp, reference):
    """A spreadsheet's UTF-8 byte-order mark does not hide the first column name."""
    hk = next(obs_dirs(camp)[0].glob("*.csv"))
    hk.write_bytes(b"\xef\xbb\xbf" + hk.read_bytes())
    fr = read_campaign(camp)
    assert fr.drops.n_frames == 0
    np.testing.assert_array_equal(fr.temperature_degC, reference.temperature_degC)


# ------------------------------------------------------------------------------ links
def test_symlink_loops(camp, reference, tmp_path):
    d0, d1 = obs_dirs(camp)
    os.symlink("..", d0 / "up")  # a folder loop: the reader does not recurse into it
    os.symlink("01099_INTA_testcam", camp / "01098_INTA_testcam")
    os.symlink("01098_INTA_testcam", camp / "01099_INTA_testcam")
    cube = cubes(d1)[1]
    cube.unlink()
    os.symlink(cube.name, cube)  # a file pointing at itself
    fr = read_campaign(camp)
    assert any("01099_INTA_testcam" in w and "does not resolve" in w for w in fr.drops.warnings)
    reason, msg = _files(fr)[cube.name]
    assert reason == "corrupt" and "symbolic links" in msg
    assert len(fr) == N_SMALL - FRAMES_PER_SOURCE_CUBE
    (hk,) = d0.glob("*.csv")
    hk.unlink()
    os.symlink(hk.name, hk)
    fr = read_campaign(camp)
    assert _files(fr)[hk.name][0] == "missing_hk" and "does not resolve" in _files(fr)[hk.name][1]
    assert set(fr.obsid.tolist()) == {1035}
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(CampaignError, match="symbolic link that does not resolve"):
        read_campaign(tmp_path / "loop")


# ------------------------------------------------------------------------------ header values
@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("FOV_TH", "nan", "non-finite"),
        ("FOV_PHI", "inf", "non-finite"),
        ("GAIN", "inf", "non-finite"),
        ("EXPTIME", "nan", "non-finite"),
        ("FOV_TH", -5.0, "negative"),
        ("V_START", 10**12, "outside the 4510 x 4510 px CCD"),
        ("H_START", -1, "outside the 4510 x 4510 px CCD"),
        ("V_START", 10.5, "not an integer"),
        ("CCD_ID", 3, "CCD_ID = 3 but the extension is IMAGE_1_E"),
        ("CCD_ID", True, "not an integer"),
    ],
)
def test_out_of_range_header_values(camp, key, value, says):
    src = cubes(obs_dirs(camp)[0])[1]
    _set_key(src, 1, key, value)
    fr = read_campaign(camp)
    reason, msg = _files(fr)[src.name]
    assert reason == "bad_key_value" and says in msg and "IMAGE_1_E" in msg
    assert len(fr) == N_SMALL - FRAMES_PER_SOURCE_CUBE


# ------------------------------------------------------------------------------ CLI
def _bft(camp, capsys, *extra) -> tuple[int, str, str]:
    rc = cnn_cli.main(["bft", str(camp), "--fit", "quadratic", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_bad_campaigns_one_line_error(camp, tmp_path, capsys):
    """Unusable campaigns: non-zero exit, one clear line on stderr, no traceback."""
    bad = {}
    dup = tmp_path / "dup"
    shutil.copytree(camp, dup, symlinks=True)
    d0 = obs_dirs(dup)[0]
    shutil.copytree(d0, dup / d0.name.replace("INTA", "SRON"))
    bad["OBSID 1024 appears in several"] = dup
    empty = tmp_path / "empty"
    shutil.copytree(camp, empty, symlinks=True)
    for p in empty.rglob("*.fits"):
        p.write_bytes(b"")
    bad["no usable source frame"] = empty
    signed = tmp_path / "signed"
    shutil.copytree(camp, signed, symlinks=True)
    for c in signed.rglob("*.fits"):
        _set_data(c, (_physical(c).astype(np.int32) - 32768).astype(np.int16))
    bad["wrong_dtype"] = signed
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    bad["does not resolve"] = tmp_path / "loop"
    for says, path in bad.items():
        rc, out, err = _bft(path, capsys)
        assert rc == 2, says
        assert out == "" and "Traceback" not in err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("plato-cnn bft: ") and says in lines[0]


def test_cli_subprocess_no_traceback(camp):
    """The installed entry point itself: exit status 2 and one line, whatever the damage."""
    for c in cubes(obs_dirs(camp)[0]) + cubes(obs_dirs(camp)[1]):
        c.write_bytes(c.read_bytes()[:3000])  # every cube truncated inside its header
    code = "import sys; from plato_cnn.cli import main; sys.exit(main())"
    r = subprocess.run(
        [sys.executable, "-c", code, "bft", str(camp), "--method", "eef"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert "no usable source frame" in r.stderr and "01024_INTA_N-FEE_CCD_00001" in r.stderr


def test_cli_bft_excludes_dropped_frames(tmp_path, capsys):
    """With bad cubes among good ones the BFT uses only the frames that were read."""
    camp = make_campaign(tmp_path, temps=(-85.0, -80.0, -75.0), n_fields=3, n_dithers=2)
    clean = Path(shutil.copytree(camp, tmp_path / "clean"))
    d = obs_dirs(camp)
    src = cubes(d[0])[1]
    _set_data(src, _physical(src).astype(np.float32) - 1000.0)
    _set_key(cubes(d[2])[3], 0, "CAMERA", "othercam")
    for bad in (cubes(obs_dirs(clean)[0])[1], cubes(obs_dirs(clean)[2])[3]):
        bad.unlink()  # the same campaign without the two bad cubes
    out = tmp_path / "bft.json"
    rc, _, err = _bft(camp, capsys, "--json", str(out))
    assert rc == 0 and "Traceback" not in err
    rep = json.loads(out.read_text())
    lost = {"out_of_range": FRAMES_PER_SOURCE_CUBE, "header_mismatch": FRAMES_PER_SOURCE_CUBE}
    assert rep["drops"] == lost
    assert rep["frames_read"] == 3 * 3 * FRAMES_PER_SOURCE_CUBE - 2 * FRAMES_PER_SOURCE_CUBE
    assert rep["frames_used"] == rep["frames_read"]
    rc, _, _ = _bft(clean, capsys, "--json", str(tmp_path / "clean.json"))
    assert rc == 0
    assert rep["bft_degC"] == json.loads((tmp_path / "clean.json").read_text())["bft_degC"]
    assert any(src.name in w and "0-65535 ADU" in w for w in rep["warnings"])
    assert any("'othercam'" in w for w in rep["warnings"])
