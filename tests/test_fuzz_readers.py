"""Property-based fuzzing (hypothesis) of the HK and FITS readers and of the dataset manifest
loader (issue 7): whatever the bytes, a reader returns well-formed data or raises its own
clear error (``FormatError`` naming the file, ``CampaignError``, ``ValueError``/``OSError``
naming the manifest); never another exception, never data it could not read.

Every test is derandomized (a fixed sequence of examples), so the suite is deterministic.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from campaign_builder import cubes, make_campaign, obs_dirs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from plato_cnn.reader import CampaignError, read_campaign
from plato_sim.io import campaign_format as cf
from plato_sim.io.store import MANIFEST_NAME, ShardedDataset, shard_name, write_shard
from plato_sim.scenes.sampling import label_dtype

FUZZ = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

# ------------------------------------------------------------------------------ HK CSV
_T_MIN = datetime(2000, 1, 1)
_T_MAX = datetime(2100, 1, 1)
_ZONES = st.one_of(
    st.none(),
    st.just(timezone.utc),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_TEMP = st.one_of(
    st.floats(-200.0, 100.0, allow_nan=False),
    st.just(float("nan")),
    st.just(float("inf")),
)


@st.composite
def hk_rows(draw) -> tuple[list[str], list[list[str]], np.ndarray, np.ndarray]:
    """A valid HK table as text: header (required columns among extras, any order), rows;
    and the UTC times (s) and temperatures (degC) the rows stand for."""
    extras = draw(st.lists(_TEXT.filter(lambda s: s.strip() not in (cf.HK_TIME, cf.HK_TRP1))))
    header = [cf.HK_TIME, cf.HK_TRP1, *extras]
    order = draw(st.permutations(range(len(header))))
    n = draw(st.integers(1, 30))
    times = draw(st.lists(st.datetimes(_T_MIN, _T_MAX, timezones=_ZONES), min_size=n, max_size=n))
    if draw(st.booleans()):  # repeated time stamps
        times += draw(st.lists(st.sampled_from(times), max_size=5))
    rows, t_s, v = [], [], []
    for t in times:
        spec, us_step = draw(st.sampled_from([("seconds", 10**6), ("milliseconds", 1000)]))
        t = t.replace(microsecond=t.microsecond // us_step * us_step)  # what the text holds
        text = t.isoformat(timespec=spec)
        if t.tzinfo is timezone.utc and draw(st.booleans()):
            text = text.replace("+00:00", "Z")
        temp = draw(_TEMP)
        cells = [
            text,
            repr(temp),
            *draw(st.lists(_TEXT, min_size=len(extras), max_size=len(extras))),
        ]
        rows.append([cells[i] for i in order])
        t_s.append((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp())
        v.append(temp)
    return [header[i] for i in order], rows, np.array(t_s), np.array(v)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _assert_well_formed(hk: cf.HKTable) -> None:
    assert hk.time_s.ndim == 1 and hk.time_s.shape == hk.trp1_degC.shape and hk.time_s.size
    assert np.all(np.isfinite(hk.time_s)) and np.all(np.isfinite(hk.trp1_degC))
    assert np.all(np.diff(hk.time_s) > 0)


@FUZZ
@given(hk_rows())
def test_hk_reader_matches_a_model(tmp_path, table):
    """Valid HK in any column order, zone, precision, order, with repeats and NaN/inf."""
    header, rows, t_s, v = table
    path = tmp_path / "hk.csv"
    _write_csv(path, header, rows)
    good = np.isfinite(v)
    if not good.any():
        with pytest.raises(cf.FormatError, match="empty_hk") as ei:
            cf.read_hk_csv(path)
        assert ei.value.path == path
        return
    hk = cf.read_hk_csv(path)
    _assert_well_formed(hk)
    expect_t = np.unique(t_s[good])
    expect_v = [v[good][t_s[good] == t].mean() for t in expect_t]
    np.testing.assert_array_equal(hk.time_s, expect_t)
    np.testing.assert_allclose(hk.trp1_degC, expect_v, rtol=1e-12, atol=1e-12)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=300).map(lambda b: b"timestamp,GTCS_TRP1_T_AVG\n" + b),
        st.lists(_TEXT, max_size=6).map(
            lambda c: ("timestamp,GTCS_TRP1_T_AVG\n" + "\n".join(c)).encode("utf-8")
        ),
    )
)
def test_hk_reader_on_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "hk.csv"
    path.write_bytes(data)
    try:
        hk = cf.read_hk_csv(path)
    except cf.FormatError as err:
        assert err.path == path and str(path) in str(err) and "\n" not in str(err)
        return
    _assert_well_formed(hk)


@FUZZ
@given(
    st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20, unique=True),
    st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20),
)
def test_hk_interpolation_covers_within_60_s(times, queries):
    t = np.sort(np.asarray(times))
    v = np.sin(t)  # any finite temperatures
    temp, ok = cf.HKTable(t, v).temperature_at(np.asarray(queries))
    nearest = np.min(np.abs(np.asarray(queries)[:, None] - t[None, :]), axis=1)
    np.testing.assert_array_equal(ok, nearest <= cf.HK_MAX_GAP_S)
    assert np.all(np.isnan(temp[~ok]))
    assert np.all((temp[ok] >= v.min() - 1e-12) & (temp[ok] <= v.max() + 1e-12))


# ------------------------------------------------------------------------------ FITS
_PRIMARY = {"DATE-OBS": "2026-01-05T10:00:00.000", "OBSID": 1024, "SITE": "INTA", "CAMERA": "c"}
_IMAGE = {
    "CCD_ID": 1,
    "V_START": 100,
    "H_START": 200,
    "EXPTIME": 0.1,
    "CYCLETIM": 2.0,
    "SHUTTER": "OPEN",
    "FOV_TH": 5.0,
    "FOV_PHI": 60.0,
    "GAIN": 25.0,
}


@pytest.fixture(scope="module")
def cube_bytes(tmp_path_factory) -> bytes:
    """A valid two-extension cube file (plus an ignored prescan extension)."""
    rng = np.random.default_rng(5)
    p = tmp_path_factory.mktemp("cube") / "c.fits"
    data = rng.integers(900, 40000, (2, 12, 14)).astype(np.uint16)
    ext = [("IMAGE_1_E", _IMAGE, data), ("SPRE_1_E", {}, data[:, :, :2])]
    ext.append(("IMAGE_1_F", {**_IMAGE, "SHUTTER": "CLOSED"}, data[:1]))
    cf.write_cube(p, _PRIMARY, ext)
    return p.read_bytes()


def _card_offsets(raw: bytes) -> list[int]:
    """Byte offsets of the header cards that carry a value (``KEY     = value``)."""
    return [i for i in range(0, len(raw), 80) if raw[i + 8 : i + 10] == b"= "]


@st.composite
def mutated(draw, raw: bytes) -> bytes:
    b = bytearray(raw)
    cards = _card_offsets(raw)
    for _ in range(draw(st.integers(0, 3))):  # a card's value replaced by printable text
        i = draw(st.sampled_from(cards))
        text = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
        b[i + 10 : i + 30] = text.encode().ljust(20)[:20]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 4]))):  # raw bytes anywhere
        b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 3)) == 0:  # truncated
        del b[draw(st.integers(0, len(b))) :]
    return bytes(b)


@FUZZ
@given(data=st.data())
def test_fits_reader_on_mutated_cubes(tmp_path, cube_bytes, data):
    raw = data.draw(mutated(cube_bytes))
    path = tmp_path / "c.fits"
    path.write_bytes(raw)
    try:
        cube = cf.read_cube(path)
    except cf.FormatError as err:
        event(f"FormatError {err.reason}")
        assert err.path == path and str(path) in str(err) and "\n" not in str(err)
        return
    event("read")
    try:
        assert cube.extensions and cube.primary is not None
        for ext in cube.extensions:
            assert cf.parse_image_ext_name(ext.name) is not None
            assert ext.data.ndim == 3 and ext.data.dtype in (np.uint16, np.float32)
            assert np.asarray(ext.data).size == int(np.prod(ext.data.shape))  # all mapped
    finally:
        cube.close()


@pytest.fixture(scope="module")
def one_plateau(tmp_path_factory) -> Path:
    return make_campaign(tmp_path_factory.mktemp("one"), temps=(-80.0,), n_fields=2, n_dithers=2)


@FUZZ
@given(data=st.data(), which=st.integers(0, 3), strict=st.booleans())
def test_campaign_reader_with_one_mutated_cube(tmp_path, one_plateau, data, which, strict):
    """The whole reader, one of its cubes fuzzed: frames or a clear error, nothing else."""
    camp = Path(shutil.copytree(one_plateau, tmp_path / "camp", dirs_exist_ok=True))
    target = cubes(obs_dirs(camp)[0])[which]
    target.write_bytes(data.draw(mutated(target.read_bytes())))
    try:
        fr = read_campaign(camp, strict=strict)
    except CampaignError as err:
        event("CampaignError")
        assert str(camp) in str(err) and "\n" not in str(err)
        return
    except cf.FormatError as err:
        event(f"FormatError {err.reason}")
        assert strict and err.path == target
        return
    event(f"read, {len(fr)} frames, drops {sorted(fr.drops.frames)}")
    n_total = 2 * 2 * 2  # fields x dithers x frames per dither
    assert 0 < len(fr) <= n_total
    assert np.all(np.isfinite(fr.stamps)) and np.all(np.isfinite(fr.temperature_degC))
    assert np.all(np.abs(fr.temperature_degC + 80.0) < 0.1)
    assert np.all((fr.ccd >= 1) & (fr.ccd <= 4)) and np.all(fr.field_theta_deg >= 0)
    if len(fr) < n_total:  # what is missing was reported, naming the fuzzed file
        assert any(Path(p) == target for p, _, _ in fr.drops.files)


# ------------------------------------------------------------------------------ manifest
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_N = (3, 2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    """Two tiny shards written by the store, and their valid manifest."""
    root = tmp_path_factory.mktemp("ds")
    shards = []
    for k, n in enumerate(_N):
        lab = np.zeros(n, dtype=label_dtype())
        lab["shard"] = k
        stamps = np.full((n, 4, 4), float(k), dtype=np.float32)
        digest = write_shard(root / shard_name(k), stamps, lab, {"shard": k})
        shards.append({"file": shard_name(k), "n": n, "spawn_key": [1, k], "sha256": digest})
    return root, {"format": "plato-focus-dataset/1", "status": "complete", "shards": shards}


@st.composite
def manifest_mutation(draw, valid: dict) -> object:
    """A valid manifest with a few parts replaced, deleted or added, or any JSON value."""
    if draw(st.integers(0, 4)) == 0:
        return draw(_JSON)
    m = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            k = draw(st.sampled_from(sorted(m)))
            if draw(st.booleans()):
                del m[k]
            else:
                m[k] = draw(_JSON)
        elif isinstance(m.get("shards"), list) and m["shards"]:
            i = draw(st.integers(0, len(m["shards"]) - 1))
            entry = m["shards"][i]
            if not isinstance(entry, dict) or not entry:
                m["shards"][i] = draw(_JSON)
                continue
            key = draw(st.sampled_from(sorted(entry)))
            entry[key] = draw(
                _JSON
                | st.sampled_from(["../x.h5", "", "..", "/etc/passwd", "a\x00b", "missing.h5"])
                | st.sampled_from([-1, 0, 1, 7, True, 2.5, "3"])
            )
    return m


@FUZZ
@given(data=st.data())
def test_manifest_loader(tmp_path, dataset, data):
    src, valid = dataset
    root = Path(shutil.copytree(src, tmp_path / "ds", dirs_exist_ok=True))
    m = data.draw(manifest_mutation(valid))
    text = json.dumps(m)
    raw = text.encode("utf-8", "surrogatepass")
    if data.draw(st.integers(0, 5)) == 0:  # damaged bytes: truncated or not UTF-8
        raw = raw[: data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=3))
    (root / MANIFEST_NAME).write_bytes(raw)
    manifest_path = str(root / MANIFEST_NAME)
    try:
        ds = ShardedDataset(root)
    except (ValueError, OSError) as err:
        event(f"refused: {str(err).split('(')[-1][:30]}")
        assert manifest_path in str(err) or str(root) in str(err)
        return
    event("accepted")
    # accepted: its shard list is well formed and the sizes add up
    n = [s["n"] for s in ds.manifest["shards"]]
    assert len(ds) == sum(n) and all(isinstance(v, int) and v >= 1 for v in n)
    assert all(f.parent == root for f in ds.files)
    try:
        labels = ds.labels()
        stamps = [ds[i][0] for i in range(len(ds))]
    except (ValueError, OSError) as err:  # a shard that is not what the manifest says
        assert any(str(f) in str(err) for f in ds.files)
        return
    finally:
        ds.close()
    assert labels.size == len(ds) and len(stamps) == len(ds)
    assert [s["file"] for s in ds.manifest["shards"]] == [s["file"] for s in valid["shards"]]


def test_manifest_loader_examples(dataset, tmp_path):
    """Named cases the fuzzing covers by chance only."""
    src, valid = dataset
    root = Path(shutil.copytree(src, tmp_path / "ds"))
    mp = root / MANIFEST_NAME
    mp.write_text(json.dumps(valid))
    ds = ShardedDataset(root)
    assert len(ds) == sum(_N) and float(ds[3][0][0, 0]) == 1.0
    ds.close()
    cases = {
        b"\xff\xfe{}": "corrupt manifest",
        b"[1, 2]": "not an object",
        b'{"status": "complete"}': "no 'shards' list",
        json.dumps({**valid, "shards": []}).encode(): "an empty one",
        json.dumps({**valid, "shards": [{"file": "../x.h5", "n": 1}]}).encode(): "file name",
        json.dumps({**valid, "shards": [{"file": "a.h5", "n": True}]}).encode(): "integer",
        json.dumps({**valid, "shards": [{"file": "a.h5", "n": -3}]}).encode(): "integer",
    }
    for raw, says in cases.items():
        mp.write_bytes(raw)
        with pytest.raises(ValueError, match=says) as ei:
            ShardedDataset(root)
        assert str(mp) in str(ei.value)
    # a shard holding fewer samples than the manifest says: a clear error, not h5py's
    mp.write_text(json.dumps({**valid, "shards": [{**valid["shards"][0], "n": 5}]}))
    ds = ShardedDataset(root)
    with pytest.raises(ValueError, match="does not hold the 5 stamps"):
        ds[4]
    mp.unlink()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        ShardedDataset(root)
