"""The model card's two digests: its identity (every entry) and its behaviour (every entry
that an estimate reads)."""

from __future__ import annotations

import copy

from plato_cnn.nn.card import DOCUMENTARY_KEYS, ModelCard, default_model_dir, read_model_json


def test_prose_changes_identity_not_behaviour_and_a_calibration_changes_both():
    raw = read_model_json(default_model_dir())
    base = ModelCard.from_dict(copy.deepcopy(raw))
    assert "reproduce" in DOCUMENTARY_KEYS and "reproduce" in raw

    prose = copy.deepcopy(raw)
    prose["reproduce"]["machine"] = "another machine"
    reworded = ModelCard.from_dict(prose)
    assert reworded.sha256() != base.sha256()
    assert reworded.behaviour_sha256() == base.behaviour_sha256()

    calib = copy.deepcopy(raw)
    key = next(iter(calib["systematic_sigma_degC"]))
    calib["systematic_sigma_degC"][key] += 0.01
    recalibrated = ModelCard.from_dict(calib)
    assert recalibrated.sha256() != base.sha256()
    assert recalibrated.behaviour_sha256() != base.behaviour_sha256()
