"""One name for the best-focus temperature: ``bft_degC``; ``t_bf_degC`` still read, with a warning.

Attributes keep a read-only deprecated alias; files and configs written under the old name
(truth sidecars, dataset label tables, camera pools, dataset configs and manifests) are read
as ``bft_degC``; everything written now carries ``bft_degC`` only.
"""

from __future__ import annotations

import contextlib
import json
import warnings

import h5py
import numpy as np
import pytest
import yaml

from plato_sim.io.imagette_format import (
    STAR_DTYPE,
    STAR_TRUTH_DTYPE,
    ImagetteField,
    read_imagettes,
    write_imagettes,
)
from plato_sim.io.store import (
    MANIFEST_NAME,
    ShardedDataset,
    read_shard,
    shard_name,
    write_json_atomic,
    write_shard,
)
from plato_sim.names import BFT_KEY, LegacyNameDict, canonical_dtype, normalise_keys
from plato_sim.scenes import sampling
from plato_sim.scenes.ground_test import emulate_or_load, read_truth, truth_path

OLD = "t_bf_degC"


def _deprecated():
    return pytest.warns(DeprecationWarning, match=r"t_bf_degC.*use bft_degC")


# ------------------------------------------------------------------------------ attributes
def _camera_entry(bft: float = -77.5) -> sampling.CameraEntry:
    return sampling.CameraEntry(
        index=0, perturbation={"perturbation_id": 1}, s_um_per_degC=10.0, t0_degC=-70.0,
        bft_degC=bft, dz_bf_um=-75.0, map_coef_um=(0.0,), grid_theta_deg=(0.0,),
        grid_phi_deg=(0.0,), grid_dz_opt_um=(0.0,), grid_eef_max=(0.5,), field_radius_deg=18.9,
    )  # fmt: skip


def _focus_fit():
    from plato_cnn.fit import FocusFit

    return FocusFit(
        bft_degC=-78.25, sigma_degC=0.2, s_um_per_degC=10.0, s_sigma_um_per_degC=0.3,
        s_measured=True, t_field_degC=np.array([-78.0, -78.5]), field_ids=np.array([0, 1]),
        n_frames=12, n_plateaux=3, sign_ambiguous=False, p_behind_mean=0.5,
        template_shift_degC=0.0,
    )  # fmt: skip


def test_deprecated_attribute_warns_and_returns_the_same_value():
    from plato_sim.truth.bestfocus import BestFocus

    objects = [BestFocus(-78.5, -70.0, 0.41), _camera_entry(), _focus_fit()]
    for obj in objects:
        with _deprecated():
            old = obj.t_bf_degC
        assert old == obj.bft_degC
        with pytest.raises(AttributeError):  # read-only
            obj.t_bf_degC = 0.0
    fit = _focus_fit()
    assert BFT_KEY in fit.to_dict() and OLD not in fit.to_dict()
    assert OLD not in _camera_entry().to_dict()


def test_t0_for_best_focus_accepts_the_old_keyword(monkeypatch):
    from plato_sim.optics.model import CameraModel
    from plato_sim.truth import bestfocus

    monkeypatch.setattr(bestfocus, "best_focus_shift_um", lambda optics, **kw: (-60.0, 0.4))
    _, new = bestfocus.t0_for_best_focus(CameraModel(), bft_degC=-79.0)
    with _deprecated():
        _, old = bestfocus.t0_for_best_focus(CameraModel(), t_bf_degC=-79.0)
    assert old == new and new.bft_degC == -79.0
    with pytest.raises(TypeError, match="bft_degC"):
        bestfocus.t0_for_best_focus(CameraModel())


# ------------------------------------------------------------------------------ helpers
def test_normalise_keys_keeps_order_and_answers_the_old_key():
    with _deprecated():
        d = normalise_keys({"seed": 1, OLD: -78.0, "n": 2}, "x.truth.json")
    assert list(d) == ["seed", BFT_KEY, "n"] and isinstance(d, LegacyNameDict)
    assert json.loads(json.dumps(d)) == {"seed": 1, BFT_KEY: -78.0, "n": 2}
    with _deprecated():
        assert d[OLD] == -78.0
    with _deprecated():
        assert d.get(OLD) == -78.0
    assert OLD not in d and d.get("other", 3) == 3
    with pytest.raises(KeyError):
        d["other"]
    with _deprecated():  # both names: the canonical entry wins
        assert normalise_keys({OLD: 1.0, BFT_KEY: 2.0}) == {BFT_KEY: 2.0}


