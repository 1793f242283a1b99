"""The CNN's thermal-residual check: its model.json entry, its effect on a fit, its
calibration from in-family and other-family cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plato_cnn.fit import FocusFit
from plato_cnn.nn.card import (
    ModelCard,
    ModelFormatError,
    ResidualCheck,
    default_model_dir,
    read_model_json,
)
from plato_cnn.pipelines.calibrate_residual import residual_check_from
from plato_cnn.predict import NO_CALIBRATION, apply_residual_check, unchecked_reason
from plato_sim.errors import PlatoFocusWarning

ENTRY = {"threshold_um": {"5": 6.0, "3": 7.0, "2": 6.5},
         "sigma_per_residual": {"5": 0.3, "3": 0.7, "2": 1.1}}  # fmt: skip


def _card(entry=ENTRY) -> ModelCard:
    d = dict(read_model_json(default_model_dir()))
    d["thermal_residual_check"] = entry
    return ModelCard.from_dict(d)


def _fit(residual_um: float, n_plateaux: int = 5, s: float = 9.0) -> FocusFit:
    return FocusFit(bft_degC=-80.0, sigma_degC=0.1, s_um_per_degC=s, s_sigma_um_per_degC=0.1,
                    s_measured=True, t_field_degC=np.zeros(3), field_ids=np.arange(3),
                    n_frames=30, n_plateaux=n_plateaux, sign_ambiguous=False, p_behind_mean=0.5,
                    template_shift_degC=0.0, thermal_residual_um=residual_um)  # fmt: skip


def test_entry_is_checked_and_picks_the_largest_count_not_above():
    check = _card().residual_check
    assert check.entry(5) == (6.0, 0.3) and check.entry(4) == (7.0, 0.7)
    assert check.entry(2) == (6.5, 1.1) and check.entry(1) is None
    for bad in ({"threshold_um": {"1": 3.0}, "sigma_per_residual": {"1": 0.2}},
                {"threshold_um": {"5": -1.0}, "sigma_per_residual": {"5": 0.2}},
                {"threshold_um": {"5": 1.0}}, [1, 2]):  # fmt: skip
        with pytest.raises(ModelFormatError, match="thermal_residual_check"):
            _card(bad)
    assert ResidualCheck.from_dict(ENTRY) == _card().residual_check


def test_a_fit_above_the_threshold_is_flagged_and_widened():
    card = _card()
    ok = _fit(5.0)
    rec = apply_residual_check(ok, card)
    assert rec["ran"] and not rec["outside"] and ok.sigma_degC == 0.1 and not ok.warnings
    far = _fit(18.0, s=-9.0)
    with pytest.warns(PlatoFocusWarning, match="outside what the model knows"):
        rec = apply_residual_check(far, card)
    assert rec["outside"] and rec["sigma_before_degC"] == 0.1 and rec["threshold_um"] == 6.0
    assert far.sigma_degC == pytest.approx(math.hypot(0.1, 0.3 * 18.0 / 9.0))
    one = _fit(0.0, n_plateaux=1)
    with pytest.warns(PlatoFocusWarning, match="not checked"):
        rec = apply_residual_check(one, card)
    assert rec == {"residual_um": 0.0, "ran": False, "outside": False,
                   "reason": unchecked_reason(1)} and one.sigma_degC == 0.1  # fmt: skip
    assert "one plateau" in one.warnings[0]  # said, not silently in-family
    unchecked = _fit(float("nan"))
    with pytest.warns(PlatoFocusWarning, match="not checked"):
        apply_residual_check(unchecked, _card())
    assert "no thermal residual" in unchecked.warnings[0]  # the threshold exists: not that
    nocheck = _fit(0.0, n_plateaux=1)
    card_without = _card()
    object.__setattr__(card_without, "residual_check", None)
    rec = apply_residual_check(nocheck, card_without)
    assert not rec["ran"] and rec["reason"] == NO_CALIBRATION and not nocheck.warnings


def test_calibration_threshold_is_the_in_family_maximum_and_k_covers_68_percent():
    rng = np.random.default_rng(0)
    inside = [{n: (0.05, 0.1, r, 10.0) for n in ("5", "3", "2")} for r in rng.uniform(2, 6, 12)]
    outside = []
    for _ in range(40):
        res = rng.uniform(8, 30)
        err = 0.3 * res / 10.0 * rng.normal()  # errors scale with residual / s
        outside.append({n: (err, 0.1, res, 10.0) for n in ("5", "3", "2")})
    out = residual_check_from(inside, outside)
    thr = max(c["5"][2] for c in inside)
    assert out["threshold_um"]["5"] == pytest.approx(thr)
    st = out["by_plateaux"]["5"]["outside"]
    assert st["frac_flagged"] == 1.0 and 0.65 <= st["coverage_after"] <= 0.72
    assert 0.15 < out["sigma_per_residual"]["5"] < 0.6
