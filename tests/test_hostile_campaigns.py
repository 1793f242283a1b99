"""A hostile tester's damaged copies of a small campaign: each becomes a refusal, a reported
drop (reason and file), or a warning, never a BFT that moves without a word.

Each case is built on disk from :mod:`campaign_builder`, read through
:func:`plato_cnn.reader.read_campaign` and through ``plato-cnn bft`` (``cli.main``):

1. a background cube of zeros, or off by hundreds of ADU (``bad_background``);
2. TRP1 stuck at one value, or all plateaux within a few hundredths of a degree (one plateau,
   warned; the classical cubic refuses with InsufficientPlateaux);
3. TRP1 in kelvin (``implausible_trp1``: one plateau dropped, all of them refused);
4. unquoted decimal commas in the HK CSV, conflicting repeated HK time stamps
   (``bad_hk_row``, ``conflicting_hk``);
5. a cube that is a FIFO or a link to a character device (``not_regular_file``, no hang);
6. a tile-compressed cube (decoded exactly);
7. reading a block of frames at a time (same frames whatever the block);
8. every frame flagged: one-line errors (exit 2) from both methods;

and no reading changes a byte or an mtime of the campaign.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from campaign_builder import cubes, make_campaign, obs_dirs
from model_builder import save_tiny_model

from plato_cnn import cli as cnn_cli
from plato_cnn.classical import estimate_bft
from plato_cnn.reader import FLAG_SATURATED, CampaignError, read_campaign
from plato_sim.errors import InsufficientPlateaux
from plato_sim.io import campaign_format as cf

#: 5 plateaux x 3 fields x 2 dithers x 2 frames: a cubic fit has a degree of freedom.
KW = dict(n_fields=3, n_dithers=2)
PER_CUBE = 4  # source frames per source cube
PER_OBS = 3 * PER_CUBE
N_ALL = 5 * PER_OBS


@pytest.fixture(scope="module")
def master(tmp_path_factory) -> Path:
    return make_campaign(tmp_path_factory.mktemp("master"), **KW)


@pytest.fixture()
def camp(master, tmp_path) -> Path:
    return Path(shutil.copytree(master, tmp_path / "camp", symlinks=True))


@pytest.fixture(scope="module")
def reference(master):
    fr = read_campaign(master)
    assert len(fr) == N_ALL and fr.drops.n_frames == 0 and not fr.drops.warnings
    return fr


@pytest.fixture(scope="module")
def ref_bft(reference):
    return estimate_bft(reference, "gauss", n_boot=50)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


# ------------------------------------------------------------------------------ helpers
def _files(fr) -> dict[str, tuple[str, str]]:
    """Named file -> (reason, message) of the drop report (first entry per file)."""
    out: dict = {}
    for p, r, m in fr.drops.files:
        out.setdefault(Path(p).name, (r, m))
    return out


def _set_data(path: Path, data: np.ndarray, compressed: bool = False) -> None:
    """Replace a cube's first image extension's data (uint16 ADU), keeping its keys."""
    with fits.open(path) as hl:
        prim, head = hl[0].header.copy(), hl[1].header.copy()
    for k in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BZERO", "BSCALE"):
        head.pop(k, None)
    cls = fits.CompImageHDU if compressed else fits.ImageHDU
    hdu = cls(np.asarray(data, dtype=np.uint16), header=head, name=head["EXTNAME"])
    fits.HDUList([fits.PrimaryHDU(header=prim), hdu]).writeto(path, overwrite=True)


def _adu(path: Path) -> np.ndarray:
    with fits.open(path) as hl:
        return np.asarray(hl[1].data).astype(np.uint16)


def _hk(obs_dir: Path) -> Path:
    (p,) = obs_dir.glob("*.csv")
    return p


def _rewrite_trp1(path: Path, fn) -> None:
    """Rewrite each sample's TRP1 cell through ``fn(float) -> str``."""
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        t, v, *rest = line.split(",")
        out.append(",".join([t, fn(float(v)), *rest]))
    path.write_text("\n".join(out) + "\n")


