"""Best-focus temperature of a camera model (definition of docs/facts.md)."""

import numpy as np
import pytest

from plato_sim.optics.model import CameraModel
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.psf import FastEngine
from plato_sim.scenes.fields import ground_test_fields
from plato_sim.truth.bestfocus import (
    best_focus_temperature,
    expected_eef,
    field_best_focus_um,
    subpixel_grid,
    t0_for_best_focus,
)


@pytest.fixture(scope="module")
def setup():
    model = CameraModel.random(np.random.default_rng(11), 1)
    th, ph = ground_test_fields(6)
    sp = ogse_spectrum(model.optics.camera, 6)
    return model, th, ph, sp, FastEngine()


def test_subpixel_grid_is_uniform():
    g = subpixel_grid(4)
    assert g.shape == (16, 2)
    assert np.allclose(g.mean(axis=0), 0.0)
    assert g.min() == pytest.approx(-0.375) and g.max() == pytest.approx(0.375)


def test_t0_puts_the_eef_maximum_at_the_requested_temperature(setup):
    model, th, ph, sp, eng = setup
    kw = dict(theta_deg=th, phi_deg=ph, spectrum=sp, engine=eng, n_sub=3)
    new, bf = t0_for_best_focus(model, -78.3, **kw)
    again = best_focus_temperature(new, **kw)
    assert again.bft_degC == pytest.approx(-78.3, abs=0.05)
    # the maximum is a maximum: 1 degC either side the field-mean EEF is lower
    s = new.thermal.s_um_per_degC
    e = [
        expected_eef(new.optics, th, ph, bf.dz_th_um + d * s, sp, eng, 3).mean()
        for d in (-1.0, 0.0, 1.0)
    ]
    assert e[1] > e[0] and e[1] > e[2]
    # T_BF is not where the thermal focal shift vanishes (field curvature, chromatism...)
    assert abs(new.thermal.t0_degC - (-78.3)) > 0.2


def test_field_optimum_differs_across_the_field(setup):
    model, th, ph, sp, eng = setup
    dz, emax = field_best_focus_um(model.optics, th, ph, sp, eng, n_sub=3)
    assert dz.shape == th.shape and np.all(emax > 0.5)
    # the optimum follows the local focal offset (curvature + tilt): dz_th + offset ~ const
    local = model.optics.local_focal_offset_um(th, ph, dz)
    assert np.std(local) < np.std(model.optics.field_focal_offset_um(th, ph))
