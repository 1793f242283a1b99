"""Campaign reader: good data, and every bad case of docs/campaign-format.md built on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from campaign_builder import BIAS_ADU, GAIN, cubes, make_campaign, obs_dirs

from plato_cnn import cli as cnn_cli
from plato_cnn.classical import InsufficientPlateaux, estimate_bft
from plato_cnn.reader import (
    FLAG_COSMIC,
    FLAG_NO_STAR,
    FLAG_SATURATED,
    FLAG_UNSTABLE,
    CampaignError,
    read_campaign,
)
from plato_sim.io import campaign_format as cf


@pytest.fixture()
def camp(tmp_path):
    return make_campaign(tmp_path)


def _rewrite_ext(path, fn):
    """Rewrite a cube's first image extension through ``fn(header, data) -> (header, data)``."""
    with fits.open(path) as hl:
        prim = hl[0].header.copy()
        h = hl[1].header.copy()
        d = hl[1].data.copy()
    h, d = fn(h, d)
    hdu = fits.ImageHDU(d, header=h, name=h.get("EXTNAME", "IMAGE_1_E"))
    fits.HDUList([fits.PrimaryHDU(header=prim), hdu]).writeto(path, overwrite=True)


def test_reads_good_campaign(camp):
    fr = read_campaign(camp)
    assert len(fr) == 5 * 3 * 4 * 2
    assert fr.stamps.shape == (120, 32, 32) and fr.stamps.dtype == np.float32
    assert fr.camera == "testcam" and fr.site == "INTA"
    assert fr.drops.n_frames == 0 and np.all(fr.flags == 0)
    assert sorted(set(fr.obsid.tolist())) == [1024, 1035, 1046, 1057, 1068]
    assert np.unique(fr.field_id).size == 3
    # temperature interpolated from HK: within the HK noise of the plateau
    for o, t in zip((1024, 1068), (-90.0, -70.0), strict=True):
        assert np.all(np.abs(fr.temperature_degC[fr.obsid == o] - t) < 0.05)
    # star centred on its centroid: the centroid lies within half a pixel of the centre
    yy, xx = np.mgrid[0:32, 0:32]
    s = np.clip(fr.stamps, 0, None)
    cy = (s * yy).sum(axis=(1, 2)) / s.sum(axis=(1, 2))
    cx = (s * xx).sum(axis=(1, 2)) / s.sum(axis=(1, 2))
    assert np.all(np.abs(cy - 16) <= 0.6) and np.all(np.abs(cx - 16) <= 0.6)
    # electrons: the stamp sum is the star's flux (4e5 e-) within noise
    assert np.allclose(fr.stamps.sum(axis=(1, 2)), 4e5, rtol=0.02)
    # CCD coordinates = window origin + centroid
    assert np.all((fr.row > 1000) & (fr.row < 1000 + 20 + 32))
    # frame times: DATE-OBS + k CYCLETIM
    t = fr.time_s[(fr.obsid == 1024) & (fr.field_id == 0)]
    assert np.allclose(np.diff(t), 2.0)


def test_uint16_never_overflows(tmp_path):
    camp = make_campaign(tmp_path, temps=(-80.0,), n_fields=1, n_dithers=1, frames_per_dither=1)
    src = cubes(obs_dirs(camp)[0])[1]

    def bright(h, d):
        d = np.full_like(d, int(BIAS_ADU))
        d[0, 16, 16] = 40000  # above 32767: an int16 cast would wrap negative
        d[0, 16, 17] = 39000
        return h, d

    _rewrite_ext(src, bright)
    fr = read_campaign(camp)
    assert fr.stamps.max() > 0
    expected = (40000 - BIAS_ADU) * GAIN
    assert fr.stamps.max() == pytest.approx(expected, rel=1e-3)


def test_missing_hk_drops_observation(camp):
    for p in obs_dirs(camp)[0].glob("*.csv"):
        p.unlink()
    fr = read_campaign(camp)
    assert 1024 not in fr.obsid
    assert fr.drops.frames["missing_hk"] == 24
    assert any("01024_INTA_testcam" in w and "no HK file" in w for w in fr.drops.warnings)


