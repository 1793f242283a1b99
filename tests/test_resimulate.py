"""Tabulated cameras and the re-simulation of a camera fitted by the forward method."""

from __future__ import annotations

import numpy as np
import pytest

from plato_cnn.reader import read_campaign
from plato_cnn.resimulate import fitted_camera, resimulate_campaign, resimulated_labels
from plato_sim.errors import ParameterError
from plato_sim.optics.model import CameraModel
from plato_sim.optics.spectra import ogse_spectrum
from plato_sim.optics.tabulated import TabulatedOptics
from plato_sim.optics.wavefront import dz_to_z4_nm
from plato_sim.psf.base import DEFAULT_DIFFUSION_SIGMA_PX
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.fields import ground_test_fields
from plato_sim.truth.bestfocus import t0_for_best_focus

LAMBDA_NM = np.array([550.0, 700.0, 850.0])


def _design_camera(seed: int = 3):
    theta, phi = ground_test_fields(5)
    return CameraModel.random(np.random.default_rng(seed), seed), theta, phi


def _tabulate(cam, theta, phi) -> TabulatedOptics:
    z = cam.optics.zernikes_nm(theta, phi, 0.0, np.array([700.0]))[:, 0, :]
    tab = np.zeros((len(theta), 18))
    tab[:, : z.shape[1] - 4] = z[:, 4:]
    return TabulatedOptics(
        theta_deg=tuple(theta), phi_deg=tuple(phi),
        focal_offset_um=tuple(cam.optics.field_focal_offset_um(theta, phi)), zernike_nm=tab,
        chrom_scale=cam.optics.perturbation.chrom_scale, chrom_lin_um=0.0,
    )  # fmt: skip


def test_tabulated_optics_reproduce_the_camera_at_its_positions():
    """A design camera tabulated at its field positions gives its Noll coefficients per
    wavelength (Z4 with the thermal, field and chromatic focal terms) exactly there, and
    refuses a position that is not in the table."""
    cam, theta, phi = _design_camera()
    tab = _tabulate(cam, theta, phi)
    want = cam.optics.zernikes_nm(theta, phi, 12.5, LAMBDA_NM)
    got = tab.zernikes_nm(theta, phi, 12.5, LAMBDA_NM)
    np.testing.assert_allclose(got[..., : want.shape[2]], want, rtol=1e-12, atol=1e-9)
    assert np.all(got[..., want.shape[2] :] == 0.0)
    np.testing.assert_allclose(
        tab.local_focal_offset_um(theta, phi, 3.0, 620.0),
        cam.optics.local_focal_offset_um(theta, phi, 3.0, 620.0), rtol=1e-12,
    )  # fmt: skip
    with pytest.raises(ParameterError, match="not in the table"):
        tab.zernikes_nm([theta[0] + 0.5], [phi[0]], 0.0, LAMBDA_NM)
    with pytest.raises(ParameterError, match="zernike_nm"):
        TabulatedOptics((1.0,), (0.0,), (0.0,), np.zeros((1, 11)))


def _report(cam, theta, phi, t_bf, plateaux=(-86.0, -80.0, -74.0), q=0.0):
    """A forward report describing ``cam`` exactly (what a perfect fit would give)."""
    t_ref = float(np.mean(plateaux))
    s, t0 = cam.thermal.s_um_per_degC, cam.thermal.t0_degC
    z = cam.optics.zernikes_nm(theta, phi, 0.0, np.array([700.0]))[:, 0, :]
    rows = []
    for f in range(len(theta)):
        dz = float(cam.optics.field_focal_offset_um(theta[f], phi[f]))
        row = {"theta_deg": float(theta[f]), "phi_deg": float(phi[f]), "focal_offset_um": dz}
        for j in range(5, 23):
            row[f"Z{j}_nm"] = float(z[f, j - 1]) if j <= z.shape[1] else 0.0
        rows.append(row)
    params = {"b_um": s * (t_ref - t0) + q * (t_ref - t0) ** 2,
              "s_um_per_degC": s + 2 * q * (t_ref - t0), "q_um_per_degC2": q,
              "chrom_scale": cam.optics.perturbation.chrom_scale, "chrom_lin_um": 0.0,
              "diffusion_sigma_px": DEFAULT_DIFFUSION_SIGMA_PX}  # fmt: skip
    return {"params": params, "wavefront": rows, "plateaux_degC": list(plateaux),
            "t0_degC": t0, "bft_degC": t_bf}  # fmt: skip


def test_fitted_camera_keeps_the_reports_thermal_model_and_wavefront():
    """The thermal model is the report's ``b + s dT + q dT^2`` about T_ref rewritten about
    its zero; Z4 at a field is the thermal plus that field's focal offset."""
    cam, theta, phi = _design_camera()
    rep = _report(cam, theta, phi, -79.0, q=0.03)
    got = fitted_camera(rep)
    p, t = rep["params"], np.array([-90.0, -80.0, -71.5])
    d = t - np.mean(rep["plateaux_degC"])
    want = p["b_um"] + p["s_um_per_degC"] * d + p["q_um_per_degC2"] * d * d
    np.testing.assert_allclose(got.thermal.focal_shift_um(t), want, rtol=1e-10, atol=1e-9)
    assert got.thermal.focal_shift_um(cam.thermal.t0_degC) == pytest.approx(0.0, abs=1e-9)
    z4 = got.optics.zernikes_nm(theta, phi, 7.0, [700.0])[:, 0, 3]
    np.testing.assert_allclose(z4, dz_to_z4_nm(7.0 + cam.optics.field_focal_offset_um(theta, phi),
                                               cam.optics.camera.f_number), rtol=1e-12)  # fmt: skip
    assert got.diffusion_sigma_px == DEFAULT_DIFFUSION_SIGMA_PX
    with pytest.raises(ParameterError, match="not a forward report"):
        fitted_camera({"params": {}, "wavefront": []})


def test_resimulated_campaign_of_an_exact_report_is_the_camera(tmp_path):
    """A report that describes a camera exactly, re-simulated: the emulator puts its thermal
    zero where the camera's is (same optics, same T_BF), the campaign reads back, and the
    labels are each frame's thermal shift less its field's optimum: negative on the cold
    plateau, positive on the warm one (s > 0)."""
    eng = FastEngine(diffusion_sigma_px=DEFAULT_DIFFUSION_SIGMA_PX)
    cam, theta, phi = _design_camera()
    sp = ogse_spectrum(cam.optics.camera, 3)
    cam, bf = t0_for_best_focus(cam, -79.0, theta_deg=theta, phi_deg=phi, spectrum=sp, engine=eng,
                                n_sub=2)  # fmt: skip
    rep = _report(cam, theta, phi, bf.bft_degC)
    emulated, truth = resimulate_campaign(
        rep, tmp_path / "resim", (-85.0, -73.0), n_dithers=1, frames_per_dither=1,
        n_sub_truth=2, window_px=32, n_background_frames=1, n_wavelengths=3,
    )  # fmt: skip
    assert truth["family"] == "tabulated" and truth["bft_degC"] == pytest.approx(bf.bft_degC)
    assert emulated.thermal.t0_degC == pytest.approx(cam.thermal.t0_degC, abs=0.01)
    fr = read_campaign(tmp_path / "resim")
    fr = fr.select(fr.usable)
    assert len(fr) == 2 * len(theta)
    lab = resimulated_labels(fr, emulated, n_sub=2)
    cold = fr.temperature_degC < -80
    assert np.all(lab[cold] < -40) and np.all(lab[~cold] > 40)
