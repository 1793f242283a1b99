"""Detector model: noise statistics, saturation, fixed pattern, randomisation."""

from __future__ import annotations

import numpy as np
import pytest

from plato_sim.detector import (
    DetectorModel,
    bloom_columns,
    draw_value,
    saturation_mask,
)

QUANT_VAR_ADU2 = 1.0 / 12.0  # variance added by rounding to integer ADU

CLEAN = dict(prnu_sigma=0.0, hot_pixel_fraction=0.0, cosmic_rate_per_cm2_s=0.0)


def test_dark_frames_match_offset_and_read_noise():
    d = DetectorModel(**CLEAN, dark_e_per_s_ref=0.0)
    rng = np.random.default_rng(1)
    raw = d.closed_shutter((4, 200, 200), 0.1, rng).astype(float)
    assert raw.dtype == np.float64
    n = raw.size
    # read noise: 38.7 and 32 e- in quadrature = 50.2 e- = 2.01 ADU at 25 e-/ADU
    assert d.read_noise_e == pytest.approx(50.2164, abs=1e-3)
    assert raw.mean() == pytest.approx(d.offset_adu, abs=5 * d.read_noise_adu / np.sqrt(n))
    var = raw.var()
    expected = d.read_noise_adu**2 + QUANT_VAR_ADU2
    # relative standard error of a variance from n Gaussian samples: sqrt(2 / n)
    assert var == pytest.approx(expected, rel=5 * np.sqrt(2.0 / n))


def test_flat_frames_photon_transfer():
    """Mean and variance of flats: gain, read noise and Poisson (photon transfer curve)."""
    rng = np.random.default_rng(2)
    for gain in (25.0, 12.0):
        d = DetectorModel(**CLEAN, gain_e_per_adu=gain)
        for level_e in (2_000.0, 40_000.0):
            flats = d.expose(np.full((2, 250, 250), level_e), 0.1, rng).astype(float)
            n = flats[0].size
            mean_adu = flats.mean()
            assert mean_adu - d.offset_adu == pytest.approx(level_e / gain, rel=2e-3)
            # pair difference cancels any fixed pattern: var(diff) / 2 = per-frame variance
            var = np.var(flats[0] - flats[1]) / 2.0
            expected = (level_e + d.read_noise_e**2) / gain**2 + QUANT_VAR_ADU2
            assert var == pytest.approx(expected, rel=5 * np.sqrt(2.0 / n))
            # gain recovered the way a test house would: signal / (variance - read variance)
            g_est = (mean_adu - d.offset_adu) / (var - QUANT_VAR_ADU2 - d.read_noise_adu**2)
            assert g_est == pytest.approx(gain, rel=0.03)


def test_prnu_is_fixed_pattern_shared_by_frames():
    d = DetectorModel(prnu_sigma=0.01, hot_pixel_fraction=0.0, cosmic_rate_per_cm2_s=0.0)
    rng = np.random.default_rng(3)
    level = 200_000.0
    flats = d.expose(np.full((2, 200, 200), level), 0.1, rng).astype(float)
    single = flats[0].var() * d.gain_e_per_adu**2
    pair = np.var(flats[0] - flats[1]) / 2.0 * d.gain_e_per_adu**2
    prnu_var = single - pair  # PRNU survives in one frame, cancels in the difference
    assert prnu_var == pytest.approx((0.01 * level) ** 2, rel=0.1)


def test_dark_current_and_hot_pixels():
    d = DetectorModel(
        prnu_sigma=0.0,
        cosmic_rate_per_cm2_s=0.0,
        read_noise_ccd_e=0.0,
        read_noise_fee_e=0.0,
        gain_e_per_adu=1.0,
        dark_e_per_s_ref=2.0,
        hot_pixel_fraction=0.01,
        hot_pixel_e_per_s=(1000.0, 1000.0),
    )
    rng = np.random.default_rng(4)
    pat = d.fixed_pattern((100, 100), rng)
    assert 60 <= np.count_nonzero(pat.hot_e_per_s) <= 140
    raw = d.closed_shutter((3, 100, 100), 10.0, rng, pattern=pat).astype(float) - d.offset_adu
    cold = pat.hot_e_per_s == 0
    assert raw[:, cold].mean() == pytest.approx(20.0, rel=0.02)
    assert raw[:, ~cold].mean() == pytest.approx(10_020.0, rel=0.01)
    # the dark current doubles every dark_doubling_degC
    warm = DetectorModel(ccd_temperature_degC=-70.0 + 6.3, dark_e_per_s_ref=2.0)
    assert warm.dark_e_per_s == pytest.approx(4.0)


