"""The three PSF engines: physics checks of the fast engine, agreement of the references.

Everything is deterministic (no random numbers); small sizes keep the module fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from astropy.io import fits
from scipy.special import j0, j1

from plato_sim.cli import main as plato_sim_main
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA
from plato_sim.optics.model import OpticalModel
from plato_sim.optics.spectra import Spectrum, monochromatic
from plato_sim.optics.wavefront import N_ZERNIKE, dz_to_z4_nm
from plato_sim.psf import FastEngine, get_engine
from plato_sim.psf.galsim_engine import GalSimEngine
from plato_sim.psf.poppy_engine import PoppyEngine, pixel_integrate_fine
from plato_sim.truth.eef import eef

CAM = PLATO_NORMAL_CAMERA
N_F = CAM.f_number
PIX_UM = CAM.pixel_um


def _z(**terms: float) -> np.ndarray:
    """One achromatic state ``(1, J)``: ``_z(z4=..., z8=...)`` in nm RMS."""
    z = np.zeros((1, N_ZERNIKE))
    for k, v in terms.items():
        z[0, int(k[1:]) - 1] = v
    return z


def _centroid_px(stamp: np.ndarray) -> tuple[float, float]:
    """(x, y) first moment of a stamp, pixels."""
    yy, xx = np.indices(stamp.shape)
    s = stamp.sum()
    return float((stamp * xx).sum() / s), float((stamp * yy).sum() / s)


# ---------------------------------------------------------------- fast engine: analytic physics
def test_airy_otf_matches_circular_pupil_mtf():
    """No aberration, one wavelength: the OTF is the analytic MTF of a circular pupil.

    Known, small: the fast engine normalises the OTF by the autocorrelation of its
    soft-edged (grey) pupil at zero lag, sum(a^2), where the hard disk has sum(a); this lifts
    every non-zero frequency by ~0.33 % at fov_px=16 and ~0.1 % at fov_px=48 (the pupil
    step scales as 1/fov_px).  Hence fov_px=48 and a 1.5e-3 tolerance here.
    """
    lam_nm = 700.0
    eng = FastEngine(diffusion_sigma_px=0.0, fov_px=48, dtype=torch.float64)
    sp = monochromatic(lam_nm)
    otf = eng.otf(np.zeros((1, 1, N_ZERNIKE)), sp)[0].numpy()
    k = (otf.shape[0] - 1) // 2
    q = np.arange(0, k + 1)
    nu = q / eng.fov_um * lam_nm * 1e-3 * N_F  # frequency / optical cut-off
    inside = nu < 1
    nu_in = nu[inside]
    mtf = 2 / np.pi * (np.arccos(nu_in) - nu_in * np.sqrt(1 - nu_in**2))
    got = otf[k, : k + 1][inside]
    np.testing.assert_allclose(got.real, mtf, atol=1.5e-3)
    assert np.abs(got.imag).max() < 1e-9
    assert np.abs(otf[k, : k + 1][~inside]).max() < 2e-3


def test_airy_encircled_energy_matches_analytic():
    """Encircled energy of the unaberrated monochromatic PSF, from the engine's OTF (which
    the stamps are made of, before the pixel box), against 1 - J0^2(x) - J1^2(x)."""
    lam_nm = 700.0
    eng = FastEngine(diffusion_sigma_px=0.0, fov_px=48, dtype=torch.float64)
    sp = monochromatic(lam_nm)
    otf = eng.otf(np.zeros((1, 1, N_ZERNIKE)), sp)[0].numpy()
    k = (otf.shape[0] - 1) // 2
    period_um = eng.fov_um
    fy = np.arange(-k, k + 1)[:, None] / period_um
    fx = np.arange(0, k + 1)[None, :] / period_um
    f = np.hypot(fx, fy)
    w = np.full(fx.shape, 2.0)
    w[:, 0] = 1.0  # Hermitian half plane
    lam_n_um = lam_nm * 1e-3 * N_F
    for r_um in (1.0, 2.0, 4.0, 8.0, 20.0):
        # energy in a disk = sum_f OTF(f) * FT(disk)(f) / period^2 (periodic image, exact)
        with np.errstate(invalid="ignore", divide="ignore"):
            disk_ft = np.where(f > 0, r_um * j1(2 * np.pi * r_um * f) / f, np.pi * r_um**2)
        ee = float((w * otf.real * disk_ft).sum() / period_um**2)
        x = np.pi * r_um / lam_n_um
        expected = 1 - j0(x) ** 2 - j1(x) ** 2
        assert ee == pytest.approx(expected, abs=2.5e-3), r_um


def test_airy_stamp_big_boxes_hold_the_flux():
    """Pixel-integrated Airy stamp: ensquared energy of big boxes against the analytic wing
    energy (beyond radius r, 1 - EE(r) ~ 2 lambda N / (pi^2 r) for r >> lambda N).

    The box lies between its inscribed and circumscribed circles; the 1e-3 slack covers the
    engine's grey-pupil normalisation (~0.1 % at fov_px=48, see the MTF test)."""
    lam_nm = 700.0
    eng = FastEngine(diffusion_sigma_px=0.0, fov_px=48, dtype=torch.float64)
    st = eng.render(_z(), monochromatic(lam_nm), size=48)[0]
    c = 24
    lam_n_um = lam_nm * 1e-3 * N_F
    for half in (2, 5, 10):
        box = st[c - half : c + half + 1, c - half : c + half + 1].sum()
        r_in = (half + 0.5) * PIX_UM  # inscribed circle
        r_out = r_in * math.sqrt(2.0)  # circumscribed circle
        lo = 1 - 2 * lam_n_um / (np.pi**2 * r_in)
        hi = 1 - 2 * lam_n_um / (np.pi**2 * r_out)
        assert lo - 1e-3 <= box <= hi + 1e-3, (half, box, lo, hi)