def test_empty_hk_and_missing_column(camp):
    d = obs_dirs(camp)
    (hk0,) = d[0].glob("*.csv")
    hk0.write_text("")
    (hk1,) = d[1].glob("*.csv")
    text = hk1.read_text().replace(cf.HK_TRP1, "SOMETHING_ELSE")
    hk1.write_text(text)
    fr = read_campaign(camp)
    reasons = {(p.split("/")[-1], r) for p, r, _ in fr.drops.files}
    assert (hk0.name, "empty_hk") in reasons
    assert (hk1.name, "missing_column") in reasons
    assert fr.drops.frames["empty_hk"] == 24 and fr.drops.frames["missing_column"] == 24
    with pytest.raises(cf.FormatError, match="empty_hk"):
        read_campaign(camp, strict=True)


def test_hk_not_covering_frames(camp):
    (hk,) = obs_dirs(camp)[2].glob("*.csv")
    rows = hk.read_text().splitlines()
    hk.write_text("\n".join(rows[: len(rows) // 3]) + "\n")  # HK stops early
    fr = read_campaign(camp)
    assert fr.drops.frames["hk_not_covering"] > 0
    assert np.all(np.isfinite(fr.temperature_degC))
    assert any("60 s" in w for w in fr.drops.warnings)


def test_truncated_and_corrupt_fits(camp):
    c = cubes(obs_dirs(camp)[0])
    raw = c[1].read_bytes()
    c[1].write_bytes(raw[: len(raw) - 4000])
    c[3].write_bytes(b"this is not FITS" * 200)
    fr = read_campaign(camp)
    reasons = {(p.split("/")[-1], r) for p, r, _ in fr.drops.files}
    assert (c[1].name, "truncated") in reasons
    assert (c[3].name, "corrupt") in reasons
    assert fr.drops.frames["truncated"] == 8  # frame count recovered from the header
    with pytest.raises(cf.FormatError) as ei:
        read_campaign(camp, strict=True)
    assert c[1].name in str(ei.value)


def test_missing_header_key(camp):
    src = cubes(obs_dirs(camp)[0])[1]

    def drop_key(h, d):
        del h["FOV_TH"]
        return h, d

    _rewrite_ext(src, drop_key)
    fr = read_campaign(camp)
    (entry,) = [f for f in fr.drops.files if f[1] == "missing_key"]
    assert src.name in entry[0] and "FOV_TH" in entry[2] and "IMAGE_1_E" in entry[2]


def test_wrong_shape_and_dtype(camp):
    c = cubes(obs_dirs(camp)[1])

    def flat(h, d):
        return h, d[0].astype(np.uint16)

    def int32(h, d):
        return h, d.astype(np.int32)

    _rewrite_ext(c[1], flat)
    _rewrite_ext(c[3], int32)
    fr = read_campaign(camp)
    reasons = {(p.split("/")[-1], r) for p, r, _ in fr.drops.files}
    assert (c[1].name, "wrong_shape") in reasons
    assert (c[3].name, "wrong_dtype") in reasons
    assert len(fr) == 120 - 16


def test_nan_and_inf_frames_dropped(camp):
    src = cubes(obs_dirs(camp)[0])[1]

    def to_float_with_nan(h, d):
        d = d.astype(np.float32)
        d[1, 3, 3] = np.nan
        d[4, 0, 0] = np.inf
        for k in ("BZERO", "BSCALE"):
            h.pop(k, None)
        return h, d

    _rewrite_ext(src, to_float_with_nan)
    fr = read_campaign(camp)
    assert fr.drops.frames["non_finite"] == 2
    assert any("[1, 4]" in w and src.name in w for w in fr.drops.warnings)
    assert len(fr) == 118


def test_saturated_and_no_star_flagged(camp):
    c = cubes(obs_dirs(camp)[2])

    def saturate(h, d):
        d = d.copy()
        d[0, 15:17, 15:17] = 65535
        return h, d

    def no_star(h, d):
        rng = np.random.default_rng(1)
        return h, (BIAS_ADU + rng.normal(0, 2.0, d.shape)).astype(np.uint16)

    _rewrite_ext(c[1], saturate)
    _rewrite_ext(c[3], no_star)
    fr = read_campaign(camp)
    assert int(np.sum((fr.flags & FLAG_SATURATED) != 0)) == 1
    assert int(np.sum((fr.flags & FLAG_NO_STAR) != 0)) == 8
    ex = fr.excluded_counts()
    assert ex == {"saturated": 1, "no_star": 8}
    # flagged frames never enter the estimate
    r = estimate_bft(fr, "cubic")
    assert r.frames_used == 120 - 9


def test_cosmic_ray_flags_only_the_hit_frame(camp):
    src = cubes(obs_dirs(camp)[1])[1]

    def hit(h, d):
        d = d.copy()
        d[3, 2, 2:5] += 400  # 1e4 e- track far from the star, in the 2nd frame of dither 1
        return h, d

    _rewrite_ext(src, hit)
    fr = read_campaign(camp)
    cr = np.flatnonzero(fr.flags & FLAG_COSMIC)
    assert cr.size == 1
    assert fr.obsid[cr[0]] == 1035 and fr.frame_index[cr[0]] == 3


def test_source_without_background(camp):
    c = cubes(obs_dirs(camp)[0])
    c[2].unlink()  # the closed-shutter cube of field 1
    fr = read_campaign(camp)
    (entry,) = [f for f in fr.drops.files if f[1] == "no_background"]
    assert c[3].name in entry[0]
    assert fr.drops.frames["no_background"] == 8


def test_unstable_plateau_warned_kept_separate(tmp_path):
    camp = make_campaign(tmp_path, hk_drift_degC={1046: 1.2})
    fr = read_campaign(camp)
    (obs,) = [o for o in fr.observations if o.obsid == 1046]
    assert obs.unstable and obs.temperature_range_degC > 0.5
    assert np.all((fr.flags[fr.obsid == 1046] & FLAG_UNSTABLE) != 0)
    assert np.all((fr.flags[fr.obsid != 1046] & FLAG_UNSTABLE) == 0)
    assert any("not a plateau" in w and "01046" in w for w in fr.drops.warnings)
    r = estimate_bft(fr, "cubic")
    assert 1046 not in r.obsids and len(r.obsids) == 4


def test_too_few_plateaux_for_the_fit(camp, tmp_path, capsys):
    fr = read_campaign(camp, obsids=[1024, 1035, 1046])
    with pytest.raises(InsufficientPlateaux, match="cubic.*at least 4"):
        estimate_bft(fr, "cubic")
    assert np.isfinite(estimate_bft(fr, "quadratic").bft_degC)
    rc = cnn_cli.main(["bft", str(camp), "--obsids", "1024,1035,1046", "--fit", "cubic"])
    assert rc != 0
    assert "needs at least 4 plateaux" in capsys.readouterr().err


def test_unusable_campaign_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CampaignError, match="no observation folder"):
        read_campaign(tmp_path / "empty")
    assert cnn_cli.main(["bft", str(tmp_path / "empty")]) != 0
    camp = make_campaign(tmp_path / "x", temps=(-80.0,), n_fields=1)
    for p in cubes(obs_dirs(camp)[0]):
        p.write_bytes(b"garbage")
    with pytest.raises(CampaignError, match="no usable source frame"):
        read_campaign(camp)
    with pytest.raises(CampaignError, match="not in the campaign"):
        read_campaign(camp, obsids=[9999])


def test_cli_bft_json_and_plot(camp, tmp_path):
    out = tmp_path / "bft.json"
    png = tmp_path / "bft.png"
    c = cubes(obs_dirs(camp)[0])
    c[1].write_bytes(c[1].read_bytes()[:-4000])  # one truncated cube: counted as dropped
    rc = cnn_cli.main(["bft", str(camp), "--method", "eef", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    d = json.loads(out.read_text())
    for key in ("camera", "method", "fit", "bft_degC", "sigma_degC", "obsids", "frames_used"):
        assert key in d
    assert d["camera"] == "testcam" and d["method"] == "eef" and d["fit"] == "cubic"
    assert all(isinstance(o, int) for o in d["obsids"])
    assert d["frames_dropped"] == 8 and d["drops"] == {"truncated": 8}
    assert isinstance(d["warnings"], list) and any("truncated" in w for w in d["warnings"])
    assert -90 <= d["bft_degC"] <= -70 and d["sigma_degC"] > 0
    assert png.stat().st_size > 10_000
