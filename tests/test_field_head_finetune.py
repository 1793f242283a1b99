"""Fine-tuning the field head on cameras like forward-fitted ones: the variants' draws.

The pipeline's effect is measured by ``benchmarks/field_head_transfer.py`` (docs/cnn.md
section 7); these tests check what each variant is made of: foci that the reader keeps apart,
a thermal response from the head's own training prior, and the same draws from the same seed.
"""

import numpy as np
import pytest

from plato_cnn.pipelines.field_head_finetune import (
    FieldHeadFinetuneConfig,
    _foci_degC,
    _thermal_prior,
    _variant,
)
from plato_sim.errors import ParameterError
from plato_sim.optics.tabulated import TabulatedCamera, TabulatedOptics
from plato_sim.optics.thermal import ThermalModel


def _camera() -> TabulatedCamera:
    z = np.zeros((2, 18))
    z[:, 0] = [30.0, -20.0]  # Z5
    z[:, 6] = [15.0, 10.0]  # Z11
    optics = TabulatedOptics(theta_deg=(0.0, 10.0), phi_deg=(0.0, 45.0),
                             focal_offset_um=(0.0, 5.0), zernike_nm=z, chrom_scale=1.0,
                             chrom_lin_um=0.0)  # fmt: skip
    return TabulatedCamera(optics=optics, thermal=ThermalModel(9.0, -75.0, 0.01),
                           diffusion_sigma_px=0.2)  # fmt: skip


def test_settings_are_checked():
    for bad in (dict(variants=0), dict(plateaux=1), dict(steps=0), dict(lr=0.0), dict(l2sp=-1.0),
                dict(focus_half_range_um=0.0)):  # fmt: skip
        with pytest.raises(ParameterError):
            FieldHeadFinetuneConfig(**bad)


@pytest.mark.parametrize("s", [6.0, 14.0, -9.0])
def test_foci_cover_the_range_and_stay_apart(s):
    cfg = FieldHeadFinetuneConfig()
    t = np.asarray(_foci_degC({"bft_degC": -80.0}, s, cfg, np.random.default_rng(1)))
    half = cfg.focus_half_range_um / abs(s)
    assert len(t) == cfg.plateaux and np.all(np.diff(t) > 0.5)  # the reader's tolerance
    assert np.all(np.abs(t + 80.0) <= half + 0.05)
    assert t[0] < -80.0 - 0.5 * half and t[-1] > -80.0 + 0.5 * half  # both sides of focus


def test_variants_draw_the_thermal_prior_and_repeat_with_the_seed():
    s_spec, _, reach = _thermal_prior()
    base = _camera()
    cams = [_variant(base, np.random.default_rng(k)) for k in range(40)]
    s = np.array([c.thermal.s_um_per_degC for c in cams])
    q = np.array([c.thermal.q_um_per_degC2 for c in cams])
    assert s.min() >= s_spec[0] and s.max() <= s_spec[1] and np.ptp(s) > 3.0
    assert np.all(np.abs(q) <= s**2 / (4.0 * reach) + 1e-12) and np.any(q != 0.0)
    assert all(c.thermal.t0_degC == base.thermal.t0_degC for c in cams)
    z = np.array([np.asarray(c.optics.zernike_nm) for c in cams])
    assert np.ptp(z[:, :, 0]) > 0  # turned, mirrored, scaled: not one camera 40 times
    again = _variant(base, np.random.default_rng(3))
    assert again.thermal == cams[3].thermal
    np.testing.assert_array_equal(np.asarray(again.optics.zernike_nm), z[3])
