"""Property-based tests (hypothesis) of the reader's physical checks on arrays.

A random damage of the hostile tester's kinds to one plateau, either to its TRP1 samples
(kelvin, a lost sign, millikelvin, collapse onto another plateau, sensor noise) or to its
background (an offset of any size, a zeroed frame), either leaves the BFT within its sigma
or is reported by the checks the reader applies (:func:`check_trp1`, the plateau grouping
:func:`plateau_groups`, :func:`check_background_level`, :func:`background_problem`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from campaign_builder import GAIN, cubes, make_campaign, obs_dirs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from plato_cnn.classical import estimate_bft
from plato_cnn.reader import (
    BG_DIFFUSE_MAX_E,
    BG_RESIDUAL_TOL_E,
    PLATEAU_GAP_DEGC,
    TRP1_PLAUSIBLE_DEGC,
    background_problem,
    background_residual_adu,
    check_background_level,
    check_trp1,
    plateau_groups,
    read_campaign,
)
from plato_sim.io import campaign_format as cf

PROPS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
N_BOOT = 60
#: Background offsets (ADU, added to the background) the residual check lets through.
PASS_LO = -(BG_DIFFUSE_MAX_E + BG_RESIDUAL_TOL_E) / GAIN
PASS_HI = BG_RESIDUAL_TOL_E / GAIN


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The campaign, its frames, its reference BFT, and each plateau's raw source windows
    minus their background (ADU) and mean background."""
    camp = make_campaign(tmp_path_factory.mktemp("c"), n_fields=3, n_dithers=2)
    fr = read_campaign(camp)
    ref = estimate_bft(fr, "gauss", n_boot=N_BOOT)
    raw = {}
    for d, obsid in zip(obs_dirs(camp), sorted(set(fr.obsid.tolist())), strict=True):
        c = cubes(d)
        bg_cube, src_cube = cf.read_cube(c[0]), cf.read_cube(c[1])
        try:
            bg = bg_cube.extensions[0].read_frames(0, 2).astype(np.float32).mean(axis=0)
            src = src_cube.extensions[0].read_frames(0, 4).astype(np.float32)
        finally:
            bg_cube.close()
            src_cube.close()
        raw[obsid] = (src - bg, bg)
    return fr, ref, raw


def _within(ref, damaged) -> bool:
    return abs(damaged.bft_degC - ref.bft_degC) <= max(ref.sigma_degC, damaged.sigma_degC)


def test_the_intact_campaign_passes_every_check(campaign):
    fr, _, raw = campaign
    assert check_trp1(fr.temperature_degC) == ""
    means = [fr.temperature_degC[fr.obsid == o].mean() for o in np.unique(fr.obsid)]
    assert np.unique(plateau_groups(np.asarray(means))).size == len(means)
    for sub, bg in raw.values():
        assert check_background_level(bg) == "" and background_problem(sub, GAIN) == ""
        level, se = background_residual_adu(sub)
        assert abs(level) < PASS_HI and se < 0.5


# ------------------------------------------------------------------------------ temperatures
def _damage_temperature(kind: str, t: np.ndarray, other: float, x: float) -> np.ndarray:
    """One plateau's TRP1 samples after a hostile damage (``x`` in [0, 1) sets its size)."""
    if kind == "kelvin":
        return t + 273.15
    if kind == "sign_lost":
        return -t
    if kind == "millikelvin":
        return (t + 273.15) * 1000.0
    if kind == "collapse":  # stuck near another plateau's value
        return np.full_like(t, other + (x - 0.5) * 0.8 * PLATEAU_GAP_DEGC)
    return t + (x - 0.5) * 0.04  # within the sensor's noise: harmless


@PROPS
@given(
    kind=st.sampled_from(["kelvin", "sign_lost", "millikelvin", "collapse", "noise"]),
    which=st.integers(0, 4),
    onto=st.integers(1, 4),
    x=st.floats(0.0, 1.0, exclude_max=True),
)
def test_temperature_damage_is_reported_or_harmless(campaign, kind, which, onto, x):
    fr, ref, _ = campaign
    ids = np.unique(fr.obsid)
    sel = fr.obsid == ids[which]
    other = fr.temperature_degC[fr.obsid == ids[(which + onto) % 5]].mean()
    temp = fr.temperature_degC.copy()
    temp[sel] = _damage_temperature(kind, temp[sel], other, x)
    reported = check_trp1(temp[sel]) != ""
    means = np.array([temp[fr.obsid == o].mean() for o in ids])
    collapsed = np.unique(plateau_groups(means)).size < ids.size
    if kind in ("kelvin", "sign_lost", "millikelvin"):
        assert reported, (kind, temp[sel][:3], TRP1_PLAUSIBLE_DEGC)
    if kind == "collapse":
        assert collapsed
    if reported or collapsed:
        event("reported")
        return
    event("undetected: BFT compared")
    damaged = estimate_bft(dataclasses.replace(fr, temperature_degC=temp), "gauss", n_boot=N_BOOT)
    assert _within(ref, damaged), (kind, x, damaged.bft_degC, ref.bft_degC)


# ------------------------------------------------------------------------------ background
@PROPS
@given(
    which=st.integers(0, 4),
    damage=st.one_of(
        st.floats(-500.0, 500.0),  # an offset of any size
        st.floats(1.5 * PASS_LO, 3.0 * PASS_HI),  # near the limits
        st.just("zero"),
    ),
)
def test_background_damage_is_reported_or_harmless(campaign, which, damage):
    fr, ref, raw = campaign
    obsid = int(np.unique(fr.obsid)[which])
    sub, bg = raw[obsid]
    bad_bg = np.zeros_like(bg) if damage == "zero" else bg + np.float32(damage)
    offset = bad_bg - bg  # what the damaged background adds to the subtraction
    if check_background_level(bad_bg) or background_problem(sub - offset, GAIN):
        event("reported")
        return  # reported: the reader drops the frames that depend on it
    event("undetected: BFT compared")
    assert damage != "zero" and PASS_LO - 1.0 <= damage <= PASS_HI + 1.0
    # the damage stays undetected: stamps of that plateau's first field lose offset * gain
    stamps = fr.stamps.copy()
    sel = (fr.obsid == obsid) & (fr.field_id == 0)
    stamps[sel] -= np.float32(float(np.mean(offset)) * GAIN)
    damaged = estimate_bft(dataclasses.replace(fr, stamps=stamps), "gauss", n_boot=N_BOOT)
    assert _within(ref, damaged), (damage, damaged.bft_degC, ref.bft_degC)