def test_geometric_blur_diameter_is_dz_over_n():
    """Large defocus: a uniform disk of diameter dz / N."""
    dz_um = 500.0
    eng = FastEngine(diffusion_sigma_px=0.0, fov_px=32)
    st = eng.render(_z(z4=float(dz_to_z4_nm(dz_um, N_F))), monochromatic(700.0), size=32)[0]
    plateau = np.median(st[13:20, 13:20])
    # pixels straddling the rim hold their covered fraction: the half-level count is the area
    area_px = float((st > 0.5 * plateau).sum())
    diameter_um = 2 * math.sqrt(area_px / math.pi) * PIX_UM
    assert diameter_um == pytest.approx(dz_um / N_F, rel=0.04)
    # flat top: the central pixels agree to a few percent (diffraction ripples)
    assert np.std(st[14:19, 14:19]) / plateau < 0.06


def test_subpixel_offset_moves_centroid():
    """A defocused PSF (disk ~8 px wide) moves by exactly the sub-pixel offset.

    For a compact PSF the pixel-integrated centroid is *not* the star position (pixel-phase
    bias), hence the defocus here.
    """
    eng = FastEngine(fov_px=32, dtype=torch.float64)
    z = _z(z4=float(dz_to_z4_nm(300.0, N_F)))
    offs = np.array([[[0.0, 0.0], [0.3, -0.2], [-0.45, 0.4]]])
    st = eng.render(z, monochromatic(700.0), offs, size=32)[0]
    x0, y0 = _centroid_px(st[0])
    assert (x0, y0) == pytest.approx((16.0, 16.0), abs=2e-3)
    for k in (1, 2):
        x, y = _centroid_px(st[k])
        assert x - x0 == pytest.approx(offs[0, k, 0], abs=5e-3)
        assert y - y0 == pytest.approx(offs[0, k, 1], abs=5e-3)


def test_fast_flux_normalised():
    eng = FastEngine(fov_px=32)
    sp = Spectrum((550.0, 750.0, 950.0), (0.3, 0.4, 0.3))
    st = eng.render(np.repeat(_z(z4=50.0)[:, None, :], 3, axis=1), sp, size=32)
    assert st.sum() == pytest.approx(1.0, abs=1e-3)
    assert st.min() > -1e-5


# ---------------------------------------------------------------- reference engines
def _poppy(**kw) -> PoppyEngine:
    return PoppyEngine(**kw)


