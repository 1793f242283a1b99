"""A camera's later campaign (plato_sim.scenes.family_campaigns.recheck_job): the same camera
and test design, a moved best focus, new seeds; deterministic; bad requests refused."""

import pytest

from plato_sim.errors import ParameterError
from plato_sim.scenes.family_campaigns import recheck_job
from plato_sim.scenes.out_of_family import NODAL_SEED_TAG, nodal_camera_job

# Their later campaigns calibrate the re-check's sigma: the jobs must be the first campaigns'
# cameras and designs, from each family's own random stream.


def _job(i: int = 3) -> dict:
    job = nodal_camera_job(1, i, (-92.0, -68.0))
    job.update(dir=f"/cache/nodal_s1_c{i:03d}_n24", name=f"nodal{i:03d}")
    return job


def test_later_campaign_same_camera_and_design_moved_focus():
    job = _job()
    later = recheck_job(job, NODAL_SEED_TAG, 1, 1, 1.0)
    assert later["camera"] is job["camera"] and later["design"] == job["design"]
    assert later["i"] == job["i"]
    shift = later["bft_degC"] - job["bft_degC"]
    assert shift == pytest.approx(later["bft_shift_degC"])
    assert 0.0 < abs(shift) <= 1.0
    assert later["emulator_seed"] != job["emulator_seed"]
    assert later["dir"].startswith(job["dir"] + "_recheck1_") and later["name"] == "nodal003"
    assert job["dir"] == "/cache/nodal_s1_c003_n24"  # the first campaign's job is untouched


def test_later_campaigns_are_deterministic_and_distinct():
    a = recheck_job(_job(), NODAL_SEED_TAG, 1, 1, 1.0)
    b = recheck_job(_job(), NODAL_SEED_TAG, 1, 1, 1.0)
    assert {k: a[k] for k in ("bft_degC", "emulator_seed", "dir")} == {
        k: b[k] for k in ("bft_degC", "emulator_seed", "dir")
    }
    c = recheck_job(_job(), NODAL_SEED_TAG, 1, 2, 1.0)  # the camera's third campaign
    d = recheck_job(_job(4), NODAL_SEED_TAG, 1, 1, 1.0)  # another camera
    assert len({a["emulator_seed"], c["emulator_seed"], d["emulator_seed"]}) == 3
    assert a["dir"] != c["dir"]
    # another largest shift never shares a folder
    assert recheck_job(_job(), NODAL_SEED_TAG, 1, 1, 0.5)["dir"] != a["dir"]
    # no shift: the same best focus
    assert recheck_job(_job(), NODAL_SEED_TAG, 1, 1, 0.0)["bft_degC"] == _job()["bft_degC"]


@pytest.mark.parametrize("k, shift", [(0, 1.0), (-1, 1.0), (1, -0.1), (1, 11.0)])
def test_bad_request_refused(k, shift):
    with pytest.raises(ParameterError):
        recheck_job(_job(), NODAL_SEED_TAG, 1, k, shift)


@pytest.mark.parametrize("family", ["design", "highorder-mild", "highorder"])
def test_calibration_family_later_campaigns(tmp_path, family):
    from plato_sim.scenes.calibration_family import _calibration_jobs, _recheck_jobs

    first = _calibration_jobs(tmp_path, 3, 0, (-92.0, -68.0), 24, family, {})
    later = _recheck_jobs(tmp_path, 3, 0, 1, 1.0, (-92.0, -68.0), 24, family, {})
    for a, b in zip(first, later, strict=True):
        assert b["camera"] == a["camera"] and b["design"] == a["design"]
        assert b["name"] == a["name"] and b["dir"].startswith(a["dir"] + "_recheck1_")
        assert 0.0 < abs(b["bft_degC"] - a["bft_degC"]) <= 1.0
    # the family's own stream: not the nodal one for the same seed and camera
    nodal = recheck_job(_job(0), NODAL_SEED_TAG, 0, 1, 1.0)
    assert later[0]["bft_shift_degC"] != nodal["bft_shift_degC"]
    with pytest.raises(ParameterError, match="family"):
        _recheck_jobs(tmp_path, 1, 0, 1, 1.0, (-92.0, -68.0), 24, "nodal", {})


def test_response_of_a_network_that_shows_part_of_the_focus_change():
    """The re-check bench's response diagnostic: a network whose offsets move by 0.9 of the
    true focus change between two campaigns has slope 0.9 (standard error 0 when exact); cells
    are (field, plateau) means, and only the cells both campaigns hold count."""
    import numpy as np

    from benchmarks.recheck import cell_means, focus_change_pair, response_slope
    from plato_sim.optics.thermal import ThermalModel

    rng = np.random.default_rng(3)
    field = np.repeat(np.arange(4), 6)
    obsid = np.tile(np.repeat([1024, 1035], 3), 4)
    t = np.where(obsid == 1024, -85.0, -80.0) + rng.normal(0.0, 0.01, field.size)
    first_th = ThermalModel(s_um_per_degC=10.0, t0_degC=-80.0, q_um_per_degC2=0.02)
    pairs = []
    for shift_degC in (-1.0, -0.4, 0.3, 0.8):
        later_th = ThermalModel(s_um_per_degC=10.0, t0_degC=-80.0 + shift_degC,
                                q_um_per_degC2=0.02)  # fmt: skip
        bias = 0.3 * field  # a per-field bias the difference removes
        mu_a = first_th.focal_shift_um(t) + bias
        mu_b = first_th.focal_shift_um(t) + 0.9 * (
            later_th.focal_shift_um(t) - first_th.focal_shift_um(t)) + bias  # fmt: skip
        a = cell_means(field, obsid, mu_a, t)
        b = cell_means(field[:18], obsid[:18], mu_b[:18], t[:18])  # the later lacks field 3
        assert len(a) == 8 and len(b) == 6
        d_mu, d_true = focus_change_pair(a, b, first_th, later_th)
        assert d_true == pytest.approx(-10.0 * shift_degC, rel=0.05)
        pairs.append((d_mu, d_true))
    r = response_slope(pairs)
    assert r["slope"] == pytest.approx(0.9, abs=1e-9) and r["se"] < 1e-9 and r["n"] == 4
    with pytest.raises(ValueError, match="no \\(field, plateau\\) cell"):
        focus_change_pair(a, {}, first_th, later_th)
