"""Ground-test campaign format, version 1: every name, key and pattern, and the low-level I/O.

The contract is ``docs/campaign-format.md``.  This module is the only place that knows
the folder and file-name patterns, the housekeeping (HK) column names and the FITS header
keys; the emulator (:mod:`plato_sim.scenes.ground_test`) writes through it and the reader
(:mod:`plato_cnn.reader`) reads through it.

Layout::

    <campaign>/<OBSID:05d>_<SITE>_<CAMERA>/
        <OBSID:05d>_<SITE>_<CAMERA>_TCS-HK_<YYYYMMDD>.csv
        <OBSID:05d>_<SITE>_N-FEE_CCD_<COUNTER:05d>_<YYYYMMDD>_cube.fits

Cube data are raw unsigned 16-bit ADU stored the FITS way (BITPIX = 16, BZERO = 32768).
astropy refuses to memory-map scaled integer data, so :func:`read_cube` opens the file with
``do_not_scale_image_data=True`` (a true memory map of the stored big-endian int16) and
restores the unsigned values by flipping the sign bit, which is exact: ``u = s + 32768``.
No int16 arithmetic ever touches the physical values, so nothing overflows.  Tile-compressed
extensions (astropy ``CompImageHDU``) are decoded by astropy, tile by tile, into native-endian
int16 and restored the same way.

Only regular files are opened (a FIFO or a device would block or never end): the file is
checked with ``os.stat`` once, opened once, and the same open file serves the headers and
every frame.  Frames are read a block at a time (:meth:`CubeExtension.read_frames`, with
``os.pread`` for uncompressed data), so reading a cube never holds more than one block of
frames in memory, whatever the cube's size.

Times are handled as float64 seconds since 1970-01-01 UTC (microsecond resolution over the
span of a campaign).
"""

from __future__ import annotations

import csv
import os
import re
import stat
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from plato_sim import detector as _det
from plato_sim.errors import DataError, PlatoFocusError

__all__ = [
    "FORMAT_VERSION",
    "FormatError",
    "HK_TIME",
    "HK_TRP1",
    "HK_TRP22",
    "HK_MAX_GAP_S",
    "BZERO_UINT16",
    "ADC_MAX_ADU",
    "FULL_WELL_E",
    "SATURATION_FULL_WELL_FRACTION",
    "NOMINAL_GAIN_E_PER_ADU",
    "NOMINAL_OFFSET_ADU",
    "FIELD_MATCH_DEG",
    "PRIMARY_KEYS",
    "IMAGE_KEYS",
    "SHUTTER_OPEN",
    "SHUTTER_CLOSED",
    "obs_dir_name",
    "hk_file_name",
    "cube_file_name",
    "parse_obs_dir_name",
    "parse_hk_file_name",
    "parse_cube_file_name",
    "image_ext_name",
    "parse_image_ext_name",
    "parse_utc",
    "format_utc",
    "HKTable",
    "write_hk_csv",
    "read_hk_csv",
    "CubeExtension",
    "CubeFile",
    "HK_DUPLICATE_TOL_DEGC",
    "check_regular_file",
    "write_cube",
    "read_cube",
]

FORMAT_VERSION = 1

# ---------------------------------------------------------------------------- HK
#: Required HK columns (format v1): time stamp (ISO 8601, UTC) and TRP1 temperature (degC).
HK_TIME = "timestamp"
HK_TRP1 = "GTCS_TRP1_T_AVG"
#: Usual, optional second thermal reference point (degC).
HK_TRP22 = "GTCS_TRP22_T_AVG"
#: A frame farther than this from every HK sample has no temperature (format v1).
HK_MAX_GAP_S = 60.0
#: Samples that share a time stamp are averaged when they agree within this (degC); the
#: reader refuses a file whose repeats disagree by more (``conflicting_hk``).  TRP1 noise
#: within a plateau is ~0.01 degC, so 0.1 degC is ten times the noise and a fifth of the
#: plateau-stability limit (0.5 degC).
HK_DUPLICATE_TOL_DEGC = 0.1