def _galsim(**kw) -> GalSimEngine:
    return GalSimEngine(**kw)


@pytest.mark.parametrize("name", ["fast", "poppy", "galsim"])
def test_flux_normalisation_all_engines(name):
    """A compact PSF in a 24 px stamp holds all its light but the far diffraction wings."""
    eng = get_engine(name)
    sp = Spectrum((600.0, 800.0), (0.5, 0.5))
    st = eng.render(_z(z4=30.0, z11=100.0), sp, size=24)[0]
    assert st.sum() == pytest.approx(1.0, abs=2e-3)
    assert st.sum() <= 1.0 + 1e-4
    assert st.min() > -1e-4


@pytest.mark.parametrize("name", ["fast", "poppy", "galsim"])
def test_positive_z2_moves_image_to_minus_x(name):
    """wavefront.py: the image of a ray is displaced by -f grad W, so +Z2 moves it to -x."""
    z2_nm = 2000.0
    dz_um = 150.0  # defocus: a ~4 px disk, centroid free of pixel-phase bias
    eng = get_engine(name)
    sp = monochromatic(700.0)
    z0 = _z(z4=float(dz_to_z4_nm(dz_um, N_F)))
    z1 = z0.copy()
    z1[0, 1] = z2_nm
    size = 20
    a = eng.render(z0, sp, size=size)[0]
    b = eng.render(z1, sp, size=size)[0]
    # W = z2 * 2 x / R on the pupil: image shift -f * 2 z2 / R = -4 N z2
    expected_px = -4 * N_F * z2_nm * 1e-3 / PIX_UM
    (xa, ya), (xb, yb) = _centroid_px(a), _centroid_px(b)
    assert xb - xa == pytest.approx(expected_px, abs=0.03)
    assert abs(yb - ya) < 0.01


@pytest.mark.parametrize("name", ["poppy", "galsim"])
def test_coma_orientation_pixel_by_pixel(name):
    """Coma (asymmetric): the references agree with the fast engine pixel by pixel, and a 180
    degree rotation of the fast stamp would not."""
    fast = FastEngine(fov_px=24, dtype=torch.float64)
    ref = get_engine(name)
    z = _z(z4=float(dz_to_z4_nm(20.0, N_F)), z7=150.0, z8=300.0)
    sp = monochromatic(700.0)
    off = np.array([[0.2, -0.1]])
    a = fast.render(z, sp, off, size=24)[0]
    b = ref.render(z, sp, off, size=24)[0]
    diff = np.abs(a - b).max()
    assert diff < 2e-3, diff
    rot = np.abs(np.rot90(a, 2)[1:, 1:] - b[:-1, :-1]).max()
    assert rot > 5 * diff, (rot, diff)


@pytest.mark.parametrize("name", ["poppy", "galsim"])
def test_reference_agreement_polychromatic(name):
    """One realistic polychromatic state at an off-axis field: EEF within 0.01 and every
    pixel within 1 % of the flux (the benchmark's criteria, at reduced resolution)."""
    optics = OpticalModel()
    sp = Spectrum((550.0, 700.0, 900.0), (0.35, 0.4, 0.25))
    z = optics.zernikes_nm(12.0, 130.0, 40.0, sp.wavelengths_array_nm)
    off = np.array([[-0.3, 0.25]])
    a = FastEngine().render(z, sp, off, size=24)[0]
    b = get_engine(name).render(z, sp, off, size=24)[0]
    assert abs(eef(a) - eef(b)) < 0.01
    assert np.abs(a - b).max() < 0.01


def test_galsim_chromatic_mode_matches_sum_mode():
    sp = Spectrum((550.0, 700.0, 850.0), (0.3, 0.4, 0.3))
    z = _z(z4=60.0, z6=80.0, z11=150.0)
    a = _galsim().render(z, sp, size=20)[0]
    b = _galsim(mode="chromatic").render(z, sp, size=20)[0]
    assert abs(eef(a) - eef(b)) < 0.01
    assert np.abs(a - b).max() < 0.01


