"""CampaignFrames.from_arrays: frames from plain arrays equal the frames the reader makes.

The reader builds its result through ``from_arrays`` too; here a test engineer's view: the
arrays of a small emulated campaign give back the same frames, the defaults (plateaux, field
ids, peaks, CCD positions) are what the reader would have found, both estimators run on
frames made from arrays, and bad arrays raise :class:`ParameterError` naming what is wrong.
"""

from pathlib import Path

import numpy as np
import pytest
from campaign_builder import make_campaign
from model_builder import save_tiny_model

from plato_cnn.classical import estimate_bft
from plato_cnn.predict import cnn_bft
from plato_cnn.reader import FLAG_UNSTABLE, CampaignFrames, read_campaign
from plato_sim.errors import ParameterError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, ccd_of_field


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return read_campaign(make_campaign(tmp_path_factory.mktemp("camp"), n_dithers=3))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def _plain(fr: CampaignFrames, **kw) -> CampaignFrames:
    """Frames from the four plain arrays (and ``kw``) of ``fr``."""
    return CampaignFrames.from_arrays(
        fr.stamps, fr.temperature_degC, fr.field_theta_deg, fr.field_phi_deg, **kw
    )


def _assert_same_frames(a: CampaignFrames, b: CampaignFrames) -> None:
    for name in CampaignFrames.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y), name
        else:
            assert x == y, name


def test_all_arrays_give_back_the_read_frames(frames):
    made = _plain(
        frames,
        timestamps=frames.time_s,
        obsids=frames.obsid,
        field_id=frames.field_id,
        ccd=frames.ccd,
        row=frames.row,
        col=frames.col,
        flags=frames.flags,
        peak_e=frames.peak_e,
        cube_index=frames.cube_index,
        frame_index=frames.frame_index,
        cube_paths=frames.cube_paths,
        camera=frames.camera,
        site=frames.site,
        observations=frames.observations,
        drops=frames.drops,
    )
    _assert_same_frames(made, frames)
    # copies: changing the frames does not change the caller's arrays
    made.stamps[0] += 1.0
    assert not np.array_equal(made.stamps[0], frames.stamps[0])


def test_defaults_are_what_the_reader_finds(frames):
    # the builder's CCD ids and windows do not follow its field positions: give them
    made = _plain(frames, ccd=frames.ccd, row=frames.row, col=frames.col, flags=frames.flags)
    # derived from the arrays alone, equal to what the reader computed
    assert np.array_equal(made.field_id, frames.field_id)
    assert np.array_equal(made.peak_e, frames.peak_e)
    # plateaux: one id per observation, numbered 1, 2, ... from the coldest
    n_obs = len(frames.observations)
    assert sorted(set(zip(frames.obsid.tolist(), made.obsid.tolist(), strict=True))) == [
        (o.obsid, k + 1) for k, o in enumerate(frames.observations)
    ]
    assert [o.obsid for o in made.observations] == list(range(1, n_obs + 1))
    for mine, read in zip(made.observations, frames.observations, strict=True):
        assert mine.n_frames == read.n_frames and not mine.unstable
        assert mine.temperature_mean_degC == pytest.approx(read.temperature_mean_degC, abs=1e-12)
        assert mine.temperature_range_degC == pytest.approx(read.temperature_range_degC)
    # bookkeeping defaults
    assert np.array_equal(made.time_s, np.arange(len(frames), dtype=float))
    assert np.all(made.cube_index == -1) and made.cube_paths == []
    assert np.array_equal(made.frame_index, np.arange(len(frames)))
    assert made.camera == "" and made.drops.n_frames == 0
    assert np.all(_plain(frames, ccd=frames.ccd).flags == 0)  # flags: all usable


def test_ccd_and_position_default_to_the_nominal_camera(frames):
    made = _plain(frames)
    ccd, row, col = ccd_of_field(PLATO_NORMAL_CAMERA, frames.field_theta_deg, frames.field_phi_deg)
    assert made.ccd.dtype == np.int8 and np.array_equal(made.ccd, ccd)
    assert np.allclose(made.row, row) and np.allclose(made.col, col)