# ---------------------------------------------------------------------------- FITS
BZERO_UINT16 = 32768
#: Saturation constants of the detector (docs/facts.md), re-exported for the format's rule:
#: a pixel is saturated at the ADC limit, or when its signal above the offset exceeds
#: ``SATURATION_FULL_WELL_FRACTION`` of the full well converted with ``GAIN`` (or the nominal
#: gain when a cube has no ``GAIN`` key).
ADC_MAX_ADU = _det.ADC_MAX_ADU
FULL_WELL_E = _det.FULL_WELL_E
SATURATION_FULL_WELL_FRACTION = _det.SATURATION_FRACTION_OF_FULL_WELL
NOMINAL_GAIN_E_PER_ADU = _det.NOMINAL_GAIN_E_PER_ADU
#: Electronic offset (bias) of the detector, ~1000 ADU (docs/facts.md).
NOMINAL_OFFSET_ADU = _det.NOMINAL_OFFSET_ADU
#: Two cubes are at the same field position when FOV_TH and FOV_PHI agree within this (deg).
FIELD_MATCH_DEG = 1e-4

SHUTTER_OPEN = "OPEN"
SHUTTER_CLOSED = "CLOSED"

#: Required keys of the primary header.
PRIMARY_KEYS = ("DATE-OBS", "OBSID", "SITE", "CAMERA")
#: Required keys of an ``IMAGE_<ccd>_<side>`` extension header (``GAIN`` is optional).
IMAGE_KEYS = (
    "CCD_ID",
    "V_START",
    "H_START",
    "EXPTIME",
    "CYCLETIM",
    "SHUTTER",
    "FOV_TH",
    "FOV_PHI",
)

_OBS_RE = re.compile(r"^(\d{5})_([A-Za-z0-9-]+)_(.+)$")
_HK_RE = re.compile(r"^(\d{5})_([A-Za-z0-9-]+)_(.+)_TCS-HK_(\d{8})\.csv$")
_CUBE_RE = re.compile(r"^(\d{5})_([A-Za-z0-9-]+)_N-FEE_CCD_(\d{5})_(\d{8})_cube\.fits$")
_EXT_RE = re.compile(r"^IMAGE_([1-4])_([EF])$")


class FormatError(PlatoFocusError, ValueError):
    """A campaign file that does not follow format v1.

    Attributes:
        path: the offending file (or folder).
        reason: short machine-readable reason (``"missing_column"``, ``"truncated"``, ...).
        detail: human-readable explanation.
        ext: FITS extension name, if any.
        frame: frame index inside the extension, if any.
        n_frames: source (open-shutter) frames the file held, as far as its headers told
            before the error (0 when unknown); the reader counts them as dropped.
    """

    def __init__(
        self,
        path: str | Path,
        reason: str,
        detail: str,
        ext: str | None = None,
        frame: int | None = None,
        n_frames: int = 0,
    ) -> None:
        self.path = Path(path)
        self.n_frames = int(n_frames)
        self.reason = reason
        # one line: details quoted from other libraries may hold line breaks
        self.detail = " ".join(str(detail).split())
        self.ext = ext
        self.frame = frame
        where = str(self.path)
        if ext is not None:
            where += f"[{ext}]"
        if frame is not None:
            where += f" frame {frame}"
        super().__init__(f"{where}: {reason}: {self.detail}")


# ---------------------------------------------------------------------------- names
def _date8(unix_s: float) -> str:
    return datetime.fromtimestamp(float(unix_s), tz=timezone.utc).strftime("%Y%m%d")


def obs_dir_name(obsid: int, site: str, camera: str) -> str:
    """Folder of one observation: ``<OBSID:05d>_<SITE>_<CAMERA>``."""
    return f"{int(obsid):05d}_{site}_{camera}"


def hk_file_name(obsid: int, site: str, camera: str, unix_s: float) -> str:
    """HK CSV file name for an observation starting at ``unix_s`` (s since 1970, UTC)."""
    return f"{obs_dir_name(obsid, site, camera)}_TCS-HK_{_date8(unix_s)}.csv"


