"""EEF variants and the classical best-focus estimators."""

from __future__ import annotations

import numpy as np
import pytest
from campaign_builder import T_BEST, make_campaign

from plato_cnn.classical import (
    InsufficientPlateaux,
    eef_table,
    estimate_bft,
    improved_bft,
    min_plateaux,
    poly_max,
    test_house_bft,
)
from plato_cnn.metrics import eef_2x2, eef_3x3, eef_8x8_brightest, frame_eef
from plato_cnn.reader import read_campaign
from plato_sim.truth.eef import best_box, eef

test_house_bft.__test__ = False  # a function named test_* that is not a test


def _brute_3x3(x):
    _, r, c = best_box(x[None], 2)
    r, c = int(r[0]), int(c[0])
    o = x[max(r - 4, 0) : r + 6, max(c - 4, 0) : c + 6]
    best = max(o[i : i + 3, j : j + 3].sum() for i in range(o.shape[0] - 2) for j in range(8))
    return best / o.sum()


def _brute_8x8(x):
    p = np.unravel_index(np.argmax(x), x.shape)
    cands = [
        (x[p[0] + dr : p[0] + dr + 2, p[1] + dc : p[1] + dc + 2].sum(), p[0] + dr, p[1] + dc)
        for dr in (-1, 0)
        for dc in (-1, 0)
    ]
    s, r, c = max(cands)
    return s / x[r - 3 : r + 5, c - 3 : c + 5].sum()


def test_eef_variants_match_brute_force():
    rng = np.random.default_rng(3)
    a = rng.random((6, 24, 24))
    for k in range(6):
        r, c = rng.integers(8, 16, 2)
        a[k, r : r + 3, c : c + 2] += rng.uniform(5, 50)
    assert np.array_equal(eef_2x2(a), eef(a))  # the definition, not a re-implementation
    assert np.allclose(eef_3x3(a), [_brute_3x3(x) for x in a])
    assert np.allclose(eef_8x8_brightest(a), [_brute_8x8(x) for x in a])
    for v in ("2x2", "3x3", "8x8"):
        assert frame_eef(a, v).shape == (6,)
    with pytest.raises(ValueError, match="variant"):
        frame_eef(a, "5x5")


def test_eef_of_point_and_flat_images():
    a = np.zeros((2, 16, 16))
    a[0, 8, 8] = 1.0  # all light in one pixel
    a[1] = 1.0  # flat, with a barely brighter centre so that no box touches the border
    a[1, 7:9, 7:9] = 1.0 + 1e-9
    assert eef_2x2(a) == pytest.approx([1.0, 4 / 100])
    assert eef_3x3(a) == pytest.approx([1.0, 9 / 100])
    assert eef_8x8_brightest(a) == pytest.approx([1.0, 4 / 64])


def test_poly_max_interior_and_edge():
    c = np.polyfit([-2.0, -1.0, 0.0, 1.0, 2.0], -((np.arange(-2, 3) - 0.3) ** 2), 3)
    x, edge = poly_max(c, -2.0, 2.0)
    assert x == pytest.approx(0.3, abs=1e-6) and not edge
    x, edge = poly_max(np.array([1.0, 0.0]), -1.0, 2.0)  # increasing line
    assert x == 2.0 and edge


def test_min_plateaux():
    assert [min_plateaux(f) for f in ("quadratic", "cubic", "quartic", "gauss")] == [3, 4, 5, 3]
    with pytest.raises(ValueError):
        min_plateaux("spline")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    camp = make_campaign(tmp_path_factory.mktemp("c"), n_fields=4, n_dithers=6, seed=2)
    return read_campaign(camp)


def test_eef_table_max_and_mean(frames):
    e = eef_2x2(frames.stamps)
    tmax = eef_table(frames, e, "max")
    tmean = eef_table(frames, e, "mean")
    assert tmax.values.shape == (5, 4) and np.all(tmax.counts == 12)
    assert np.all(tmax.values >= tmean.values)
    m = (frames.obsid == 1046) & (frames.field_id == 2)
    assert tmax.values[2, 2] == pytest.approx(e[m].max())
    assert tmean.values[2, 2] == pytest.approx(e[m].mean())


