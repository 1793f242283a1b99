"""High-level PSF calls: a stamp for a field position and focal shift, and its FITS file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from plato_sim._version import __version__
from plato_sim.errors import ParameterError
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, Camera
from plato_sim.optics.model import OpticalModel
from plato_sim.optics.spectra import Spectrum, monochromatic, ogse_spectrum
from plato_sim.psf import PSFEngine, get_engine

__all__ = ["psf_stamp", "write_psf_fits"]


def psf_stamp(
    engine: PSFEngine,
    optics: OpticalModel,
    theta_deg: float,
    phi_deg: float,
    dz_th_um: float,
    offset_px: tuple[float, float] = (0.0, 0.0),
    spectrum: Spectrum | None = None,
    size: int = 32,
) -> np.ndarray:
    """One flux-normalised stamp ``(size, size)`` of a star of this camera.

    Args:
        engine: any PSF engine.
        optics: the camera's optical model.
        theta_deg, phi_deg: field position (deg).
        dz_th_um: thermal focal shift (um, > 0 behind focus).
        offset_px: sub-pixel offset ``(dx, dy)`` (pixels).
        spectrum: default the OGSE spectrum with 10 wavelengths.
        size: stamp side (pixels).
    """
    sp = spectrum or ogse_spectrum(optics.camera)
    z = optics.zernikes_nm(theta_deg, phi_deg, dz_th_um, sp.wavelengths_array_nm)
    return engine.render(z, sp, np.asarray([offset_px], dtype=float), size)[0]


def _check_request(
    camera: Camera, theta_deg: float, wavelength_nm: float | None, n_wavelengths: int, size: int
) -> None:
    """Refuse a stamp this camera cannot make, naming the value and its allowed range."""
    if not 0.0 <= theta_deg <= camera.field_radius_deg:
        raise ParameterError(
            f"field angle {theta_deg} deg outside the camera's field [0, "
            f"{camera.field_radius_deg}] deg"
        )
    lo, hi = camera.band_nm
    if wavelength_nm is not None and not lo <= wavelength_nm <= hi:
        raise ParameterError(
            f"wavelength {wavelength_nm} nm outside the camera's band [{lo:g}, {hi:g}] nm"
        )
    if int(n_wavelengths) < 1:
        raise ParameterError(f"n_wavelengths must be >= 1, got {n_wavelengths}")
    if int(size) < 4:
        raise ParameterError(f"size must be >= 4 pixels, got {size}")


def write_psf_fits(
    out: str | Path,
    engine: str = "fast",
    theta_deg: float = 0.0,
    phi_deg: float = 0.0,
    dz_th_um: float = 0.0,
    offset_px: tuple[float, float] = (0.0, 0.0),
    wavelength_nm: float | None = None,
    n_wavelengths: int = 10,
    size: int = 32,
    camera_yaml: str | None = None,
) -> Path:
    """Render one stamp and write it as a FITS image whose header records every parameter.

    Raises:
        ParameterError: a field angle outside ``[0, camera.field_radius_deg]``, a wavelength
            outside the camera's band, ``n_wavelengths < 1`` or ``size < 4``.
    """
    camera = Camera.from_yaml(camera_yaml) if camera_yaml else PLATO_NORMAL_CAMERA
    _check_request(camera, theta_deg, wavelength_nm, n_wavelengths, size)
    optics = OpticalModel(camera=camera)
    sp = (
        monochromatic(wavelength_nm)
        if wavelength_nm is not None
        else ogse_spectrum(camera, n_wavelengths)
    )
    eng = get_engine(engine, camera=camera)
    stamp = psf_stamp(eng, optics, theta_deg, phi_deg, dz_th_um, offset_px, sp, size)
    hdu = fits.PrimaryHDU(stamp.astype(np.float32))
    h = hdu.header
    h["ENGINE"] = (engine, "PSF engine")
    h["CAMERA"] = (camera.name, "camera model")
    h["FIELDTH"] = (theta_deg, "field angle theta (deg)")
    h["FIELDPHI"] = (phi_deg, "field azimuth phi (deg)")
    h["DZTH_UM"] = (dz_th_um, "thermal focal shift dz_th (um, >0 behind focus)")
    h["DZLOC_UM"] = (
        float(optics.local_focal_offset_um(theta_deg, phi_deg, dz_th_um)),
        "achromatic local focal offset (um)",
    )
    h["OFFX_PX"] = (offset_px[0], "sub-pixel offset dx (pixels)")
    h["OFFY_PX"] = (offset_px[1], "sub-pixel offset dy (pixels)")
    h["SPECTRUM"] = (sp.name, "spectrum")
    h["NLAMBDA"] = (sp.n, "number of wavelength samples")
    h["LAM_MIN"] = (min(sp.wavelengths_nm), "shortest wavelength (nm)")
    h["LAM_MAX"] = (max(sp.wavelengths_nm), "longest wavelength (nm)")
    h["DIFF_PX"] = (eng.diffusion_sigma_px, "charge diffusion sigma (pixels)")
    h["PIXEL_UM"] = (camera.pixel_um, "pixel size (um)")
    h["FNUMBER"] = (camera.f_number, "f-number")
    h["BUNIT"] = ("fraction", "fraction of the star's detected photons")
    h["CENTRE"] = (size // 2, "0-based index of the stamp's central pixel")
    h["VERSION"] = (__version__, "plato-focus version")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    hdu.writeto(out, overwrite=True)
    return out