def _bft(camp, capsys, *extra) -> tuple[int, str, str]:
    rc = cnn_cli.main(["bft", str(camp), *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, out: str, err: str, *says: str) -> None:
    assert rc == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("plato-cnn bft: "), err
    for s in says:
        assert s in lines[0], (s, lines[0])


# ------------------------------------------------------------------------------ 1 background
def test_zero_background_is_dropped_naming_its_file(camp, capsys, tmp_path, ref_bft):
    d = obs_dirs(camp)[1]
    bg, src = cubes(d)[0], cubes(d)[1]
    _set_data(bg, np.zeros_like(_adu(bg)))
    fr = read_campaign(camp)
    files = _files(fr)
    assert files[bg.name][0] == "bad_background" and "median level 0.0 ADU" in files[bg.name][1]
    assert files[src.name][0] == "bad_background" and bg.name in files[src.name][1]
    assert fr.drops.frames["bad_background"] == PER_CUBE and len(fr) == N_ALL - PER_CUBE
    assert src.name not in {fr.cube_paths[i].name for i in np.unique(fr.cube_index)}
    with pytest.raises(cf.FormatError, match="bad_background"):
        read_campaign(camp, strict=True)
    out = tmp_path / "r.json"
    rc, _, err = _bft(camp, capsys, "--fit", "gauss", "--json", str(out))
    assert rc == 0 and "bad_background" in err
    rep = json.loads(out.read_text())
    assert rep["drops"]["bad_background"] == PER_CUBE and rep["frames_dropped"] == PER_CUBE
    assert any(bg.name in w for w in rep["warnings"])
    # what is left is a fair estimate: within the two sigmas of the intact campaign's
    assert abs(rep["bft_degC"] - ref_bft.bft_degC) < rep["sigma_degC"] + ref_bft.sigma_degC


@pytest.mark.parametrize("offset_adu", [-300, 300, 25])
def test_background_off_by_some_adu_is_dropped(camp, offset_adu):
    d = obs_dirs(camp)[3]
    bg, src = cubes(d)[2], cubes(d)[3]
    _set_data(bg, _adu(bg).astype(np.int32) + offset_adu)
    fr = read_campaign(camp)
    reason, msg = _files(fr)[src.name]
    assert reason == "bad_background" and bg.name in msg and "ADU" in msg
    level = float(re.search(r"far from the star is ([-+0-9.]+) ADU", msg).group(1))
    assert level == pytest.approx(-offset_adu, abs=1.0)  # the residual the check measured
    assert fr.drops.frames["bad_background"] == PER_CUBE and len(fr) == N_ALL - PER_CUBE


def test_small_background_drift_is_accepted(camp, reference):
    """1 ADU of drift (half the tolerance) is left alone, and so is diffuse light with the
    shutter open (3 ADU = 75 e-/px, within the 100 e-/px the training covers)."""
    d0, d1 = obs_dirs(camp)[:2]
    bg = cubes(d0)[0]
    _set_data(bg, _adu(bg).astype(np.int32) + 1)
    src = cubes(d1)[1]
    _set_data(src, _adu(src).astype(np.int32) + 3)
    fr = read_campaign(camp)
    assert fr.drops.n_frames == 0 and len(fr) == N_ALL


# ------------------------------------------------------------------------------ 2 plateaux
def test_trp1_stuck_at_one_value_is_one_plateau(camp, capsys):
    for d in obs_dirs(camp):
        _rewrite_trp1(_hk(d), lambda v: "-80.0000")
    fr = read_campaign(camp)
    assert np.unique(fr.obsid).tolist() == [1024] and len(fr) == N_ALL
    (obs,) = fr.observations
    assert obs.merged_obsids == (1024, 1035, 1046, 1057, 1068)
    assert any("stuck sensor" in w for w in fr.drops.warnings)
    assert any("are one plateau" in w for w in fr.drops.warnings)
    with pytest.raises(InsufficientPlateaux, match="got 1"):
        estimate_bft(fr, "cubic")
    rc, out, err = _bft(camp, capsys)
    _one_line_error(rc, out, err, "needs at least 4 plateaux", "got 1")


def test_plateaux_within_hundredths_collapse(tmp_path, capsys):
    camp = make_campaign(tmp_path, temps=(-80.0, -80.02, -80.04, -80.01, -80.03), **KW)
    fr = read_campaign(camp)
    assert np.unique(fr.obsid).size == 1 and fr.observations[0].merged_obsids
    warning = next(w for w in fr.drops.warnings if "are one plateau" in w)
    assert "1 distinct temperature" in warning
    rc, out, err = _bft(camp, capsys, "--fit", "quadratic")
    _one_line_error(rc, out, err, "needs at least 3 plateaux", "got 1")


def test_two_observations_at_one_temperature_merge_others_stay(camp, reference):
    """A repeated plateau (OBSID 1068 redone at -80 degC) joins 1046: 4 distinct plateaux."""
    _rewrite_trp1(_hk(obs_dirs(camp)[4]), lambda v: f"{v - 10.0:.4f}")
    fr = read_campaign(camp)
    assert sorted(np.unique(fr.obsid).tolist()) == [1024, 1035, 1046, 1057]
    merged = [o for o in fr.observations if o.merged_obsids]
    assert [o.merged_obsids for o in merged] == [(1046, 1068)]
    assert len(fr) == N_ALL and fr.drops.n_frames == 0


# ------------------------------------------------------------------------------ 3 kelvin
def test_one_plateau_in_kelvin_is_dropped_by_name(camp, capsys, tmp_path):
    hk = _hk(obs_dirs(camp)[2])
    _rewrite_trp1(hk, lambda v: f"{v + 273.15:.4f}")
    fr = read_campaign(camp)
    reason, msg = _files(fr)[hk.name]
    assert reason == "implausible_trp1" and "kelvin" in msg and "-120" in msg
    assert fr.drops.frames["implausible_trp1"] == PER_OBS and 1046 not in fr.obsid
    assert np.all(fr.temperature_degC < -60)
    out = tmp_path / "r.json"
    rc, _, err = _bft(camp, capsys, "--fit", "quadratic", "--json", str(out))
    assert rc == 0 and "implausible_trp1" in err
    rep = json.loads(out.read_text())
    assert rep["drops"] == {"implausible_trp1": PER_OBS}
    assert -90 <= rep["bft_degC"] <= -70


def test_all_plateaux_in_kelvin_are_refused(camp, capsys):
    for d in obs_dirs(camp):
        _rewrite_trp1(_hk(d), lambda v: f"{v + 273.15:.4f}")
    with pytest.raises(CampaignError, match="no source frame with a temperature.*implausible"):
        read_campaign(camp)
    with pytest.raises(cf.FormatError, match="implausible_trp1"):
        read_campaign(camp, strict=True)
    rc, out, err = _bft(camp, capsys)
    _one_line_error(rc, out, err, "implausible_trp1", "kelvin")
    rc, out, err = _bft(camp, capsys, "--method", "cnn")
    _one_line_error(rc, out, err, "implausible_trp1")


# ------------------------------------------------------------------------------ 4 HK CSV
def test_unquoted_decimal_commas_are_refused_naming_the_line(camp, capsys):
    hk = _hk(obs_dirs(camp)[1])
    _rewrite_trp1(hk, lambda v: f"{v:.4f}".replace(".", ","))
    fr = read_campaign(camp)
    reason, msg = _files(fr)[hk.name]
    assert reason == "bad_hk_row" and "line 2 has 3 cells but the header has 2" in msg
    assert fr.drops.frames["bad_hk_row"] == PER_OBS and 1035 not in fr.obsid
    with pytest.raises(cf.FormatError, match="bad_hk_row.*line 2"):
        read_campaign(camp, strict=True)


def test_conflicting_repeated_time_stamps_are_refused(camp):
    hk = _hk(obs_dirs(camp)[0])
    lines = hk.read_text().splitlines()
    t, v, *rest = lines[5].split(",")
    lines.append(",".join([t, f"{float(v) + 5.0:.4f}", *rest]))  # same time, 5 degC apart
    hk.write_text("\n".join(lines) + "\n")
    fr = read_campaign(camp)
    reason, msg = _files(fr)[hk.name]
    assert reason == "conflicting_hk" and "differ by 5.000 degC" in msg
    assert fr.drops.frames["conflicting_hk"] == PER_OBS and 1024 not in fr.obsid


def test_agreeing_repeated_time_stamps_are_averaged(camp, reference):
    hk = _hk(obs_dirs(camp)[0])
    lines = hk.read_text().splitlines()
    lines.append(lines[5])  # an exact repeat
    hk.write_text("\n".join(lines) + "\n")
    fr = read_campaign(camp)
    assert fr.drops.n_frames == 0
    np.testing.assert_array_equal(fr.temperature_degC, reference.temperature_degC)


def test_conflicting_samples_across_two_hk_files(camp):
    hk = _hk(obs_dirs(camp)[0])
    lines = hk.read_text().splitlines()
    t, v, *rest = lines[3].split(",")
    other = hk.parent / (hk.name[: -len("20260105.csv")] + "20260106.csv")
    other.write_text(lines[0] + "\n" + ",".join([t, f"{float(v) + 2.0:.4f}", *rest]) + "\n")
    fr = read_campaign(camp)
    assert fr.drops.frames["conflicting_hk"] == PER_OBS and 1024 not in fr.obsid
    reason, msg = _files(fr)[hk.name]
    assert reason == "conflicting_hk" and other.name in msg


# ------------------------------------------------------------------------------ 5 not files
@pytest.fixture()
def alarm():
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def boom(*_):
        raise TimeoutError("the reader blocked")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_fifo_and_device_cubes_are_refused_without_opening(camp, capsys, alarm):
    d0, d1 = obs_dirs(camp)[:2]
    fifo, dev = cubes(d0)[1], cubes(d1)[3]
    fifo.unlink()
    os.mkfifo(fifo)
    dev.unlink()
    os.symlink("/dev/zero", dev)
    hk = _hk(obs_dirs(camp)[2])
    hk.unlink()
    os.mkfifo(hk)
    fr = read_campaign(camp)
    files = _files(fr)
    assert files[fifo.name] == ("not_regular_file", f"{fifo}: not_regular_file: a FIFO, not a "
                                "regular file: not opened")  # fmt: skip
    assert files[dev.name][0] == "not_regular_file" and "character device" in files[dev.name][1]
    assert files[hk.name][0] == "not_regular_file"
    assert fr.drops.frames["not_regular_file"] == PER_OBS  # the HK-less observation's frames
    assert len(fr) == N_ALL - 2 * PER_CUBE - PER_OBS
    rc, _, err = _bft(camp, capsys, "--fit", "quadratic")
    assert rc == 0 and "not_regular_file" in err
    with pytest.raises(cf.FormatError, match="not_regular_file"):
        read_campaign(camp, strict=True)


# ------------------------------------------------------------------------------ 6 compressed
def test_tile_compressed_cube_is_decoded_exactly(camp, reference):
    d = obs_dirs(camp)[0]
    for c in cubes(d)[:2]:
        _set_data(c, _adu(c), compressed=True)
    with fits.open(cubes(d)[1]) as hl:
        assert isinstance(hl[1], fits.CompImageHDU)
    ext = cf.read_cube(cubes(d)[1])
    try:
        np.testing.assert_array_equal(ext.extensions[0].read_frames(0, 4), _adu(cubes(d)[1]))
    finally:
        ext.close()
    fr = read_campaign(camp)
    assert fr.drops.n_frames == 0 and not np.any(fr.flags & FLAG_SATURATED)
    np.testing.assert_array_equal(fr.stamps, reference.stamps)


def test_corrupt_compressed_tiles_are_dropped_by_name(camp):
    c = cubes(obs_dirs(camp)[0])[1]
    _set_data(c, _adu(c), compressed=True)
    raw = bytearray(c.read_bytes())
    with fits.open(c) as hl:
        start = hl[1]._data_offset
    raw[start + 200 : start + 400] = b"\x13" * 200  # inside the compressed tiles
    c.write_bytes(bytes(raw))
    fr = read_campaign(camp)
    reason, msg = _files(fr)[c.name]
    assert reason == "corrupt" and "IMAGE_1_E" in msg and "cannot read frames" in msg
    assert fr.drops.frames == {"corrupt": PER_CUBE} and len(fr) == N_ALL - PER_CUBE
    with pytest.raises(cf.FormatError, match="corrupt"):
        read_campaign(camp, strict=True)


# ------------------------------------------------------------------------------ 7 blocks
def test_frames_read_a_block_at_a_time_are_the_same(camp, reference, monkeypatch):
    monkeypatch.setattr(cf, "READ_BLOCK_BYTES", 1)  # one frame per block
    fr = read_campaign(camp)
    np.testing.assert_array_equal(fr.stamps, reference.stamps)
    np.testing.assert_array_equal(fr.flags, reference.flags)


def test_cube_is_read_through_one_open_file(camp, monkeypatch):
    """The path is opened once per cube; the data are never memory-mapped into the frames."""
    opened: list[str] = []
    real_open = open

    def spy(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    read_campaign(camp)
    fits_opens = [p for p in opened if p.endswith("_cube.fits")]
    assert len(fits_opens) == len(set(fits_opens)) == 5 * 3 * 2


# ------------------------------------------------------------------------------ 8 CLI
def test_every_frame_flagged_is_a_one_line_error(tmp_path, capsys, model_dir):
    camp = make_campaign(tmp_path, temps=(-85.0, -80.0), n_fields=2, n_dithers=1)
    for d in obs_dirs(camp):
        for c in cubes(d)[1::2]:
            a = _adu(c)
            a[:, 16, 16] = 65535  # saturated
            _set_data(c, a)
    fr = read_campaign(camp)
    assert np.all(fr.flags & FLAG_SATURATED)
    rc, out, err = _bft(camp, capsys, "--method", "cnn", "--model", str(model_dir))
    _one_line_error(rc, out, err, "no usable frame")
    rc, out, err = _bft(camp, capsys, "--fit", "gauss")
    _one_line_error(rc, out, err, "got 0")
    rc, out, err = _bft(camp, capsys, "--fit", "cubic")
    _one_line_error(rc, out, err, "got 0")


# ------------------------------------------------------------------------------ read-only
def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    dirs = {str(p): ("dir", p.stat().st_mtime_ns) for p in [root, *root.rglob("*")] if p.is_dir()}
    return {**out, **dirs}


def test_reading_changes_no_byte_and_no_mtime(camp, tmp_path, capsys, model_dir):
    c = cubes(obs_dirs(camp)[0])[1]
    _set_data(c, _adu(c), compressed=True)  # a compressed cube among them
    before = _snapshot(camp)
    read_campaign(camp)
    assert _snapshot(camp) == before
    out = tmp_path / "outside" / "r.json"
    out.parent.mkdir()
    rc, _, _ = _bft(camp, capsys, "--json", str(out))
    assert rc == 0 and out.exists()
    rc, _, _ = _bft(camp, capsys, "--method", "cnn", "--model", str(model_dir), "--n-boot", "10",
                    "--json", str(out))  # fmt: skip
    assert rc == 0
    assert _snapshot(camp) == before