def test_canonical_dtype_renames_without_moving_bytes():
    old = np.dtype([("a", "f8"), (OLD, "f8"), ("c", "i2")])
    new = canonical_dtype(old)
    assert new.names == ("a", BFT_KEY, "c") and new.itemsize == old.itemsize
    assert canonical_dtype(new) is None
    assert canonical_dtype(np.dtype([(OLD, "f8"), (BFT_KEY, "f8")])) is None


# ------------------------------------------------------------------------------ truth sidecar
def _old_sidecar(tmp_path, bft: float = -78.2):
    """A sidecar with the old key, of the current truth numerics (``truth_version``: one of
    other numerics is emulated again, tests/test_campaign_format.py)."""
    from plato_sim.truth.bestfocus import TRUTH_VERSION

    folder = tmp_path / "oldcam"
    folder.mkdir()
    tp = truth_path(folder)
    old = {"camera": "oldcam", OLD: bft, "n_dithers": 3, "truth_version": TRUTH_VERSION}
    tp.write_text(json.dumps(old, indent=1))
    return folder, tp


def test_old_truth_sidecar_is_read_with_a_warning(tmp_path):
    folder, tp = _old_sidecar(tmp_path)
    for where in (folder, tp, str(tp)):
        with _deprecated():
            truth = read_truth(where)
        assert truth[BFT_KEY] == -78.2 and OLD not in truth
        assert list(truth) == ["camera", BFT_KEY, "n_dithers", "truth_version"]
    with _deprecated():  # code still using the old key reads the same value
        assert truth[OLD] == -78.2
    # a cached campaign folder with an old sidecar is read back, not emulated again
    stamp = tp.stat().st_mtime_ns
    with _deprecated():
        cached = emulate_or_load(folder, camera_name="oldcam")
    assert cached[BFT_KEY] == -78.2 and tp.stat().st_mtime_ns == stamp


def test_new_truth_sidecar_carries_bft_degC_only(tmp_path):
    from plato_sim.psf.fast import FastEngine
    from plato_sim.scenes.ground_test import emulate_campaign

    truth = emulate_campaign(
        tmp_path / "c", camera_name="newcam", bft_degC=-80.5, n_fields=2, n_dithers=1,
        frames_per_dither=1, plateaux_degC=(-80.0,), window_px=32, seed=5, n_sub_truth=2,
        n_wavelengths=2, engine=FastEngine(fov_px=12),
    )  # fmt: skip
    text = truth_path(tmp_path / "c").read_text()
    assert f'"{BFT_KEY}"' in text and OLD not in text
    assert json.loads(text)[BFT_KEY] == pytest.approx(-80.5)
    assert truth[BFT_KEY] == pytest.approx(-80.5)
    with _deprecated():
        assert truth[OLD] == truth[BFT_KEY]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new sidecar reads without a warning
        assert read_truth(tmp_path / "c") == json.loads(text)


# ------------------------------------------------------------------------------ label tables
def _dataset(root, names_old: bool):
    dtype = sampling.label_dtype()
    if names_old:
        dtype = np.dtype([(OLD if n == BFT_KEY else n, dtype.fields[n][0]) for n in dtype.names])
    shards = []
    for k in range(2):
        lab = np.zeros(4, dtype)
        lab[OLD if names_old else BFT_KEY] = -80.0 + np.arange(4) + 10 * k
        lab["dz_from_best_um"] = np.arange(4)
        stamps = np.zeros((4, 8, 8), np.float32)
        write_shard(root / shard_name(k), stamps, lab, {"shard": k})
        shards.append({"file": shard_name(k), "n": 4})
    write_json_atomic(root / MANIFEST_NAME, {"status": "complete", "shards": shards})
    return np.concatenate([-80.0 + np.arange(4), -70.0 + np.arange(4)])


def test_old_label_table_is_read_with_a_warning(tmp_path):
    expected = _dataset(tmp_path, names_old=True)
    with _deprecated():
        _, lab, _ = read_shard(tmp_path / shard_name(1))
    assert BFT_KEY in lab.dtype.names and OLD not in lab.dtype.names
    np.testing.assert_array_equal(lab[BFT_KEY], expected[4:])
    ds = ShardedDataset(tmp_path)
    with _deprecated():
        col = ds.label_column(BFT_KEY)
    np.testing.assert_array_equal(col, expected)
    np.testing.assert_array_equal(ds.labels()[BFT_KEY], expected)
    _, row = ds[5]
    assert row[BFT_KEY] == expected[5] and OLD not in row
    with _deprecated():  # the old name asked for: the same column
        np.testing.assert_array_equal(ds.label_column(OLD), expected)
    ds.close()