@pytest.mark.parametrize("fit", ["cubic", "quartic", "quadratic", "gauss"])
def test_estimators_find_the_sharpest_temperature(frames, fit):
    r = estimate_bft(frames, fit)
    # the synthetic star is sharpest at T_BEST; the curve is symmetric-ish around it
    assert abs(r.bft_degC - T_BEST) < 1.5, (fit, r.bft_degC)
    assert 0 < r.sigma_degC < 3.0
    assert r.obsids == [1024, 1035, 1046, 1057, 1068]
    assert len(r.curve_t_degC) == len(r.curve_eef) > 10
    assert r.frames_used == 5 * 4 * 6 * 2


def test_test_house_uses_max_and_improved_uses_mean(frames):
    e = eef_2x2(frames.stamps)
    a = test_house_bft(frames, "cubic", eef_values=e)
    b = improved_bft(frames, "gauss", eef_values=e, n_boot=50)
    tmax = eef_table(frames, e, "max").field_mean()[0]
    tmean = eef_table(frames, e, "mean").field_mean()[0]
    assert np.allclose(a.mean_eef, tmax) and np.allclose(b.mean_eef, tmean)
    assert b.extra["n_boot"] == 50 and b.extra["sigma_bootstrap_degC"] > 0


def test_bootstrap_is_seeded(frames):
    a = improved_bft(frames, n_boot=40, seed=7)
    b = improved_bft(frames, n_boot=40, seed=7)
    c = improved_bft(frames, n_boot=40, seed=8)
    assert a.sigma_degC == b.sigma_degC and a.bft_degC == b.bft_degC
    assert a.sigma_degC != c.sigma_degC and a.bft_degC == c.bft_degC


def test_fit_needs_enough_plateaux(frames):
    sub = frames.select(np.isin(frames.obsid, [1024, 1035, 1046]))
    for fit in ("cubic", "quartic"):
        with pytest.raises(InsufficientPlateaux, match=f"{fit}.*needs at least"):
            estimate_bft(sub, fit)
    for fit in ("quadratic", "gauss"):
        assert np.isfinite(estimate_bft(sub, fit).bft_degC)
    with pytest.raises(ValueError, match="unknown fit"):
        estimate_bft(frames, "spline")


def test_three_plateaux_carry_the_calibrated_shape_term(frames):
    """With 3 plateaux the symmetric shape passes through every point: sigma adds the
    calibrated shape term to the bootstrap's, and says so; with 4 or more the two shape fits'
    difference plays that part."""
    from plato_cnn.classical import THREE_PLATEAU_SHAPE_SIGMA_DEGC

    sub = frames.select(np.isin(frames.obsid, [1024, 1046, 1068]))
    r = improved_bft(sub, n_boot=40, seed=1)
    bare = improved_bft(sub, n_boot=40, seed=1, shape_term=False)
    assert r.bft_degC == bare.bft_degC and bare.extra["sigma_model_degC"] == 0.0
    assert r.extra["sigma_model_degC"] == THREE_PLATEAU_SHAPE_SIGMA_DEGC
    boot = r.extra["sigma_bootstrap_degC"]
    assert r.sigma_degC == pytest.approx(np.hypot(boot, THREE_PLATEAU_SHAPE_SIGMA_DEGC))
    assert bare.sigma_degC == pytest.approx(boot)
    assert any("shape term" in w for w in r.warnings)
    assert not any("shape term" in w for w in bare.warnings)
    four = improved_bft(frames.select(frames.obsid != 1068), n_boot=40, seed=1)
    assert not any("shape term" in w for w in four.warnings)


def test_edge_maximum_is_warned(frames):
    sub = frames.select(np.isin(frames.obsid, [1024, 1035, 1046]))  # -90..-80: still rising
    r = estimate_bft(sub, "quadratic")
    assert r.at_edge and any("edge" in w for w in r.warnings)
    assert r.bft_degC == pytest.approx(max(r.temperatures_degC))


def test_bootstrap_survives_sparse_campaigns(tmp_path):
    camp = make_campaign(tmp_path, n_fields=2, n_dithers=1, frames_per_dither=1, seed=4)
    fr = read_campaign(camp)
    r = estimate_bft(fr, "gauss", n_boot=60)
    assert np.isfinite(r.bft_degC)
    # replicates that lose every frame of a plateau are skipped, and that is said
    assert np.isfinite(r.sigma_degC) or any("bootstrap" in w for w in r.warnings)