def cube_file_name(obsid: int, site: str, counter: int, unix_s: float) -> str:
    """Cube FITS file name: ``<OBSID>_<SITE>_N-FEE_CCD_<COUNTER:05d>_<YYYYMMDD>_cube.fits``."""
    return f"{int(obsid):05d}_{site}_N-FEE_CCD_{int(counter):05d}_{_date8(unix_s)}_cube.fits"


def parse_obs_dir_name(name: str) -> tuple[int, str, str] | None:
    """``(obsid, site, camera)`` of an observation folder name, or None if it is not one."""
    m = _OBS_RE.match(name)
    return (int(m.group(1)), m.group(2), m.group(3)) if m else None


def parse_hk_file_name(name: str) -> tuple[int, str, str, str] | None:
    """``(obsid, site, camera, yyyymmdd)`` of an HK file name, or None."""
    m = _HK_RE.match(name)
    return (int(m.group(1)), m.group(2), m.group(3), m.group(4)) if m else None


def parse_cube_file_name(name: str) -> tuple[int, str, int, str] | None:
    """``(obsid, site, counter, yyyymmdd)`` of a cube file name, or None."""
    m = _CUBE_RE.match(name)
    return (int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)) if m else None


def image_ext_name(ccd: int, side: str) -> str:
    """Extension name ``IMAGE_<ccd>_<side>`` (ccd 1-4, side ``E`` or ``F``)."""
    if int(ccd) not in (1, 2, 3, 4) or side not in ("E", "F"):
        raise DataError(f"bad CCD/side {ccd!r}/{side!r}: ccd 1-4, side E or F")
    return f"IMAGE_{int(ccd)}_{side}"


def parse_image_ext_name(name: str) -> tuple[int, str] | None:
    """``(ccd, side)`` of an image extension name, or None for any other extension."""
    m = _EXT_RE.match(name.strip().upper())
    return (int(m.group(1)), m.group(2)) if m else None


# ---------------------------------------------------------------------------- time
def parse_utc(text: str) -> float:
    """ISO 8601 time stamp -> seconds since 1970 UTC; no zone means UTC (format v1)."""
    s = str(text).strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def format_utc(unix_s: float) -> str:
    """Seconds since 1970 UTC -> ``YYYY-MM-DDTHH:MM:SS.ffffff`` (UTC, no zone suffix)."""
    us = int(round(float(unix_s) * 1e6))
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(
        microsecond=us % 1_000_000
    )
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")


# ---------------------------------------------------------------------------- files
def check_regular_file(path: Path, missing_reason: str) -> int:
    """The size of ``path`` (bytes) after checking, with one ``os.stat``, that it is a
    regular file (links followed).

    A FIFO would block the reader and a device (``/dev/zero``) would never end, so anything
    that is not a regular file is refused before it is opened.

    Raises:
        FormatError: ``missing_reason`` when it does not exist (or is a link that does not
            resolve), ``not_regular_file`` when it is a FIFO, a device, a socket or a folder.
    """
    try:
        st_ = os.stat(path)
    except FileNotFoundError as exc:
        what = "symbolic link that does not resolve" if path.is_symlink() else "does not exist"
        raise FormatError(path, missing_reason, f"file {what}") from exc
    except OSError as exc:  # a link loop, permissions on the folder, ...
        what = "symbolic link that does not resolve" if path.is_symlink() else "cannot stat it"
        raise FormatError(path, missing_reason, f"{what} ({exc})") from exc
    if not stat.S_ISREG(st_.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st_.st_mode)
            else "a character device"
            if stat.S_ISCHR(st_.st_mode)
            else "a block device"
            if stat.S_ISBLK(st_.st_mode)
            else "a folder"
            if stat.S_ISDIR(st_.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st_.st_mode)
            else "not a regular file"
        )
        raise FormatError(path, "not_regular_file", f"{kind}, not a regular file: not opened")
    return int(st_.st_size)