def test_new_label_table_carries_bft_degC_only(tmp_path):
    assert BFT_KEY in sampling.label_dtype().names and OLD not in sampling.label_dtype().names
    expected = _dataset(tmp_path, names_old=False)
    with h5py.File(tmp_path / shard_name(0), "r") as f:
        assert BFT_KEY in f["labels"].dtype.names and OLD not in f["labels"].dtype.names
    import warnings

    ds = ShardedDataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ds.label_column(BFT_KEY), expected)
    ds.close()


def test_old_camera_pool_entry_and_config_are_read(tmp_path):
    entry = _camera_entry(-76.0)
    old = {(OLD if k == BFT_KEY else k): v for k, v in entry.to_dict().items()}
    with _deprecated():
        assert sampling.CameraEntry.from_dict(old) == entry
    assert sampling.CameraEntry.from_dict(entry.to_dict()) == entry

    cfg = sampling.load_config()
    assert cfg["cameras"][BFT_KEY] == [-84.0, -72.0] and OLD not in cfg["cameras"]
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"cameras": {OLD: [-80.0, -75.0]}}))
    with _deprecated():
        c = sampling.load_config(path)
    assert c["cameras"][BFT_KEY] == [-80.0, -75.0] and OLD not in c["cameras"]
    with _deprecated():
        c2 = sampling.load_config(overrides={"cameras": {OLD: [-80.0, -75.0]}})
    assert c2 == c
    # a manifest written by an earlier version holds the config under the old key
    stored = json.loads(sampling.config_json(cfg))
    stored["cameras"][OLD] = stored["cameras"].pop(BFT_KEY)
    with _deprecated():
        assert sampling.canonical_config(stored) == json.loads(sampling.config_json(cfg))


# ------------------------------------------------------------------------------ imagettes
def _field(truth: dict) -> ImagetteField:
    stars = np.zeros(1, STAR_DTYPE)
    stars["star_id"], stars["ccd"], stars["row0"], stars["col0"] = 1, 1, 100, 100
    stars["row"], stars["col"], stars["theta_deg"], stars["phi_deg"] = 105.0, 105.0, 5.0, 30.0
    stars["v_mag"], stars["teff_K"] = 10.0, 6000.0
    header = dict(trp1_degC=-75.0, exptime_s=21.0, cycle_s=25.0, gain_e_per_adu=25.0,
                  camera="cam", date_obs="2030-01-01T00:00:00")  # fmt: skip
    cube = np.full((1, 10, 10), 1000, np.uint16)
    return ImagetteField(cube, stars, header, truth)


def _imagette_truth(key: str) -> dict:
    return {
        key: -78.0, "delta_t_degC": -3.0, "dz_th_um": 10.0, "dz_bf_um": -40.0,
        "s_um_per_degC": 10.0, "t0_degC": -70.0, "camera_id": 1, "seed": 3,
        "star_truth": np.zeros(1, STAR_TRUTH_DTYPE),
    }  # fmt: skip


def test_imagette_truth_keeps_the_fits_keyword_and_reads_bft_degC(tmp_path):
    path = write_imagettes(tmp_path / "new.fits", _field(_imagette_truth(BFT_KEY)))
    back = read_imagettes(path)
    assert back.truth[BFT_KEY] == -78.0 and OLD not in back.truth
    with _deprecated():
        assert back.truth[OLD] == -78.0
    from astropy.io import fits

    with fits.open(path) as hdul:
        assert hdul["TRUTH"].header["T_BF"] == -78.0
    with _deprecated():  # a truth dict still built with the old key is written the same way
        old = write_imagettes(tmp_path / "old.fits", _field(_imagette_truth(OLD)))
    assert read_imagettes(old).truth[BFT_KEY] == -78.0


@pytest.mark.parametrize("names_old", [True, False])
def test_training_dataset_target_by_either_name(tmp_path, names_old):
    from plato_cnn.nn.data import ShardFocusDataset

    expected = _dataset(tmp_path, names_old=names_old)
    with _deprecated():  # the old target name asked for, on either table: the same column
        ds = ShardFocusDataset(tmp_path, target=OLD)
    np.testing.assert_array_equal(ds.delta_um, expected.astype(np.float32))
    ctx = _deprecated() if names_old else _no_warning()
    with ctx:  # the new name on an old table reads it (the table's name warns)
        ds = ShardFocusDataset(tmp_path, target=BFT_KEY)
    np.testing.assert_array_equal(ds.delta_um, expected.astype(np.float32))


@contextlib.contextmanager
def _no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