def test_unstable_plateau_is_flagged_by_default():
    rng = np.random.default_rng(0)
    stamps = rng.normal(0, 1, (6, 16, 16))
    temps = np.array([-90.0, -89.7, -89.4, -80.0, -80.01, -80.02])  # first: range 0.6 degC
    made = CampaignFrames.from_arrays(stamps, temps, np.full(6, 5.0), np.full(6, 40.0))
    assert made.obsid.tolist() == [1, 1, 1, 2, 2, 2]
    assert [o.unstable for o in made.observations] == [True, False]
    assert made.flags.tolist() == [FLAG_UNSTABLE] * 3 + [0] * 3


def test_estimators_run_on_frames_from_arrays(frames, model_dir):
    made = _plain(frames, ccd=frames.ccd, flags=frames.flags)
    mine, read = estimate_bft(made, n_boot=20), estimate_bft(frames, n_boot=20)
    assert np.isfinite(mine.bft_degC)
    assert mine.bft_degC == pytest.approx(read.bft_degC, abs=1e-9)
    fit, _ = cnn_bft(made, model_dir, n_boot=20)
    ref, _ = cnn_bft(frames, model_dir, n_boot=20)
    assert np.isfinite(fit.bft_degC) and np.isfinite(fit.sigma_degC)
    assert fit.bft_degC == pytest.approx(ref.bft_degC, abs=1e-9)


N = 4
GOOD = {
    "stamps": np.ones((N, 16, 16)),
    "temperatures_degC": np.full(N, -80.0),
    "theta_deg": np.full(N, 5.0),
    "phi_deg": np.full(N, 40.0),
}


@pytest.mark.parametrize(
    "change, says",
    [
        ({"stamps": np.ones((N, 16))}, r"stamps has shape \(4, 16\)"),
        ({"stamps": np.ones((N, 16, 12))}, r"expected \(N, S, S\)"),
        ({"stamps": np.ones((0, 16, 16))}, "N >= 1"),
        ({"stamps": np.where(np.arange(16) == 3, np.nan, np.ones((N, 16, 16)))}, "NaN"),
        ({"temperatures_degC": np.full(N + 1, -80.0)}, r"shape \(5,\); expected \(4,\)"),
        ({"temperatures_degC": [-80.0, np.inf, -80.0, -80.0]}, r"temperatures_degC\[1\] = inf"),
        ({"theta_deg": [5.0, -1.0, 5.0, 5.0]}, r"theta_deg\[1\] = -1 .*\[0.0, inf\]"),
        ({"phi_deg": ["a", "b", "c", "d"]}, "phi_deg must hold numbers"),
        ({"theta_deg": np.full(N, 40.0)}, "off the four CCDs"),
        ({"ccd": [1, 2, 5, 1]}, r"ccd\[2\] = 5 is outside the allowed range \[1, 4\]"),
        ({"flags": [0, -1, 0, 0]}, r"flags\[1\] = -1 .*\[0, 65535\]"),
        ({"obsids": [1.0, 1.5, 2.0, 2.0]}, r"obsids\[1\] = 1.5 is not an integer"),
        ({"cube_index": [0, 0, 0, 0]}, r"cube_index\[0\] = 0 .*\[-1, -1\]"),
        ({"timestamps": [0.0, np.nan, 1.0, 2.0]}, r"timestamps\[1\] = nan"),
        (
            {"obsids": [7, 7, 8, 8], "observations": []},
            r"obsids \[7, 8\] have no entry in observations",
        ),
    ],
)
def test_bad_arrays_raise_parameter_error(change, says):
    kw = {**GOOD, **change}
    args = [kw.pop(k) for k in ("stamps", "temperatures_degC", "theta_deg", "phi_deg")]
    with pytest.raises(ParameterError, match=says):
        CampaignFrames.from_arrays(*args, **kw)


def test_good_plain_arrays_make_usable_frames():
    made = CampaignFrames.from_arrays(**GOOD)
    assert len(made) == N and np.all(made.usable) and made.stamps.dtype == np.float32
    assert made.observations[0].path == Path()
    phi = CampaignFrames.from_arrays(
        **{**GOOD, "phi_deg": [-20.0, 380.0, 360.0, 0.0], "ccd": [1] * N}
    )
    assert phi.field_phi_deg.tolist() == [340.0, 20.0, 360.0, 0.0]
