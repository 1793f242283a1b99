"""The field-head ceiling bench's fine-tuning cameras: imaged through focus around their own
best focus, drawn the same from the same seed, never the scored set (its numbers are measured
by ``python -m benchmarks.field_head_ceiling``, docs/cnn.md section 7)."""

import numpy as np
import pytest

from benchmarks.field_head_ceiling import _jobs, _parse
from plato_cnn.pipelines.field_head_finetune import FieldHeadFinetuneConfig


@pytest.mark.parametrize("span", [None, 20.0])
def test_through_focus_campaigns_bracket_each_cameras_focus(tmp_path, span):
    cfg = FieldHeadFinetuneConfig()
    jobs = _jobs(3, 5, tmp_path, cfg, span)
    for job in jobs:
        t = np.asarray(job["design"].plateaux_degC)
        s = job["camera"].thermal.s_um_per_degC
        half = span if span is not None else cfg.focus_half_range_um / s
        assert len(t) == cfg.plateaux and np.all(np.diff(t) > 0.5)
        assert np.all(np.abs(t - job["bft_degC"]) <= half + 0.05)
        assert t[0] < job["bft_degC"] < t[-1]
        assert job["design"].n_dithers == cfg.dithers and job["design"].frames_per_dither == 1
    again = _jobs(3, 5, tmp_path, cfg, span)
    assert [j["design"].plateaux_degC for j in again] == [j["design"].plateaux_degC for j in jobs]
    assert len({j["dir"] for j in jobs}) == 3


def test_the_scored_and_transfer_sets_are_refused_as_fine_tuning_cameras():
    for seed in ("1", "2"):
        with pytest.raises(SystemExit):
            _parse(["--ceiling-seed", seed])
    assert _parse([]).ceiling_seed == 5