# ---------------------------------------------------------------------------- HK CSV
@dataclass(frozen=True)
class HKTable:
    """Housekeeping samples of one or more HK files, sorted by time, duplicates averaged.

    Attributes:
        time_s: ``(M,)`` seconds since 1970 UTC, strictly increasing.
        trp1_degC: ``(M,)`` TRP1 temperature (degC).
        paths: the files read.
        columns: other numeric columns that were present in every file, same length.
        duplicate_spread_degC: the largest ``max - min`` of TRP1 among samples that shared a
            time stamp (0 without repeats); the reader refuses more than
            :data:`HK_DUPLICATE_TOL_DEGC`.
        duplicate_time_s: the time stamp of that largest spread (NaN without repeats).
    """

    time_s: np.ndarray
    trp1_degC: np.ndarray
    paths: tuple[Path, ...] = ()
    columns: dict = field(default_factory=dict)
    duplicate_spread_degC: float = 0.0
    duplicate_time_s: float = float("nan")

    def temperature_at(self, time_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TRP1 (degC) linearly interpolated at ``time_s``, and whether each time is covered.

        A time is covered when an HK sample lies within :data:`HK_MAX_GAP_S` of it;
        uncovered times get NaN.
        """
        t = np.asarray(time_s, dtype=float)
        temp = np.interp(t, self.time_s, self.trp1_degC)
        k = np.clip(np.searchsorted(self.time_s, t), 1, len(self.time_s) - 1)
        if len(self.time_s) == 1:
            gap = np.abs(t - self.time_s[0])
        else:
            gap = np.minimum(np.abs(t - self.time_s[k - 1]), np.abs(t - self.time_s[k]))
        ok = gap <= HK_MAX_GAP_S
        return np.where(ok, temp, np.nan), ok

    @staticmethod
    def merge(tables: Sequence[HKTable]) -> HKTable:
        """Concatenate HK tables (several HK files of one observation); repeats across files
        are averaged and their spread recorded as within one file."""
        if not tables:
            raise DataError("no HK tables to merge")
        t = np.concatenate([x.time_s for x in tables])
        v = np.concatenate([x.trp1_degC for x in tables])
        t, v, spread, at = _sorted_unique(t, v)
        worst = max(tables, key=lambda x: x.duplicate_spread_degC)
        if worst.duplicate_spread_degC > spread:
            spread, at = worst.duplicate_spread_degC, worst.duplicate_time_s
        return HKTable(t, v, tuple(p for x in tables for p in x.paths), {}, spread, at)


def _sorted_unique(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Sort by time and average samples that share a time stamp; also the largest spread
    (max - min) among such samples and its time stamp (0 and NaN without repeats)."""
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    ut, inv = np.unique(t, return_inverse=True)
    if ut.size == t.size:
        return t, v, 0.0, float("nan")
    inv = inv.ravel()
    sums = np.bincount(inv, weights=v)
    counts = np.bincount(inv)
    hi = np.full(ut.size, -np.inf)
    lo = np.full(ut.size, np.inf)
    np.maximum.at(hi, inv, v)
    np.minimum.at(lo, inv, v)
    spread = hi - lo
    k = int(np.argmax(spread))
    return ut, sums / counts, float(spread[k]), float(ut[k])


def write_hk_csv(
    path: str | Path,
    time_s: np.ndarray,
    trp1_degC: np.ndarray,
    extra_columns: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write an HK CSV file (``timestamp`` ISO 8601 UTC, ``GTCS_TRP1_T_AVG`` degC, extras)."""
    path = Path(path)
    extra = dict(extra_columns or {})
    names = [HK_TIME, HK_TRP1, *extra]
    cols = [np.asarray(trp1_degC, dtype=float)] + [np.asarray(v) for v in extra.values()]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for i, t in enumerate(np.asarray(time_s, dtype=float)):
            w.writerow([format_utc(t)[:-3]] + [f"{c[i]:.4f}" for c in cols])
    return path


def _hk_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a regular HK file with their line numbers (1-based)."""
    check_regular_file(path, "missing_hk")
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first name
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = []
            for r in reader:
                if any(c.strip() for c in r):
                    rows.append((reader.line_num, r))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FormatError(path, "unreadable_hk", f"cannot read HK file ({exc})") from exc
    return rows


def read_hk_csv(path: str | Path) -> HKTable:
    """Read one HK CSV file.

    Every row must have as many cells as the header: an unquoted decimal comma
    (``-85,6083``) makes one more, and reading its first part would silently truncate the
    temperature.

    Raises:
        FormatError: missing file or not a regular file, no header, a required column
            missing, a row with another number of cells than the header, an unparsable time
            stamp or temperature, or no valid sample.
    """
    path = Path(path)
    rows = _hk_rows(path)
    if not rows:
        raise FormatError(path, "empty_hk", "HK file is empty")
    header = [c.strip() for c in rows[0][1]]
    for col in (HK_TIME, HK_TRP1):
        if col not in header:
            raise FormatError(
                path, "missing_column", f"required HK column {col!r} missing (has {header})"
            )
    if len(rows) < 2:
        raise FormatError(path, "empty_hk", "HK file has a header but no samples")
    it, iv = header.index(HK_TIME), header.index(HK_TRP1)
    t = np.empty(len(rows) - 1)
    v = np.empty(len(rows) - 1)
    for i, (n, r) in enumerate(rows[1:]):
        if len(r) != len(header):
            raise FormatError(
                path,
                "bad_hk_row",
                f"line {n} has {len(r)} cells but the header has {len(header)} "
                f"(an unquoted decimal comma?): {r!r}",
            )
        try:
            t[i] = parse_utc(r[it])
            v[i] = float(r[iv])
        except (ValueError, IndexError) as exc:
            raise FormatError(path, "bad_hk_row", f"line {n}: cannot parse {r!r} ({exc})") from exc
    good = np.isfinite(v)
    if not np.any(good):
        raise FormatError(path, "empty_hk", f"no finite {HK_TRP1} value")
    t, v, spread, at = _sorted_unique(t[good], v[good])
    return HKTable(t, v, (path,), {}, spread, at)


# ---------------------------------------------------------------------------- cubes
#: Frames are read this many bytes (of float32) at a time at most (at least one frame).
READ_BLOCK_BYTES = 32 * 2**20


class CubeExtension:
    """One image extension of a cube file, read lazily.

    Attributes:
        name: ``IMAGE_<ccd>_<side>``.
        header: the extension header.
        shape: ``(frames, rows, columns)``.
        compressed: a tile-compressed extension (decoded by astropy).

    Frames come through :meth:`read_frames` (a block at a time, physical values);
    :attr:`data` is the whole cube (a memory-mapped uint16 view for uncompressed 16-bit
    data) for callers that want it.
    """

    def __init__(self, name: str, header: Mapping, hdu, fd: int, path: Path) -> None:
        self.name = name
        self.header = header
        self._hdu = hdu
        self._fd = fd
        self.path = path
        h = hdu.header
        self.bitpix = int(h.get("BITPIX", 0))
        self.bzero = float(h.get("BZERO", 0.0))
        self.bscale = float(h.get("BSCALE", 1.0))
        self.compressed = isinstance(hdu, fits.CompImageHDU)
        self.shape = tuple(int(h.get(f"NAXIS{i}", 0)) for i in (3, 2, 1))

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self.shape[0]

    def block_frames(self) -> int:
        """Frames per block of :meth:`read_frames` (``READ_BLOCK_BYTES`` of float32)."""
        per = 4 * self.shape[1] * self.shape[2]
        return max(1, READ_BLOCK_BYTES // max(per, 1))

    def _physical(self, raw: np.ndarray) -> np.ndarray:
        if self.bitpix == 16:
            # stored int16 s (either byte order); physical u = s + 32768 = s, sign bit flipped
            return raw.view(raw.dtype.str.replace("i", "u")) ^ np.uint16(0x8000)
        return (np.asarray(raw, dtype=np.float64) * self.bscale + self.bzero).astype(np.float32)

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` in physical units: uint16 ADU, or float32 for float data.

        Uncompressed data are read with ``os.pread`` from the cube's one open file (not
        through the memory map, whose touched pages would stay resident); compressed data
        are decoded by astropy's section access (only the tiles needed).

        Raises:
            FormatError: the data cannot be read or decoded (``corrupt``, ``truncated``).
        """
        start, stop = max(0, int(start)), min(self.n_frames, int(stop))
        if stop <= start:
            return self._physical(np.zeros((0, *self.shape[1:]), dtype=self._stored_dtype()))
        try:
            if self.compressed:
                raw = np.asarray(self._hdu.section[start:stop])
            else:
                dt = self._stored_dtype()
                per = dt.itemsize * self.shape[1] * self.shape[2]
                off = self._hdu._data_offset + start * per
                n = (stop - start) * per
                buf = os.pread(self._fd, n, off)
                if len(buf) != n:
                    raise FormatError(
                        self.path,
                        "truncated",
                        f"frames {start}-{stop - 1} beyond the end",
                        self.name,
                    )
                raw = np.frombuffer(buf, dtype=dt).reshape(stop - start, *self.shape[1:])
        except FormatError:
            raise
        except Exception as exc:  # zlib errors, astropy decoding errors, OSError
            raise FormatError(
                self.path, "corrupt", f"cannot read frames {start}-{stop - 1} ({exc})", self.name
            ) from exc
        return self._physical(raw)

    def _stored_dtype(self) -> np.dtype:
        return np.dtype({16: ">i2", -32: ">f4", -64: ">f8"}[self.bitpix])

    @property
    def data(self) -> np.ndarray:
        """The whole cube in physical units: for uncompressed 16-bit data a memory-mapped
        uint16 view (no copy), otherwise decoded or converted (a copy of the whole cube)."""
        if self.bitpix == 16 and not self.compressed:
            raw = self._hdu.data
            return raw.view(raw.dtype.str.replace("i", "u")) ^ np.uint16(0x8000)
        return self.read_frames(0, self.n_frames)


@dataclass
class CubeFile:
    """A cube file: its primary header and image extensions (other extensions dropped)."""

    path: Path
    primary: Mapping
    extensions: list[CubeExtension]
    ignored_extensions: list[str] = field(default_factory=list)
    _hdul: object = None
    _fh: object = None

    def close(self) -> None:
        """Release the memory map and the file."""
        if self._hdul is not None:
            self._hdul.close()
            self._hdul = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_cube(
    path: str | Path,
    primary: Mapping[str, object],
    extensions: Sequence[tuple[str, Mapping[str, object], np.ndarray]],
) -> Path:
    """Write a cube FITS file.

    Args:
        path: output file.
        primary: primary header keys (``DATE-OBS``, ``OBSID``, ``SITE``, ``CAMERA``, ...);
            values may be ``(value, comment)`` tuples.
        extensions: ``(name, header keys, data)`` with data ``(frames, rows, columns)``
            uint16 ADU (stored as BITPIX 16, BZERO 32768).
    """
    hdus: list = [fits.PrimaryHDU()]
    for k, v in primary.items():
        hdus[0].header[k] = v
    hdus[0].header["FMTVERS"] = (FORMAT_VERSION, "ground-test campaign format version")
    for name, keys, data in extensions:
        a = np.asarray(data)
        if a.ndim != 3:
            raise DataError(f"{name}: cube data must be (frames, rows, columns), got {a.shape}")
        hdu = fits.ImageHDU(a, name=name)
        for k, v in keys.items():
            hdu.header[k] = v
        hdus.append(hdu)
    path = Path(path)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def _check_keys(path: Path, header: Mapping, keys: Sequence[str], ext: str | None) -> None:
    for card in header.cards:  # astropy parses values lazily: make a bad card fail here
        try:
            card.value  # noqa: B018
        except Exception as exc:  # VerifyError and friends
            raise FormatError(
                path, "bad_card", f"unparsable header card {card.keyword!r} ({exc})", ext=ext
            ) from exc
    missing = [k for k in keys if k not in header]
    if missing:
        raise FormatError(path, "missing_key", f"header key(s) {missing} missing", ext=ext)


def _check_ext(path: Path, hdu, name: str, size: int) -> None:
    """Shape (3-D), data type (16-bit unsigned or float) and extent of an image extension."""
    h = hdu.header
    bitpix = int(h.get("BITPIX", 0))
    naxis = int(h.get("NAXIS", 0))
    if naxis != 3:
        shape = tuple(int(h.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))
        raise FormatError(
            path, "wrong_shape", f"data must be (frames, rows, columns), got {shape}", ext=name
        )
    bzero = float(h.get("BZERO", 0.0))
    bscale = float(h.get("BSCALE", 1.0))
    if bitpix == 16:
        if bzero != BZERO_UINT16 or bscale != 1.0:
            raise FormatError(
                path,
                "wrong_dtype",
                f"BITPIX 16 needs BZERO={BZERO_UINT16}, BSCALE=1 (unsigned 16-bit), "
                f"got BZERO={bzero:g}, BSCALE={bscale:g}",
                ext=name,
            )
    elif bitpix not in (-32, -64):
        raise FormatError(
            path,
            "wrong_dtype",
            f"BITPIX {bitpix}: expected 16 (unsigned 16-bit with BZERO=32768)",
            ext=name,
        )
    end = hdu._data_offset + hdu._data_size  # astropy's own bookkeeping
    if end > size:
        raise FormatError(
            path, "truncated", f"data end at byte {end} beyond file size {size}", ext=name
        )
    if isinstance(hdu, fits.CompImageHDU):
        return  # decoded tile by tile when read
    n_bytes = abs(bitpix) // 8 * int(np.prod([int(h.get(f"NAXIS{i}", 0)) for i in (1, 2, 3)]))
    if hdu._data_offset + n_bytes > size:
        raise FormatError(path, "truncated", "data end beyond the end of the file", ext=name)


def _open_fits(path: Path, fh) -> fits.HDUList:
    with warnings.catch_warnings():
        # truncation is reported as a FormatError below, not as an astropy warning
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            return fits.open(fh, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=False)
        except Exception as exc:
            raise FormatError(path, "corrupt", f"not a readable FITS file ({exc})") from exc


def _source_frames(hdul) -> int:
    """Open-shutter frames announced by the headers (best effort, for the drop count)."""
    n = 0
    for hdu in hdul[1:]:
        try:
            shutter = str(hdu.header.get("SHUTTER", "")).strip().upper()
            if parse_image_ext_name(str(hdu.name)) and shutter == SHUTTER_OPEN:
                n += int(hdu.header.get("NAXIS3", 0))
        except Exception:  # a header too damaged to count
            continue
    return n


def read_cube(path: str | Path) -> CubeFile:
    """Open a cube file and check its structure; frames are read later, a block at a time.

    The path is checked once (:func:`check_regular_file`) and opened once; astropy reads
    the headers from that open file (memory-mapped) and :meth:`CubeExtension.read_frames`
    reads the frames from it.  Every ``IMAGE_<ccd>_<side>`` extension is returned; other
    extensions are listed in ``ignored_extensions``.

    Raises:
        FormatError: not a regular file, empty (0 bytes), unreadable/corrupt/truncated file,
            missing header key, wrong shape or data type, no image extension; its
            ``n_frames`` is the number of source frames the headers announced.
    """
    path = Path(path)
    size = check_regular_file(path, "corrupt")
    if size == 0:
        raise FormatError(path, "empty", "cube file is empty (0 bytes)")
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed by CubeFile.close or below)
    except OSError as exc:
        raise FormatError(path, "corrupt", f"cannot open the file ({exc})") from exc
    hdul = None
    try:
        hdul = _open_fits(path, fh)
        _check_keys(path, hdul[0].header, PRIMARY_KEYS, None)
        exts: list[CubeExtension] = []
        ignored: list[str] = []
        for hdu in hdul[1:]:
            name = str(hdu.name).strip().upper()
            if parse_image_ext_name(name) is None:
                ignored.append(name)
                continue
            _check_keys(path, hdu.header, IMAGE_KEYS, name)
            _check_ext(path, hdu, name, size)
            exts.append(CubeExtension(name, hdu.header, hdu, fh.fileno(), path))
        if not exts:
            raise FormatError(path, "no_image", "no IMAGE_<ccd>_<side> extension")
    except Exception as exc:
        n = _source_frames(hdul) if hdul is not None else 0
        if hdul is not None:
            hdul.close()
        fh.close()
        if isinstance(exc, FormatError):
            exc.n_frames = n
            raise
        raise FormatError(
            path, "corrupt", f"cannot parse FITS structure ({exc})", n_frames=n
        ) from exc
    return CubeFile(path, hdul[0].header, exts, ignored, hdul, fh)