def test_saturation_full_well_and_adc():
    rng = np.random.default_rng(5)
    star = np.zeros((40, 40))
    star[20, 20] = 5e6
    d = DetectorModel(**CLEAN)
    raw = d.expose(star, 0.1, rng).astype(float)
    top = d.offset_adu + d.full_well_e / d.gain_e_per_adu  # 37000 ADU at 25 e-/ADU
    # capped at the full well (plus read noise), the excess bloomed along column 20
    assert raw.max() <= top + 6 * d.read_noise_adu
    assert np.count_nonzero(raw[:, 20] > top - 6 * d.read_noise_adu) >= 5
    assert np.all(raw[:, [10, 30]] < d.offset_adu + 20)
    assert saturation_mask(raw, d)[20, 20]
    # a low gain puts the full well beyond the 16-bit ADC: clipped at exactly 65535
    low = DetectorModel(**CLEAN, gain_e_per_adu=10.0)
    raw2 = low.expose(star, 0.1, rng)
    assert raw2.max() == 65535
    assert raw2.dtype == np.uint16
    assert saturation_mask(raw2, low)[20, 20]


def test_bloom_conserves_charge_and_caps():
    e = np.zeros((2, 30, 5))
    e[0, 15, 2] = 4.5e6
    e[1, 1, 4] = 3e6  # near the edge: part of the charge leaves the window
    b = bloom_columns(e, 9e5)
    assert b.max() <= 9e5
    assert b[0].sum() == pytest.approx(4.5e6)
    assert b[0, :, 2].sum() == pytest.approx(4.5e6)
    assert np.all(b[0][:, [0, 1, 3, 4]] == 0)
    assert b[1].sum() < 3e6


def test_cosmic_rays_rate():
    d = DetectorModel(
        prnu_sigma=0.0,
        hot_pixel_fraction=0.0,
        cosmic_rate_per_cm2_s=5.0,
        cosmic_e_per_px=5000.0,
        read_noise_ccd_e=0.0,
        read_noise_fee_e=0.0,
        dark_e_per_s_ref=0.0,
    )
    rng = np.random.default_rng(6)
    raw = d.closed_shutter((20, 100, 100), 1.0, rng).astype(float) - d.offset_adu
    # expected hits: 5 /cm^2/s x (100 x 18 um)^2 x 1 s x 20 frames = 3.24 -> some tracks
    hit_frames = np.count_nonzero((raw > 0).any(axis=(1, 2)))
    assert 1 <= hit_frames <= 12


def test_random_is_deterministic_and_validated():
    ranges = {"gain_e_per_adu": [23, 27], "dark_e_per_s_ref": {"loguniform": [0.01, 1.0]}}
    a = DetectorModel.random(np.random.default_rng(7), ranges)
    b = DetectorModel.random(np.random.default_rng(7), ranges)
    assert a == b
    assert 23 <= a.gain_e_per_adu <= 27
    assert a.offset_adu == 1000.0
    with pytest.raises(ValueError, match="unknown parameter"):
        DetectorModel.random(np.random.default_rng(7), {"gain": [1, 2]})
    with pytest.raises(ValueError, match="gain_e_per_adu"):
        DetectorModel(gain_e_per_adu=-1.0)
    assert DetectorModel.from_dict(a.to_dict()) == a


def test_same_seed_same_frames():
    d = DetectorModel()
    img = np.full((2, 16, 16), 500.0)
    r1 = d.expose(img, 0.1, np.random.default_rng(8))
    r2 = d.expose(img, 0.1, np.random.default_rng(8))
    assert np.array_equal(r1, r2)


def test_draw_value_specs():
    rng = np.random.default_rng(9)
    assert draw_value(rng, 3) == 3.0
    assert 1 <= draw_value(rng, [1, 2]) <= 2
    assert 1 <= draw_value(rng, {"loguniform": [1, 1000]}) <= 1000
    assert draw_value(rng, {"choice": [5]}) == 5.0
    with pytest.raises(ValueError, match="flux"):
        draw_value(rng, {"loguniform": [0, 1]}, "flux")
    with pytest.raises(ValueError, match="unknown distribution"):
        draw_value(rng, {"gauss": [0, 1]})


def test_bad_inputs_are_named():
    d = DetectorModel()
    rng = np.random.default_rng(10)
    with pytest.raises(ValueError, match="finite"):
        d.expose(np.full((4, 4), np.nan), 0.1, rng)
    with pytest.raises(ValueError, match="does not broadcast"):
        d.expose(np.zeros((4, 4)), 0.1, rng, pattern=d.fixed_pattern((5, 5), rng))
