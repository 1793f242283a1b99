"""The saturation rule of docs/campaign-format.md is stated once (plato_sim.detector) and the
raw-frame level (detector) and background-subtracted level (stamps, reader, datasets) agree."""

from __future__ import annotations

import numpy as np

from plato_sim.detector import (
    ADC_MAX_ADU,
    NOMINAL_GAIN_E_PER_ADU,
    NOMINAL_OFFSET_ADU,
    DetectorModel,
    saturation_mask,
    saturation_signal_adu,
)
from plato_sim.stamps import saturation_level_adu


def test_raw_and_subtracted_levels_are_one_rule():
    rng = np.random.default_rng(3)
    gains, wells, offsets = (
        rng.uniform(15, 40, 20),
        rng.uniform(5e5, 1.2e6, 20),
        rng.uniform(500, 2000, 20),
    )
    for gain, fw, offset in zip(gains, wells, offsets, strict=True):
        det = DetectorModel(gain_e_per_adu=gain, full_well_e=fw, offset_adu=offset)
        signal = saturation_signal_adu(gain, fw)
        assert signal == saturation_level_adu(gain, fw)  # below the ADC range here
        assert det.saturation_adu == min(offset + signal, ADC_MAX_ADU)
        # a raw frame one ADU either side of the level: only the upper pixel is saturated
        raw = np.array([np.floor(det.saturation_adu), np.floor(det.saturation_adu) + 1])
        assert saturation_mask(raw, det).tolist() == [False, True]


def test_nominal_level_and_adc_clamp():
    # docs/campaign-format.md: 90 % of 900 000 e- at the nominal 25 e-/ADU = 32 400 ADU above
    # the offset (a regression guard on the constants, written out from the document)
    assert saturation_level_adu(NOMINAL_GAIN_E_PER_ADU) == 32_400.0
    assert DetectorModel().saturation_adu == NOMINAL_OFFSET_ADU + 32_400.0
    # a gain so low that 90 % of the full well exceeds the 16-bit range: the ADC limit rules
    assert saturation_level_adu(5.0) == float(ADC_MAX_ADU)
    assert DetectorModel(gain_e_per_adu=5.0).saturation_adu == float(ADC_MAX_ADU)
