"""Dataset sampling: config, camera pool, shard samples and labels, HDF5 store."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest

from plato_sim.detector import DetectorModel
from plato_sim.io.store import (
    ShardedDataset,
    export_fits,
    read_shard,
    shard_is_valid,
    shard_name,
    write_json_atomic,
    write_shard,
)
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes import dataset as dsm
from plato_sim.scenes import sampling
from plato_sim.truth.bestfocus import field_best_focus_um

TINY = {
    "shards": {"samples_per_shard": 24, "samples_per_optical_state": 8},
    "spectrum": {"n_wavelengths": 3},
    "cameras": {"n_pool": 1},
    "best_focus": {"rings_h": [0.5, 0.8, 1.0], "azimuths": 5, "n_wavelengths": 3},
}


@pytest.fixture(scope="module")
def cfg():
    return sampling.load_config(overrides=TINY)


@pytest.fixture(scope="module")
def camera(cfg):
    return sampling.build_camera(cfg, seed=11, index=0)


@pytest.fixture(scope="module")
def shard(cfg, camera):
    return dsm.make_shard(cfg, 11, 0, 20, [camera])


def test_default_config_loads_and_errors_name_the_key(tmp_path):
    c = sampling.load_config()
    assert c["stamp"]["size_px"] == 32
    assert c["focus"]["dz_um"] == [-200.0, 200.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("exposure:\n  flux: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*exposure.flux"):
        sampling.load_config(bad)
    with pytest.raises(ValueError, match="exposure.flux_e"):
        sampling.load_config(overrides={"exposure": {"flux_e": {"loguniform": [0, 1]}}})
    with pytest.raises(ValueError, match="unknown parameter"):
        sampling.load_config(overrides={"detector": {"gain": [1, 2]}})


def test_camera_pool_entry_is_deterministic_and_consistent(cfg, camera):
    again = sampling.build_camera(cfg, seed=11, index=0)
    assert again == camera
    assert sampling.CameraEntry.from_dict(camera.to_dict()) == camera
    model = camera.model()
    # T0 puts the camera's best focus at its drawn T_BF
    assert model.thermal.temperature_degC(camera.dz_bf_um) == pytest.approx(camera.bft_degC)
    assert -84 <= camera.bft_degC <= -72
    # the fitted map reproduces the grid it was fitted to
    fit = camera.field_best_focus_um(np.array(camera.grid_theta_deg), np.array(camera.grid_phi_deg))
    assert np.max(np.abs(fit - np.array(camera.grid_dz_opt_um))) < 1.0


def test_field_best_focus_map_matches_direct_search(cfg, camera):
    optics = camera.model().optics
    th, ph = np.array([3.0, 9.7, 16.2]), np.array([20.0, 200.0, 123.0])
    sp = ogse_spectrum(optics.camera, 3)
    direct, _ = field_best_focus_um(optics, th, ph, sp, sampling.make_engine(cfg))
    assert np.max(np.abs(camera.field_best_focus_um(th, ph) - direct)) < 2.0


def test_shard_labels_are_consistent(shard, camera):
    stamps, lab = shard
    assert stamps.shape == (20, 32, 32) and stamps.dtype == np.float32
    assert lab.dtype == sampling.label_dtype()
    np.testing.assert_allclose(lab["dz_from_best_um"], lab["dz_th_um"] - lab["dz_field_best_um"])
    assert np.all(np.abs(lab["dz_from_best_um"]) <= 200.0)
    model = camera.model()
    np.testing.assert_allclose(
        lab["temperature_degC"], model.thermal.temperature_degC(lab["dz_th_um"])
    )
    assert np.all(lab["camera_id"] == camera.camera_id)
    # 8 samples per optical state share the optics, not the offsets or fluxes
    assert np.unique(lab["optical_state"]).tolist() == [0, 1, 2]
    first = lab[lab["optical_state"] == 0]
    assert np.unique(first["dz_th_um"]).size == 1 and np.unique(first["theta_deg"]).size == 1
    assert np.unique(first["flux_e"]).size == 8
    assert np.all(np.isin(lab["ccd"], [1, 2, 3, 4]))
    assert np.all((lab["eef_true"] > 0.05) & (lab["eef_true"] < 1.0))
    # true position relative to the stamp centre: within half a pixel for bright stars
    bright = lab["flux_e"] > 1e5
    assert np.all(np.abs(lab["offset_x_px"][bright]) <= 0.75)
    assert np.all(np.abs(lab["offset_y_px"][bright]) <= 0.75)


def test_shard_is_deterministic(cfg, camera, shard):
    again = dsm.make_shard(cfg, 11, 0, 20, [camera])
    assert np.array_equal(again[0], shard[0])
    assert again[1].tobytes() == shard[1].tobytes()
    other = dsm.make_shard(cfg, 11, 1, 20, [camera])
    assert not np.array_equal(other[0], shard[0])


def test_stamp_units_are_electrons_above_the_closed_shutter_level(camera):
    """A bright star without background: stamp sum x gain = flux (the PSF within 32 px)."""
    c = sampling.load_config(
        overrides=TINY
        | {
            "exposure": {"flux_e": 1.0e6, "background_e_per_px": 0.0},
            "detector": {"prnu_sigma": 0.0, "cosmic_rate_per_cm2_s": 0.0},
            "focus": {"dz_um": [-30.0, 30.0]},
        }
    )
    stamps, lab = dsm.make_shard(c, 5, 0, 16, [camera])
    got = stamps.reshape(16, -1).sum(axis=1)
    # read noise of 1024 pixels + the averaged closed frames: ~2000 e- of 1e6
    np.testing.assert_allclose(got, 1.0e6, rtol=0.01)
    # pixels far from the star: zero-mean read noise of one frame and of the closed-frame mean
    far = stamps[:, :4, :].ravel()
    assert abs(far.mean()) < 5.0  # e-; standard error ~1.3 e- over 2048 pixels
    sigma = DetectorModel().read_noise_e * np.sqrt(1 + 1 / 2)
    assert far.std() == pytest.approx(sigma, rel=0.15)


def _child_read(ds, i, q):
    q.put(float(ds[i][0].sum()))


def test_store_roundtrip_lazy_reader_and_fits(tmp_path, shard):
    stamps, lab = shard
    sha0 = write_shard(tmp_path / shard_name(0), stamps[:12], lab[:12], {"k": 0})
    write_shard(tmp_path / shard_name(1), stamps[12:], lab[12:], {"k": 1})
    assert shard_is_valid(tmp_path / shard_name(0), sha0)
    s, lb, meta = read_shard(tmp_path / shard_name(1))
    assert np.array_equal(s, stamps[12:]) and meta == {"k": 1}
    assert lb.tobytes() == lab[12:].tobytes()
    write_json_atomic(
        tmp_path / "manifest.json",
        {
            "status": "complete",
            "shards": [{"file": shard_name(0), "n": 12}, {"file": shard_name(1), "n": 8}],
        },
    )
    ds = ShardedDataset(tmp_path)
    assert len(ds) == 20
    st, d = ds[13]
    assert np.array_equal(st, stamps[13]) and d["index"] == lab["index"][13]
    assert np.array_equal(ds[-1][0], stamps[19])
    with pytest.raises(IndexError):
        ds[20]
    np.testing.assert_array_equal(ds.label_column("flux_e"), lab["flux_e"])
    # an opened instance survives pickling and forking: each process opens its own handle
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[3][0].sum() == pytest.approx(stamps[3].sum())
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_child_read, args=(ds, 15, q))
    p.start()
    p.join(30)
    assert q.get(timeout=5) == pytest.approx(float(stamps[15].sum()))
    # torch DataLoader worker processes, each reading through its own handles
    import torch

    class TorchView(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            stamp, labels = ds[i]
            return torch.from_numpy(stamp), float(labels["dz_from_best_um"])

    loader = torch.utils.data.DataLoader(TorchView(), batch_size=5, num_workers=2)
    got = torch.cat([x for x, _ in loader]).numpy()
    assert np.array_equal(got, stamps)
    out = export_fits(ds, [0, 13], tmp_path / "pick.fits")
    from astropy.io import fits

    with fits.open(out) as hd:
        assert hd["SAMPLE13"].data.shape == (32, 32)
        assert hd["SAMPLE13"].header["dz_th_um"] == pytest.approx(lab["dz_th_um"][13])
    # a truncated shard fails its checksum
    path = tmp_path / shard_name(1)
    path.write_bytes(path.read_bytes()[:-100])
    assert not shard_is_valid(path)


def _with_families(fraction: float) -> dict:
    fam = {"families": {"highorder_fraction": fraction, "highorder_strength": 1.0}}
    return sampling.load_config(overrides={**TINY, **fam})


def test_families_section_draws_high_order_cameras_beside_the_design(cfg, camera):
    # fraction 0: the design camera of the same seed and index, bit for bit
    assert sampling.build_camera(_with_families(0.0), seed=11, index=0) == camera
    cfg_ho = _with_families(1.0)
    ho = sampling.build_camera(cfg_ho, seed=11, index=1)
    assert ho.family == "highorder" and ho.camera_id == 2 and ho.perturbation == {}
    assert sampling.CameraEntry.from_dict(ho.to_dict()) == ho
    assert "family" not in camera.to_dict()  # pools of design cameras are written as before
    model = ho.model()
    assert type(model).__name__ == "HighOrderCamera" and model.thermal.q_um_per_degC2 != 0.0
    # T0 puts this camera's best focus (quadratic thermal model) at its drawn T_BF
    assert model.thermal.temperature_degC(ho.dz_bf_um) == pytest.approx(ho.bft_degC)
    # a shard mixing both families: every state rendered, labels from each camera's model
    stamps, lab = dsm.make_shard(cfg_ho, 11, 0, 64, [camera, ho])
    assert set(np.unique(lab["camera_id"])) == {1, 2}
    for cam in (camera, ho):
        sel = lab["camera_id"] == cam.camera_id
        np.testing.assert_allclose(
            lab["temperature_degC"][sel], cam.model().thermal.temperature_degC(lab["dz_th_um"][sel])
        )
    assert np.all(np.isfinite(stamps)) and np.all((lab["eef_true"] > 0.05) & (lab["eef_true"] < 1))


def test_quadratic_thermal_spec_adds_q_and_changes_nothing_else(cfg, camera):
    cq = sampling.load_config(overrides={**TINY, "cameras": {"q_um_per_degC2": [0.5, 0.6]}})
    cam = sampling.build_camera(cq, seed=11, index=0)
    # the draw is clipped so that every focus of the dataset stays reachable
    q_max = camera.s_um_per_degC**2 / (4 * (200.0 + 100.0))
    assert cam.q_um_per_degC2 == pytest.approx(q_max)
    assert (cam.s_um_per_degC, cam.bft_degC, cam.perturbation) == (
        camera.s_um_per_degC, camera.bft_degC, camera.perturbation
    )  # fmt: skip
    assert sampling.CameraEntry.from_dict(cam.to_dict()) == cam
    assert "q_um_per_degC2" not in camera.to_dict()  # pools without the key written as before
    thermal = cam.model().thermal
    assert thermal.q_um_per_degC2 == cam.q_um_per_degC2
    assert thermal.temperature_degC(cam.dz_bf_um) == pytest.approx(cam.bft_degC)
    _, lab = dsm.make_shard(cq, 11, 0, 16, [cam])
    np.testing.assert_allclose(lab["temperature_degC"], thermal.temperature_degC(lab["dz_th_um"]))
    with pytest.raises(ValueError, match="cameras.q_um_per_degC2"):
        sampling.load_config(overrides={"cameras": {"q_um_per_degC2": {"uniform": [1, 0]}}})
    with pytest.raises(ValueError, match="cameras.r_um"):
        sampling.load_config(overrides={"cameras": {"r_um": 1.0}})


def test_bad_families_section_is_refused():
    with pytest.raises(ValueError, match="families.highorder_fraction"):
        _with_families(1.5)
    with pytest.raises(ValueError, match="families"):
        sampling.load_config(overrides={"families": {"nodal_fraction": 0.5}})


def _with_series(k) -> dict:
    return sampling.load_config(overrides={**TINY, "field_series": {"states_per_field": k}})


def test_field_series_section_groups_states_by_field_and_leaves_the_default_as_it_was(
    cfg, camera, shard
):
    # one state per field is the draw of a config without the section, bit for bit
    one = dsm.make_shard(_with_series(1), 11, 0, 20, [camera])
    for a, b in zip(one, shard, strict=True):
        assert a.tobytes() == b.tobytes()
    stamps, lab = dsm.make_shard(_with_series(3), 11, 0, 64, [camera])  # 8 states
    state = lab["optical_state"]
    field = state // 3
    for f in np.unique(field):
        sel = field == f
        assert len(np.unique(lab["theta_deg"][sel])) == 1
        assert len(np.unique(lab["dz_field_best_um"][sel])) == 1
        if len(np.unique(state[sel])) > 1:  # each focus drawn on its own
            assert len(np.unique(lab["dz_th_um"][sel])) == len(np.unique(state[sel]))
    assert len(np.unique(lab["theta_deg"])) == 3  # states 0-2, 3-5, 6-7
    again = dsm.make_shard(_with_series(3), 11, 0, 64, [camera])
    assert again[0].tobytes() == stamps.tobytes()


def test_bad_field_series_section_is_refused():
    with pytest.raises(ValueError, match="field_series.states_per_field"):
        _with_series(0)
    with pytest.raises(ValueError, match="field_series.states_per_field"):
        _with_series(2.5)
    with pytest.raises(ValueError, match="field_series"):
        sampling.load_config(overrides={"field_series": {"per_field": 4}})


def _with_diffusion(spec):
    return sampling.load_config(overrides={**TINY, "engine": {"diffusion_sigma_px": spec}})


def test_diffusion_spec_draws_one_blur_per_optical_state(cfg, camera, shard):
    """A degenerate spec gives the fixed diffusion's shard bit for bit (its draws have a stream
    of their own); a range gives a deterministic shard of other stamps, same labels' focus."""
    same = dsm.make_shard(_with_diffusion([0.2, 0.2]), 11, 0, 20, [camera])
    assert np.array_equal(same[0], shard[0]) and same[1].tobytes() == shard[1].tobytes()
    wide = _with_diffusion({"uniform": [0.1, 0.5]})
    seen = []
    real = FastEngine.extra_blur

    def spy(self, spectrum, sigma_px):
        seen.extend(np.asarray(sigma_px).tolist())
        return real(self, spectrum, sigma_px)

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(FastEngine, "extra_blur", spy)
        a = dsm.make_shard(wide, 11, 0, 20, [camera])
    assert len(seen) == 3 and len(set(seen)) == 3  # 20 samples / 8 per state: 3 states
    assert all(0.1 <= v <= 0.5 for v in seen)
    b = dsm.make_shard(wide, 11, 0, 20, [camera])
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0], shard[0])
    assert np.array_equal(a[1]["dz_from_best_um"], shard[1]["dz_from_best_um"])


