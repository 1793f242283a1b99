"""The imagette file (version 1): star windows at one TRP1 temperature, one FITS file.

What PLATO downlinks for focus monitoring, as the emulator writes it and the in-orbit
estimator (``plato-cnn focus-check``) reads it:

* primary HDU, no data.  Header: ``FORMAT`` = ``PLATO-FOCUS-IMAGETTES``, ``FMTVER`` = 1,
  ``CAMERA`` (id), ``TRP1_T`` (TRP1 temperature during the exposure, degC), ``EXPTIME`` (s),
  ``CYCLETIM`` (s), ``GAIN`` (e-/ADU), ``DATE-OBS`` (UTC, ISO 8601), ``NSTARS``;
* image extension ``IMAGETTES``: unsigned 16-bit raw ADU stored the FITS way (BITPIX = 16,
  BZERO = 32768), shape ``(stars, rows, columns)``, each window in its CCD's pixel axes
  (rows and columns increasing with the CCD row and column indices), offset included;
* binary table ``STARS``, one row per window in the cube's order: ``STAR_ID`` (int),
  ``CCD`` (1-4), ``ROW0``, ``COL0`` (CCD row and column of the window's first pixel,
  0-based), ``ROW``, ``COL`` (catalogue star position on the CCD, pixels), ``THETA``,
  ``PHI`` (field angle and azimuth, deg), ``VMAG``, ``TEFF`` (K, from the input catalogue);
* optional binary table ``TRUTH`` (emulated files only; an estimator never reads it): the
  camera's true best-focus temperature and thermal model in its header (``T_BF``,
  ``DELTA_T``, ``DZ_TH``, ``DZ_BF``, ``S_UMDC``, ``T0``, ``CAMID``, ``SEED``) and per-star
  true positions, fluxes, sky and focal offsets.

Every HDU carries FITS ``CHECKSUM``/``DATASUM`` cards; a file that fails them, or any other
rule above, is refused with :class:`ImagetteFormatError` naming the file and the reason.
The bytes depend only on the content (no write time is recorded).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from plato_sim.errors import ImagetteFormatError, ParameterError
from plato_sim.names import BFT_KEY, LegacyNameDict, normalise_keys

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ImagetteFormatError",
    "ImagetteField",
    "STAR_DTYPE",
    "STAR_TRUTH_DTYPE",
    "write_imagettes",
    "read_imagettes",
]

FORMAT_NAME = "PLATO-FOCUS-IMAGETTES"
FORMAT_VERSION = 1
IMAGE_EXT = "IMAGETTES"
STARS_EXT = "STARS"
TRUTH_EXT = "TRUTH"

# table column <-> STAR_DTYPE field, FITS format
_STAR_COLUMNS = (
    ("STAR_ID", "star_id", "K"),
    ("CCD", "ccd", "I"),
    ("ROW0", "row0", "J"),
    ("COL0", "col0", "J"),
    ("ROW", "row", "D"),
    ("COL", "col", "D"),
    ("THETA", "theta_deg", "D"),
    ("PHI", "phi_deg", "D"),
    ("VMAG", "v_mag", "E"),
    ("TEFF", "teff_K", "E"),
)
_STAR_UNITS = {"THETA": "deg", "PHI": "deg", "TEFF": "K", "ROW": "pix", "COL": "pix"}
_TRUTH_COLUMNS = (
    ("TRUE_ROW", "true_row", "D"),
    ("TRUE_COL", "true_col", "D"),
    ("FLUX_E", "flux_e", "D"),
    ("SKY_E", "sky_e_per_px", "D"),
    ("DZ_FBEST", "dz_field_best_um", "D"),
    ("DZ_DELTA", "dz_from_best_um", "D"),
    ("SATURATD", "saturated", "B"),
)
_TRUTH_KEYS = (
    ("T_BF", BFT_KEY, "true best-focus TRP1 temperature (degC)"),
    ("DELTA_T", "delta_t_degC", "T_BF - TRP1_T: change to best focus (degC)"),
    ("DZ_TH", "dz_th_um", "thermal focal shift at TRP1_T (um)"),
    ("DZ_BF", "dz_bf_um", "thermal focal shift at best focus (um)"),
    ("S_UMDC", "s_um_per_degC", "thermal sensitivity (um/degC)"),
    ("T0", "t0_degC", "TRP1 of zero thermal focal shift (degC)"),
    ("CAMID", "camera_id", "emulated camera perturbation id"),
    ("SEED", "seed", "emulation seed"),
)
_HEADER_KEYS = (
    ("CAMERA", "camera", str, "camera id"),
    ("TRP1_T", "trp1_degC", float, "TRP1 temperature during the exposure (degC)"),
    ("EXPTIME", "exptime_s", float, "exposure time (s)"),
    ("CYCLETIM", "cycle_s", float, "cycle time (s)"),
    ("GAIN", "gain_e_per_adu", float, "detector gain (e-/ADU)"),
    ("DATE-OBS", "date_obs", str, "UTC time of the exposure"),
)


@dataclass
class ImagetteField:
    """Imagettes of one camera at one TRP1 temperature (what the FITS file holds).

    Attributes:
        imagettes: ``(N, H, W)`` uint16 raw ADU in the CCD's axes.
        stars: ``(N,)`` structured array: ``star_id, ccd, row0, col0`` (window first pixel,
            0-based CCD row and column), ``row, col`` (catalogue star position, pixels),
            ``theta_deg, phi_deg, v_mag, teff_K``.
        header: ``trp1_degC, exptime_s, cycle_s, gain_e_per_adu, camera, date_obs``.
        truth: None for real data; for emulated fields the camera's ``bft_degC``,
            ``dz_th_um`` (at this temperature), ``dz_bf_um``, ``s_um_per_degC``, ``t0_degC``,
            ``delta_t_degC`` (= T_BF - T: the TRP1 change that reaches best focus) and
            per-star ``star_truth`` (structured: true row/col, flux_e, sky_e_per_px,
            dz_field_best_um, dz_from_best_um, saturated).
    """

    imagettes: np.ndarray
    stars: np.ndarray
    header: dict
    truth: dict | None = field(default=None)


STAR_DTYPE = np.dtype(
    [
        ("star_id", "i8"),
        ("ccd", "i2"),
        ("row0", "i4"),
        ("col0", "i4"),
        ("row", "f8"),
        ("col", "f8"),
        ("theta_deg", "f8"),
        ("phi_deg", "f8"),
        ("v_mag", "f4"),
        ("teff_K", "f4"),
    ]
)
STAR_TRUTH_DTYPE = np.dtype(
    [
        ("true_row", "f8"),
        ("true_col", "f8"),
        ("flux_e", "f8"),
        ("sky_e_per_px", "f8"),
        ("dz_field_best_um", "f8"),
        ("dz_from_best_um", "f8"),
        ("saturated", "u1"),
    ]
)


def write_imagettes(path: str | Path, data: ImagetteField, overwrite: bool = False) -> Path:
    """Write an :class:`ImagetteField` as one FITS file."""
    path = Path(path)
    cube = np.asarray(data.imagettes)
    if cube.ndim != 3 or cube.dtype != np.uint16:
        raise ParameterError(f"{path}: imagettes must be a (N, H, W) uint16 cube, got {cube.dtype}")
    if len(data.stars) != cube.shape[0]:
        raise ParameterError(f"{path}: {len(data.stars)} star rows for {cube.shape[0]} imagettes")
    prim = fits.PrimaryHDU()
    h = prim.header
    h["FORMAT"] = (FORMAT_NAME, "plato-focus imagette file")
    h["FMTVER"] = (FORMAT_VERSION, "format version")
    for key, name, _, comment in _HEADER_KEYS:
        h[key] = (data.header[name], comment)
    h["NSTARS"] = (int(cube.shape[0]), "number of imagettes")
    img = fits.ImageHDU(cube, name=IMAGE_EXT)
    img.header["BUNIT"] = ("adu", "raw ADU including the electronic offset")
    stars = np.asarray(data.stars)
    cols = [
        fits.Column(name=c, format=f, array=stars[n], unit=_STAR_UNITS.get(c))
        for c, n, f in _STAR_COLUMNS
    ]
    hdus = [prim, img, fits.BinTableHDU.from_columns(cols, name=STARS_EXT)]
    if data.truth is not None:
        truth = normalise_keys(data.truth, "ImagetteField.truth")
        st = np.asarray(truth["star_truth"])
        tcols = [fits.Column(name=c, format=f, array=st[n]) for c, n, f in _TRUTH_COLUMNS]
        th = fits.BinTableHDU.from_columns(tcols, name=TRUTH_EXT)
        for key, name, comment in _TRUTH_KEYS:
            th.header[key] = (truth[name], comment)
        th.header["COMMENT"] = "simulation truth: never used by an estimator"
        hdus.append(th)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (use overwrite)")
    for hdu in hdus:  # fixed comments: the bytes depend on the content only
        hdu.add_datasum(when="data unit checksum")
        hdu.add_checksum(when="HDU checksum", override_datasum=True)
    fits.HDUList(hdus).writeto(path, overwrite=overwrite)
    return path


def _fail(path: Path, why: str) -> ImagetteFormatError:
    return ImagetteFormatError(f"{path}: {why}")


def read_imagettes(path: str | Path, with_truth: bool = True) -> ImagetteField:
    """Read and check an imagette file; raises :class:`ImagetteFormatError` on bad input.

    Checks: readable FITS with valid checksums; ``FORMAT``/``FMTVER``; every header key;
    the ``IMAGETTES`` cube is 3-D, unsigned 16-bit and finite; the ``STARS`` table has every
    column, one row per imagette, CCD ids in 1-4, finite positions, field angles within 0-90
    deg and the windows' first pixels on the CCD.  ``with_truth`` also returns the ``TRUTH``
    extension when present.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    size = path.stat().st_size
    if size == 0 or size % 2880:
        raise _fail(path, f"truncated FITS file ({size} bytes, not a multiple of 2880)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, checksum=True, memmap=False) as hdul:
                hdul.verify("exception")
                out = _read_open(path, hdul, with_truth)
        signs = ("checksum", "datasum", "non-ascii")
        bad = [
            str(w.message).strip()
            for w in caught
            if any(s in str(w.message).lower() for s in signs)
        ]
        if bad:
            raise _fail(path, f"corrupt file: {bad[0]}")
        return out
    except ImagetteFormatError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise _fail(path, f"unreadable or truncated FITS file ({exc})") from exc


def _read_open(path: Path, hdul: fits.HDUList, with_truth: bool) -> ImagetteField:
    h = hdul[0].header
    if h.get("FORMAT") != FORMAT_NAME:
        raise _fail(path, f"not an imagette file (FORMAT = {h.get('FORMAT')!r})")
    if h.get("FMTVER") != FORMAT_VERSION:
        raise _fail(path, f"format version {h.get('FMTVER')!r} (this reader: {FORMAT_VERSION})")
    header = {}
    for key, name, typ, _ in _HEADER_KEYS:
        if key not in h:
            raise _fail(path, f"primary header: missing key {key}")
        try:
            header[name] = typ(h[key])
        except (TypeError, ValueError) as exc:
            raise _fail(path, f"primary header: bad {key} = {h[key]!r}") from exc
    for key in ("TRP1_T", "EXPTIME", "GAIN"):
        if not np.isfinite(h[key]):
            raise _fail(path, f"primary header: {key} is not finite")
    if not (h["EXPTIME"] > 0 and h["GAIN"] > 0):
        raise _fail(path, "primary header: EXPTIME and GAIN must be > 0")
    names = [x.name for x in hdul]
    for ext in (IMAGE_EXT, STARS_EXT):
        if ext not in names:
            raise _fail(path, f"missing extension {ext} (not an imagette file, or truncated)")
    img = hdul[IMAGE_EXT]
    cube = img.data
    if cube is None or cube.ndim != 3:
        shape = None if cube is None else cube.shape
        raise _fail(
            path, f"extension {IMAGE_EXT}: expected a (stars, rows, columns) cube, got {shape}"
        )
    if not (img.header.get("BITPIX") == 16 and img.header.get("BZERO") == 32768):
        raise _fail(
            path, f"extension {IMAGE_EXT}: data must be unsigned 16-bit (BITPIX 16, BZERO 32768)"
        )
    cube = np.asarray(cube)
    if cube.dtype != np.uint16:
        raise _fail(path, f"extension {IMAGE_EXT}: data type {cube.dtype}, expected uint16")
    n = cube.shape[0]
    if n == 0 or min(cube.shape[1:]) < 3:
        raise _fail(path, f"extension {IMAGE_EXT}: empty or too small windows {cube.shape}")
    if "NSTARS" in h and int(h["NSTARS"]) != n:
        raise _fail(path, f"NSTARS = {h['NSTARS']} but the cube holds {n} imagettes")
    stars = _read_table(path, hdul[STARS_EXT], _STAR_COLUMNS, STAR_DTYPE, n, STARS_EXT)
    _check_stars(path, stars, cube.shape)
    truth = None
    if with_truth and TRUTH_EXT in names:
        th = hdul[TRUTH_EXT]
        st = _read_table(path, th, _TRUTH_COLUMNS, STAR_TRUTH_DTYPE, n, TRUTH_EXT)
        truth = LegacyNameDict(
            (name, th.header[key]) for key, name, _ in _TRUTH_KEYS if key in th.header
        )
        truth["star_truth"] = st
    return ImagetteField(cube, stars, header, truth)


def _read_table(path, hdu, columns, dtype, n, ext) -> np.ndarray:
    if not isinstance(hdu, fits.BinTableHDU):
        raise _fail(path, f"extension {ext}: expected a binary table")
    have = set(hdu.columns.names)
    missing = [c for c, _, _ in columns if c not in have]
    if missing:
        raise _fail(path, f"extension {ext}: missing column(s) {missing}")
    data = hdu.data
    if data is None or len(data) != n:
        got = 0 if data is None else len(data)
        raise _fail(path, f"extension {ext}: {got} rows for {n} imagettes")
    out = np.zeros(n, dtype=dtype)
    for c, name, _ in columns:
        col = np.asarray(data[c])
        if col.dtype.kind == "f" and not np.all(np.isfinite(col)):
            raise _fail(path, f"extension {ext}: column {c} holds NaN or infinite values")
        out[name] = col
    return out


def _check_stars(path: Path, stars: np.ndarray, shape: tuple[int, ...]) -> None:
    from plato_sim.optics.camera import PLATO_NORMAL_CAMERA

    bad_ccd = np.flatnonzero((stars["ccd"] < 1) | (stars["ccd"] > 4))
    if bad_ccd.size:
        i = int(bad_ccd[0])
        raise _fail(path, f"{STARS_EXT} row {i}: CCD {stars['ccd'][i]} not in 1-4")
    th = stars["theta_deg"]
    bad = np.flatnonzero((th < 0) | (th > 90))
    if bad.size:
        raise _fail(path, f"{STARS_EXT} row {int(bad[0])}: THETA = {th[bad[0]]} deg out of 0-90")
    n_pix = PLATO_NORMAL_CAMERA.ccd_pixels
    for key, size in (("row0", shape[1]), ("col0", shape[2])):
        v = stars[key]
        bad = np.flatnonzero((v < 0) | (v + size > n_pix))
        if bad.size:
            raise _fail(
                path,
                f"{STARS_EXT} row {int(bad[0])}: window {key.upper()} = {v[bad[0]]} off the CCD",
            )