def test_pixel_integrate_fine_conserves_flux_and_centres():
    """A flat fine image integrates to one flux per pixel area; a centred Gaussian stays
    centred on the central pixel."""
    os_ = 5
    flat = np.full((7 * os_, 7 * os_), 1.0 / os_**2)
    out = pixel_integrate_fine(flat, os_, 0.3, start=(os_ - 1) // 2)
    np.testing.assert_allclose(out, 1.0, atol=1e-12)
    yy, xx = (np.indices((7 * os_, 7 * os_)) - (7 * os_ - 1) / 2) / os_
    g = np.exp(-(xx**2 + yy**2) / (2 * 0.8**2))
    g /= g.sum()
    out = pixel_integrate_fine(g, os_, 0.0, start=(os_ - 1) // 2)
    assert out.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.unravel_index(np.argmax(out), out.shape) == (3, 3)
    np.testing.assert_allclose(out, out.T, atol=1e-12)


def test_bad_engine_parameters_are_rejected():
    with pytest.raises(ValueError, match="oversample"):
        PoppyEngine(oversample=40)
    with pytest.raises(ValueError, match="Nyquist"):
        PoppyEngine(oversample=11).render(_z(), monochromatic(500.0), size=8)
    with pytest.raises(ValueError, match="mode"):
        GalSimEngine(mode="fancy")
    sp = Spectrum((600.0, 800.0), (0.5, 0.5))
    z = np.zeros((1, 2, N_ZERNIKE))
    z[0, 1, 3] = 10.0  # wavelength-dependent defocus
    with pytest.raises(ValueError, match="must not vary with wavelength"):
        GalSimEngine(mode="chromatic").render(z, sp, size=8)
    with pytest.raises(ValueError, match="unknown engine"):
        get_engine("zemax")


# ---------------------------------------------------------------- CLI
@pytest.mark.parametrize("name", ["fast", "poppy", "galsim"])
def test_cli_psf_writes_fits_with_header(tmp_path, name):
    out = tmp_path / f"psf_{name}.fits"
    argv = ["psf", "--engine", name, "--field-deg", "9", "--phi-deg", "45"]
    argv += ["--defocus-um", "-50", "--offset-px", "-0.2,0.1", "--wavelength-nm", "700"]
    argv += ["--size", "16", "--out", str(out)]
    assert plato_sim_main(argv) == 0
    with fits.open(out) as hdul:
        h = hdul[0].header
        data = hdul[0].data
        assert data.shape == (16, 16)
        assert h["ENGINE"] == name
        assert h["FIELDTH"] == 9.0 and h["FIELDPHI"] == 45.0
        assert h["DZTH_UM"] == -50.0
        assert h["OFFX_PX"] == pytest.approx(-0.2) and h["OFFY_PX"] == pytest.approx(0.1)
        assert h["NLAMBDA"] == 1 and h["LAM_MIN"] == 700.0
        for key in ("CAMERA", "DZLOC_UM", "SPECTRUM", "DIFF_PX", "PIXEL_UM", "FNUMBER"):
            assert key in h
        assert 0.95 < float(data.sum()) <= 1.0001


def test_per_star_weights_equal_each_stars_own_spectrum():
    """otf(z, sp, weights) row b = otf(z[b], spectrum with those weights) (same nodes)."""
    from plato_sim.optics.spectra import ogse_spectrum, recoloured

    eng = FastEngine()
    sp = ogse_spectrum(eng.camera, 3)
    red = recoloured(sp, 0.8, -0.2)
    z = np.stack([_z(z4=60.0, z7=40.0)[0], _z(z4=-30.0, z11=50.0)[0]])
    z = np.repeat(z[:, None, :], sp.n, axis=1)
    w = np.stack([sp.weights_array, red.weights_array])
    with torch.no_grad():
        got = eng.otf(z, sp, w)
        torch.testing.assert_close(got[0:1], eng.otf(z[0:1], sp))
        torch.testing.assert_close(got[1:2], eng.otf(z[1:2], red))
        assert not torch.allclose(got[1:2], eng.otf(z[1:2], sp))
    with pytest.raises(ValueError, match="weights must be"):
        eng.otf(z, sp, w[:, :2])
    with pytest.raises(ValueError, match="sum to 1"):
        eng.otf(z, sp, 2.0 * w)