def test_extra_blur_equals_an_engine_with_that_diffusion():
    """OTF x extra_blur(sigma) on a 0.1-px engine = the stamps of a sigma-px engine (the wider
    frequency grid only adds terms below the engines' transfer tolerance)."""
    import torch

    from plato_sim.optics.model import OpticalModel

    om = OpticalModel()
    sp = ogse_spectrum(om.camera, 3)
    z = om.zernikes_nm(np.array([5.0, 12.0]), np.array([30.0, 200.0]), np.array([-40.0, 60.0]),
                       sp.wavelengths_array_nm)  # fmt: skip
    off = np.array([[[0.1, -0.2]], [[-0.3, 0.4]]])
    base, wide = FastEngine(diffusion_sigma_px=0.1), FastEngine(diffusion_sigma_px=0.35)
    with torch.no_grad():
        o = base.otf(z, sp) * base.extra_blur(sp, np.array([0.35, 0.35]))
        got = base.stamps_from_otf(o, sp, off, 16).numpy()
        ref = wide.stamps_from_otf(wide.otf(z, sp), sp, off, 16).numpy()
    assert np.abs(got - ref).max() < 1e-4 * ref.max()
    with pytest.raises(ValueError, match="below the engine"):
        base.extra_blur(sp, np.array([0.05]))


