"""Best-focus temperature of a camera model (definition of docs/facts.md)."""

import numpy as np
import pytest

from plato_sim.errors import ParameterError
from plato_sim.optics.model import CameraModel
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.psf import FastEngine
from plato_sim.scenes.fields import ground_test_fields
from plato_sim.truth.bestfocus import (
    _maximise_fast,
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


def test_fast_search_agrees_with_the_refined_search(setup):
    model, th, ph, sp, eng = setup
    ref, e_ref = field_best_focus_um(model.optics, th, ph, sp, eng, n_sub=4)
    fast, e_fast = field_best_focus_um(model.optics, th, ph, sp, eng, n_sub=4, search="fast")
    # 3 points 4 um apart on a flat-topped, skewed curve: the vertex is a few 0.01 um off
    assert np.max(np.abs(fast - ref)) < 0.05
    assert np.allclose(e_fast, e_ref, atol=1e-4)


def test_fast_maximiser_on_analytic_curves(caplog):
    peak = np.array([-30.0, 3.0, 41.0])

    def parabola(rows, dz):
        return 1.0 - 1e-3 * (dz - peak[rows, None]) ** 2

    x, top = _maximise_fast(parabola, parabola, np.zeros(3), 100.0)
    assert np.allclose(x, peak, atol=1e-9) and np.allclose(top, 1.0)
    # a maximum out of reach of the scan and the steps is reported, not hidden
    for width in (30.0, 3.0):  # rising everywhere the search looks; flat (zero) there

        def far(rows, dz, w=width):
            return np.exp(-0.5 * ((dz - 400.0) / w) ** 2)

        caplog.clear()
        with caplog.at_level("WARNING", logger="plato_sim.truth.bestfocus"):
            _maximise_fast(far, far, np.zeros(2), 100.0)
        assert "2 field(s) not bracketed" in caplog.text


def test_unknown_search_is_refused(setup):
    model, th, ph, sp, eng = setup
    with pytest.raises(ParameterError, match="search"):
        field_best_focus_um(model.optics, th, ph, sp, eng, search="golden")
