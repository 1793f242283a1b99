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