def test_bad_diffusion_spec_is_refused():
    with pytest.raises(ValueError, match="engine.diffusion_sigma_px"):
        _with_diffusion({"normal": [0.2, 0.05]})
    with pytest.raises(ValueError, match="engine.diffusion_sigma_px"):
        _with_diffusion([-0.1, 0.2])
    with pytest.raises(ValueError, match="engine.diffusion_sigma_px"):
        _with_diffusion({"choice": [0.1, "a"]})
    assert sampling.diffusion_floor_px(np.float32(0.25)) == pytest.approx(0.25)


def _with_detected(**keys) -> dict:
    return sampling.load_config(overrides={**TINY, "cameras": {"n_pool": 1, **keys}})


def test_per_camera_diffusion_and_spectrum_are_drawn_once_and_change_nothing_else(cfg, camera):
    """A degenerate per-camera diffusion gives the shard of an engine at that diffusion bit for
    bit (labels: that camera's best focus, searched at its own diffusion); drawn keys live
    on a stream of their own and round-trip through the pool file."""
    fixed = sampling.load_config(overrides={**TINY, "engine": {"diffusion_sigma_px": 0.3}})
    per_cam = _with_detected(diffusion_sigma_px=[0.3, 0.3])
    ref_cam = sampling.build_camera(fixed, seed=11, index=0)
    cam = sampling.build_camera(per_cam, seed=11, index=0)
    assert cam.diffusion_sigma_px == 0.3 and cam.dz_bf_um == ref_cam.dz_bf_um
    assert cam.dz_bf_um != camera.dz_bf_um  # 0.3 px moves the best focus of this camera
    a = dsm.make_shard(per_cam, 11, 0, 20, [cam])
    b = dsm.make_shard(fixed, 11, 0, 20, [ref_cam])
    assert np.array_equal(a[0], b[0]) and a[1].tobytes() == b[1].tobytes()
    assert "diffusion_sigma_px" not in camera.to_dict()  # pools without the keys as before
    # a drawn colour: the best-focus map uses the camera's detected spectrum, as its stamps do
    col = _with_detected(diffusion_sigma_px=[0.15, 0.35], spectrum_tilt=[-0.6, 0.6],
                         spectrum_curvature=[-0.5, 0.2])  # fmt: skip
    c = sampling.build_camera(col, seed=11, index=0)
    assert sampling.CameraEntry.from_dict(c.to_dict()) == c
    assert 0.15 <= c.diffusion_sigma_px <= 0.35 and -0.6 <= c.spectrum_tilt <= 0.6
    assert (c.s_um_per_degC, c.bft_degC, c.perturbation) == (
        camera.s_um_per_degC, camera.bft_degC, camera.perturbation
    )  # fmt: skip
    sp = c.detected_spectrum(ogse_spectrum(c.model().optics.camera, 3))
    eng = FastEngine(diffusion_sigma_px=c.diffusion_sigma_px)
    gth, gph = sampling.best_focus_grid(col)
    direct, _ = field_best_focus_um(c.model().optics, gth[:3], gph[:3], sp, eng, 4, 100.0,
                                    search="fast")  # fmt: skip
    np.testing.assert_allclose(c.grid_dz_opt_um[:3], direct, atol=1e-3)  # float32, batch of 3
    seen = []
    real = FastEngine.otf

    def spy(self, z, spectrum, weights=None):
        seen.append(weights)
        return real(self, z, spectrum, weights)

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(FastEngine, "otf", spy)
        s1 = dsm.make_shard(col, 11, 0, 20, [c])
    assert all(w is not None for w in seen)
    np.testing.assert_allclose(seen[0][0], sp.weights_array)
    assert np.array_equal(s1[0], dsm.make_shard(col, 11, 0, 20, [c])[0])


def test_bad_per_camera_detector_keys_are_refused():
    with pytest.raises(ValueError, match="cameras.diffusion_sigma_px"):
        _with_detected(diffusion_sigma_px={"normal": [0.2, 0.05]})
    with pytest.raises(ValueError, match="cameras.diffusion_sigma_px"):
        sampling.load_config(overrides={**TINY, "cameras": {"diffusion_sigma_px": [0.1, 0.4]},
                                        "engine": {"diffusion_sigma_px": [0.1, 0.2]}})  # fmt: skip
    with pytest.raises(ValueError, match="cameras.spectrum_tilt"):
        _with_detected(spectrum_tilt={"uniform": [1, 0]})


def test_every_shipped_dataset_config_loads():
    """The recipes under plato_cnn/data and plato_sim/data (their documented commands) are
    valid configs; the field-head recipes hold through-focus series."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = sorted((root / "plato_cnn" / "data").glob("*dataset*.yaml"))
    found += sorted((root / "plato_sim" / "data").glob("*dataset*.yaml"))
    assert len(found) >= 5
    for path in found:
        cfg = sampling.load_config(path)
        if path.name.startswith("field_head"):
            assert cfg["field_series"]["states_per_field"] >= 2, path.name
