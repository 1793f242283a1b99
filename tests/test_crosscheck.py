"""The cross-check: a model-based estimate far from the improved classical one is flagged
and its sigma widened; one that agrees is left as it is; too few plateaux: not run."""

from __future__ import annotations

import math

import pytest
from campaign_builder import make_campaign

from plato_cnn.classical import improved_bft
from plato_cnn.crosscheck import DISAGREE_SIGMAS, MIN_PLATEAUX, cross_check
from plato_cnn.reader import read_campaign
from plato_sim.errors import PlatoFocusWarning


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return read_campaign(make_campaign(tmp_path_factory.mktemp("xc")))


def test_agreeing_estimate_is_left_alone(frames):
    cl = improved_bft(frames, "gauss", n_boot=100, seed=0)
    r = cross_check(frames, {"bft_degC": cl.bft_degC + 0.01, "sigma_degC": 0.2, "warnings": []})
    assert r["sigma_degC"] == 0.2 and r["outside_model"] is False and not r["warnings"]
    assert r["cross_check"]["ran"] and r["cross_check"]["disagreement_sigmas"] < DISAGREE_SIGMAS


def test_disagreeing_estimate_is_flagged_and_widened(frames):
    cl = improved_bft(frames, "gauss", n_boot=100, seed=0)
    far = cl.bft_degC + 3.0
    with pytest.warns(PlatoFocusWarning, match="outside what the model knows"):
        r = cross_check(frames, {"bft_degC": far, "sigma_degC": 0.05, "warnings": ["w"]})
    assert r["outside_model"] is True and r["warnings"][0] == "w" and len(r["warnings"]) == 2
    assert r["sigma_degC"] == pytest.approx(math.hypot(0.05, far - cl.bft_degC))
    assert abs(far - cl.bft_degC) <= r["sigma_degC"]  # the widened sigma covers the gap
    assert r["cross_check"]["sigma_before_degC"] == 0.05


def test_too_few_plateaux_is_reported_not_run(frames):
    """Below MIN_PLATEAUX (3 plateaux included: the classical fit runs but is biased) the
    check is reported as not run and the result left alone."""
    for temps in ([-90.0, -80.0], [-90.0, -80.0, -70.0]):
        few = frames.select(frames.plateau_mask(temps))
        r = cross_check(few, {"bft_degC": -70.0, "sigma_degC": 0.1, "warnings": []})
        assert r["cross_check"]["ran"] is False and "plateaux" in r["cross_check"]["reason"]
        assert r["sigma_degC"] == 0.1 and "outside_model" not in r
    assert MIN_PLATEAUX == 4


def test_cnn_checked_against_the_forward_fit(frames, monkeypatch):
    """The forward fit as the reference (its fit replaced here by a fixed report: the fit
    itself is tested in test_forward.py): agreement leaves the CNN's result alone,
    disagreement flags it and widens sigma to cover the gap."""
    import plato_cnn.forward as fw
    from plato_cnn.crosscheck import cross_check_forward

    seen = {}

    def fake_fit(fr, seed=0):
        seen["frames"] = len(fr)
        return {"bft_degC": -79.0, "sigma_degC": 0.01, "chi2": {"reduced": 1.02},
                "outside_model": False}  # fmt: skip

    monkeypatch.setattr(fw, "forward_bft", fake_fit)
    r = cross_check_forward(frames, {"bft_degC": -79.05, "sigma_degC": 0.1, "warnings": []})
    assert seen["frames"] == int(frames.usable.sum())
    assert r["outside_model"] is False and r["sigma_degC"] == 0.1
    c = r["cross_check_forward"]
    assert c["ran"] and c["forward_bft_degC"] == -79.0 and c["forward_chi2_reduced"] == 1.02
    assert c["difference_degC"] == pytest.approx(-0.05)
    with pytest.warns(PlatoFocusWarning, match="forward fit"):
        r = cross_check_forward(frames, {"bft_degC": -78.0, "sigma_degC": 0.1, "warnings": []})
    assert r["outside_model"] is True
    assert r["sigma_degC"] == pytest.approx(math.hypot(0.1, 1.0))
    assert r["cross_check_forward"]["sigma_before_degC"] == 0.1


def test_an_estimate_already_outside_its_model_is_held_to_one_sigma(frames, monkeypatch):
    """An estimate its thermal-residual check already flagged (its sigma a widening, not a
    calibration) is widened by the forward fit from one combined sigma on; an unflagged one
    at the same gap (2 combined sigmas), or one flagged by another cross-check, is left
    alone."""
    import plato_cnn.forward as fw
    from plato_cnn.crosscheck import DISAGREE_SIGMAS_FLAGGED, cross_check_forward

    def fake_fit(fr, seed=0):
        return {"bft_degC": -79.0, "sigma_degC": 0.0, "chi2": {"reduced": 1.02},
                "outside_model": False}  # fmt: skip

    monkeypatch.setattr(fw, "forward_bft", fake_fit)
    est = {"bft_degC": -78.0, "sigma_degC": 0.5, "warnings": []}
    r = cross_check_forward(frames, est)
    assert r["outside_model"] is False and r["sigma_degC"] == 0.5
    assert r["cross_check_forward"]["threshold_sigmas"] == DISAGREE_SIGMAS
    # flagged by another cross-check only: the usual threshold
    r = cross_check_forward(frames, {**est, "outside_model": True})
    assert r["cross_check_forward"]["threshold_sigmas"] == DISAGREE_SIGMAS
    assert r["sigma_degC"] == 0.5
    flagged = {**est, "outside_model": True, "thermal_residual": {"outside": True}}
    with pytest.warns(PlatoFocusWarning, match="forward fit"):
        r = cross_check_forward(frames, flagged)
    assert r["cross_check_forward"]["threshold_sigmas"] == DISAGREE_SIGMAS_FLAGGED
    assert r["outside_model"] is True and r["sigma_degC"] == pytest.approx(math.hypot(0.5, 1.0))
