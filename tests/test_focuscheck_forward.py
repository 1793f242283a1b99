"""The in-orbit forward check (plato_cnn/focuscheck_forward.py): from a camera's exact optics
it recovers the common focal shift to its statistical sigma; bad reports are refused."""

from __future__ import annotations

import numpy as np
import pytest

from plato_cnn.focuscheck_forward import (
    FORWARD_CHI2_CALIBRATED,
    UNCALIBRATED_SHIFT_SIGMA_UM,
    FittedOptics,
    forward_focus_check,
)
from plato_cnn.forward import PARAM_NAMES
from plato_sim.errors import ParameterError
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX
from plato_sim.scenes.inorbit import emulate_imagettes, make_camera


def _exact_report(entry, theta_deg, phi_deg) -> dict:
    """A forward report holding the camera's own optics at the given positions (what a
    perfect ground fit would give): smooth model zero, each position's terms its own."""
    model = entry.model()
    opt, th = model.optics, model.thermal
    params = dict.fromkeys(PARAM_NAMES, 0.0)
    params.update(s_um_per_degC=th.s_um_per_degC, q_um_per_degC2=th.q_um_per_degC2,
                  chrom_scale=opt.perturbation.chrom_scale,
                  diffusion_sigma_px=DEFAULT_DIFFUSION_SIGMA_PX)  # fmt: skip
    z = opt.zernikes_nm(theta_deg, phi_deg, 0.0, np.array([700.0]))[:, 0, :]
    focal = opt.field_focal_offset_um(theta_deg, phi_deg)
    wf = []
    for i, (t, p) in enumerate(zip(theta_deg, phi_deg, strict=True)):
        row = dict(theta_deg=float(t), phi_deg=float(p), Z4_nm=0.0, focal_offset_um=float(focal[i]))
        row.update(
            {f"Z{j}_nm": float(z[i, j - 1]) if j <= z.shape[1] else 0.0 for j in range(5, 23)}
        )
        wf.append(row)
    thermal = dict(t_ref_degC=th.t0_degC, b_um=0.0, s_um_per_degC=th.s_um_per_degC,
                   q_um_per_degC2=th.q_um_per_degC2)  # fmt: skip
    return dict(fit="forward-model", params=params, wavefront=wf, plateaux_degC=[th.t0_degC],
                bft_degC=float(entry.bft_degC), field_focus=dict(thermal=thermal))  # fmt: skip


def test_exact_optics_recover_the_common_shift():
    entry = make_camera(3, bft_degC=-78.0, exact=False, n_wavelengths=3)
    temp = -75.5
    f = emulate_imagettes(entry, temp, 20, seed=4, n_wavelengths=4)
    g_true = float(f.truth["dz_th_um"] - f.truth["dz_bf_um"])
    report = _exact_report(entry, f.stars["theta_deg"], f.stars["phi_deg"])
    fc = forward_focus_check(f, temp, report, n_wavelengths=4)
    assert fc.n_used >= 12
    assert abs(fc.shift_um - g_true) < 4 * fc.shift_sigma_stat_um
    assert fc.chi2_reduced < 1.3 and fc.sigma_calibrated and not fc.outside_model
    # the recommended change reaches the truth's T_BF within its sigma's few multiples
    assert abs(fc.target_degC - entry.bft_degC) < 4 * fc.delta_t_sigma_degC + 1e-3


def test_the_residual_terms_reproduce_the_table_at_the_ground_positions():
    entry = make_camera(5, bft_degC=-80.0, exact=False, n_wavelengths=3)
    th = np.array([3.0, 8.0, 12.0, 16.0])
    ph = np.array([40.0, 130.0, 220.0, 310.0])
    report = _exact_report(entry, th, ph)
    report["params"].update(astig_A_nm=50.0, coma_C_nm=-30.0, sph_2_nm=20.0, curv_c2_um=5.0)
    opt = FittedOptics.from_report(report)
    # the table holds smooth + residual: a non-zero smooth model leaves the sum unchanged
    u = opt.local_terms(th, ph, opt.ccd)
    z5 = np.array([w["Z5_nm"] for w in report["wavefront"]])
    focal = np.array([w["focal_offset_um"] for w in report["wavefront"]])
    np.testing.assert_allclose(u[:, 1], z5, atol=1e-9)
    np.testing.assert_allclose(u[:, 0], focal, atol=1e-9)


def test_optics_unlike_the_imagettes_are_flagged_and_sigma_widened():
    """A report whose wavefront is off by 80 nm of coma everywhere fits the imagettes worse
    than calibration saw: flagged outside the model, sigma no longer calibrated."""
    entry = make_camera(3, bft_degC=-78.0, exact=False, n_wavelengths=3)
    f = emulate_imagettes(entry, -75.5, 20, seed=4, n_wavelengths=4)
    report = _exact_report(entry, f.stars["theta_deg"], f.stars["phi_deg"])
    for row in report["wavefront"]:
        row["Z7_nm"] += 80.0
        row["Z8_nm"] -= 80.0
    fc = forward_focus_check(f, -75.5, report, n_wavelengths=4)
    assert fc.chi2_reduced > FORWARD_CHI2_CALIBRATED
    assert fc.outside_model and not fc.sigma_calibrated
    assert fc.shift_sigma_um == pytest.approx(UNCALIBRATED_SHIFT_SIGMA_UM)
    assert any("outside what the model knows" in w for w in fc.warnings)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(fit="cnn"), "not a forward-model report"),
        (dict(field_focus=None), "field_focus"),
        (dict(wavefront=[]), "wavefront"),
    ],
)
def test_a_report_that_is_no_forward_fit_is_refused(change, message):
    entry = make_camera(3, bft_degC=-78.0, exact=False, n_wavelengths=3)
    report = _exact_report(entry, np.array([5.0]), np.array([10.0]))
    report.update(change)
    with pytest.raises(ParameterError, match=message):
        FittedOptics.from_report(report)
