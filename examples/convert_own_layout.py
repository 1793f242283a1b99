"""Convert a test house's own data layout into a ground-test campaign (format v1).

``plato-cnn bft CAMPAIGN_DIR --method eef|cnn|forward`` reads campaigns in format v1
(``docs/campaign-format.md``).  This script writes such a campaign from a plain layout of
NumPy files, with the library's writers (:mod:`plato_sim.io.campaign_format`), then reads it
back with :func:`plato_cnn.reader.read_campaign` and prints a one-line summary.  Adapt
:func:`load_observation` to your own files; the writing part stays as it is.

Usage::

    python examples/convert_own_layout.py --in DIR --out CAMPAIGN_DIR --camera NAME --site NAME
    python examples/convert_own_layout.py --demo [--in DIR] [--out CAMPAIGN_DIR]
    plato-cnn bft CAMPAIGN_DIR --method cnn

``--demo`` first writes a tiny synthetic input in this layout (2 observations x 2 field
positions x 2 frames of a Gaussian star, seeded; into ``--in`` or a temporary folder), so the
script runs on a fresh machine without data.  Its Gaussian star is no PLATO PSF and its two
plateaux are too few for ``--method eef``: the demo shows the format, and a best-focus
temperature estimated from it means nothing.

The input layout
----------------

``--in DIR`` holds one NumPy ``.npz`` file per observation, i.e. per TRP1 plateau (any file
name ending in ``.npz``; other files are ignored).  A *window* is one readout window around
the star at one field position.  With ``N`` source frames, ``B`` closed-shutter frames,
``M`` windows, ``K`` housekeeping samples and windows of ``H x W`` pixels, each file holds:

====================  ==========  ======================================================
key                   shape       meaning
====================  ==========  ======================================================
``frames_adu``        (N, H, W)   source frames (shutter open), raw ADU as digitised:
                                  offset (~1000 ADU) included, nothing subtracted;
                                  axes [row, column], increasing with the CCD row and
                                  column indices; unsigned integers (0-65535) or floats
``time_unix_s``       (N,)        start time of each frame, s since 1970-01-01 UTC
``window``            (N,)        window (0 ... M-1) of each frame
``bias_frames_adu``   (B, H, W)   closed-shutter frames (bias + dark), raw ADU
``bias_time_unix_s``  (B,)        start time of each closed-shutter frame (s, UTC)
``bias_window``       (B,)        window (0 ... M-1) of each closed-shutter frame
``field_theta_deg``   (M,)        commanded field angle theta of each window (deg)
``field_phi_deg``     (M,)        commanded field azimuth phi of each window (deg)
``ccd``               (M,)        CCD of each window (1-4)
``row0_px``           (M,)        CCD row of the window's first pixel (0-based)
``col0_px``           (M,)        CCD column of the window's first pixel (0-based)
``exptime_s``         ()          exposure time (s)
``hk_time_unix_s``    (K,)        housekeeping sample times (s since 1970 UTC)
``hk_trp1_degC``      (K,)        TRP1 temperature at those times (degC)
``gain_e_per_adu``    ()          optional: conversion gain (e-/ADU); default: the
                                  format's nominal 25 e-/ADU
``obsid``             ()          optional: observation id (0-99999); default: the
                                  observations numbered 1, 2, ... in order of their
                                  first frame
====================  ==========  ======================================================

Every window with source frames needs closed-shutter frames of its own (those of a window
without source frames are not written).  The housekeeping samples should cover every frame:
the reader drops a frame farther than 60 s from every sample (``hk_not_covering``).

How it maps onto format v1
--------------------------

* each ``.npz`` -> one observation folder ``<OBSID>_<SITE>_<CAMERA>`` with one HK CSV file
  (``timestamp`` from ``hk_time_unix_s``, ``GTCS_TRP1_T_AVG`` from ``hk_trp1_degC``);
* each window -> a closed-shutter cube (its ``bias_frames_adu``, ``SHUTTER = CLOSED``) written
  just before its first source cube, then one source cube (``SHUTTER = OPEN``) per run of
  evenly spaced frames: the format times frame ``k`` of a cube as ``DATE-OBS + k x
  CYCLETIM``, so frames whose spacing changes by more than ``CADENCE_TOL_S`` start a new
  cube (all of them still use that one background);
* cube files are numbered (``COUNTER``) in order of their first frame; extension
  ``IMAGE_<ccd>_<side>`` with ``side`` ``E`` for a window whose first column is 2255 or more,
  ``F`` otherwise (the emulator's convention; the extension name only pairs each source
  window with its background); header keys ``CCD_ID``, ``V_START = row0_px``,
  ``H_START = col0_px``, ``EXPTIME``, ``CYCLETIM``, ``FOV_TH``, ``FOV_PHI``, ``GAIN``;
* integer frames are written as unsigned 16-bit ADU, float frames as 32-bit floats (both
  raw ADU, as the format allows).

The format takes a window's background from the closed-shutter window *read before* it,
so a background recorded after its source frames is still written first; the reader uses
only the mean of its frames.  Every input file is read and checked before anything is
written.  Bad input (a missing key, a wrong shape, TRP1 not in degC,
frames not raw ADU, a window off the CCD) raises
:class:`~plato_sim.errors.DataError`; a bad camera or site name, or an output folder that is
not empty, :class:`~plato_sim.errors.ParameterError`.
"""

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plato_cnn.reader import check_background_level, check_trp1, read_campaign
from plato_sim.errors import DataError, ParameterError, PlatoFocusError
from plato_sim.io import campaign_format as cf
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, ccd_of_field

#: Frames of one window whose start times depart from an even spacing by more than this (s)
#: go to a new source cube.
CADENCE_TOL_S = 0.05
#: CCD side: 4510 pixels per row and column.
CCD_PX = PLATO_NORMAL_CAMERA.ccd_pixels
#: Smallest window the reader accepts (pixels).
MIN_WINDOW_PX = 12
#: Field angles the format accepts (deg).
THETA_MAX_DEG = 18.9

_REQUIRED = (
    "frames_adu",
    "time_unix_s",
    "window",
    "bias_frames_adu",
    "bias_time_unix_s",
    "bias_window",
    "field_theta_deg",
    "field_phi_deg",
    "ccd",
    "row0_px",
    "col0_px",
    "exptime_s",
    "hk_time_unix_s",
    "hk_trp1_degC",
)
_SITE_RE = re.compile(r"^[A-Za-z0-9-]+$")


# ------------------------------------------------------------------------- reading the input
@dataclass
class Observation:
    """One observation (TRP1 plateau) of the input layout, checked."""

    path: Path
    obsid: int | None
    frames_adu: np.ndarray
    time_unix_s: np.ndarray
    window: np.ndarray
    bias_frames_adu: np.ndarray
    bias_time_unix_s: np.ndarray
    bias_window: np.ndarray
    field_theta_deg: np.ndarray
    field_phi_deg: np.ndarray
    ccd: np.ndarray
    row0_px: np.ndarray
    col0_px: np.ndarray
    exptime_s: float
    gain_e_per_adu: float | None
    hk_time_unix_s: np.ndarray
    hk_trp1_degC: np.ndarray


def _bad(path: Path, detail: str) -> DataError:
    return DataError(f"{path}: {detail}")


def _finite(path: Path, name: str, a: np.ndarray, shape: tuple) -> np.ndarray:
    """``a`` as float64 of ``shape`` (``-1``: any length), every value finite."""
    a = np.asarray(a)
    if a.dtype.kind not in "iuf" or a.ndim != len(shape):
        raise _bad(path, f"{name}: expected numbers of shape {shape}, got {a.dtype} {a.shape}")
    for got, want in zip(a.shape, shape, strict=True):
        if want >= 0 and got != want:
            raise _bad(path, f"{name}: expected shape {shape}, got {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise _bad(path, f"{name}: holds non-finite values")
    return a


def _integers(path: Path, name: str, a: np.ndarray, n: int, lo: int, hi: int) -> np.ndarray:
    """``a`` as int64 of length ``n``, integral values within ``lo ... hi``."""
    v = _finite(path, name, a, (n,))
    bad = (v != np.round(v)) | (v < lo) | (v > hi)
    if np.any(bad):
        got = ", ".join(f"{x:g}" for x in np.unique(v[bad])[:5])
        raise _bad(path, f"{name}: values must be integers {lo} ... {hi}, got {got}")
    return v.astype(np.int64)


def _scalar(path: Path, name: str, a: np.ndarray) -> float:
    a = np.asarray(a)
    return float(_finite(path, name, a.reshape(()) if a.size == 1 else a, ())[()])


def _raw_frames(path: Path, name: str, a: np.ndarray) -> np.ndarray:
    """Raw ADU frames ``(n, H, W)``: integers within 0 ... 65535 become uint16, floats float32
    (the reader drops float frames with non-finite or out-of-range values)."""
    a = np.asarray(a)
    if a.ndim != 3 or a.dtype.kind not in "iuf":
        raise _bad(path, f"{name}: expected numeric frames (n, rows, columns), got {a.shape}")
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.size and (a.min() < 0 or a.max() > cf.ADC_MAX_ADU):
        raise _bad(
            path,
            f"{name}: raw ADU must lie within 0 ... {cf.ADC_MAX_ADU}, got {a.min()} ... "
            f"{a.max()} (frames with the offset or background subtracted are not raw)",
        )
    return a.astype(np.uint16)


def load_observation(path: str | Path) -> Observation:
    """Read and check one observation file of the input layout (see the module docstring).

    Raises:
        DataError: the file cannot be read, a key is missing, or a value is wrong (the
            message names the file, the key and what is expected).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise _bad(path, f"cannot read as a NumPy .npz file ({exc})") from exc
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise _bad(path, f"missing key(s) {missing}")
    frames = _raw_frames(path, "frames_adu", d["frames_adu"])
    bias = _raw_frames(path, "bias_frames_adu", d["bias_frames_adu"])
    n, h, w = frames.shape
    if n == 0 or min(h, w) < MIN_WINDOW_PX:
        raise _bad(path, f"frames_adu: need >= 1 frame of >= {MIN_WINDOW_PX} px, got {(n, h, w)}")
    if bias.shape[1:] != (h, w) or bias.shape[0] == 0:
        raise _bad(path, f"bias_frames_adu: need >= 1 frame of {h} x {w} px, got {bias.shape}")
    m = int(np.asarray(d["field_theta_deg"]).size)
    if m == 0:
        raise _bad(path, "field_theta_deg: no window")
    obs = Observation(
        path=path,
        obsid=int(_integers(path, "obsid", d["obsid"].reshape(1), 1, 0, 99999)[0])
        if "obsid" in d
        else None,
        frames_adu=frames,
        time_unix_s=_finite(path, "time_unix_s", d["time_unix_s"], (n,)),
        window=_integers(path, "window", d["window"], n, 0, m - 1),
        bias_frames_adu=bias,
        bias_time_unix_s=_finite(path, "bias_time_unix_s", d["bias_time_unix_s"], (len(bias),)),
        bias_window=_integers(path, "bias_window", d["bias_window"], len(bias), 0, m - 1),
        field_theta_deg=_finite(path, "field_theta_deg", d["field_theta_deg"], (m,)),
        field_phi_deg=_finite(path, "field_phi_deg", d["field_phi_deg"], (m,)) % 360.0,
        ccd=_integers(path, "ccd", d["ccd"], m, 1, 4),
        row0_px=_integers(path, "row0_px", d["row0_px"], m, 0, CCD_PX - h),
        col0_px=_integers(path, "col0_px", d["col0_px"], m, 0, CCD_PX - w),
        exptime_s=_scalar(path, "exptime_s", d["exptime_s"]),
        gain_e_per_adu=_scalar(path, "gain_e_per_adu", d["gain_e_per_adu"])
        if "gain_e_per_adu" in d
        else None,
        hk_time_unix_s=_finite(path, "hk_time_unix_s", d["hk_time_unix_s"], (-1,)),
        hk_trp1_degC=_finite(path, "hk_trp1_degC", d["hk_trp1_degC"], (-1,)),
    )
    _check_values(obs)
    return obs


def _check_values(obs: Observation) -> None:
    """Physical checks: field angles, exposure, gain, TRP1 in degC, raw bias level."""
    p = obs.path
    if np.any((obs.field_theta_deg < 0) | (obs.field_theta_deg > THETA_MAX_DEG)):
        raise _bad(p, f"field_theta_deg must lie within 0 ... {THETA_MAX_DEG} deg")
    if obs.exptime_s <= 0:
        raise _bad(p, f"exptime_s must be > 0 s, got {obs.exptime_s:g}")
    if obs.gain_e_per_adu is not None and obs.gain_e_per_adu <= 0:
        raise _bad(p, f"gain_e_per_adu must be > 0 e-/ADU, got {obs.gain_e_per_adu:g}")
    if obs.hk_time_unix_s.size == 0 or obs.hk_time_unix_s.shape != obs.hk_trp1_degC.shape:
        raise _bad(p, "hk_time_unix_s and hk_trp1_degC: need the same number (>= 1) of samples")
    why = check_trp1(obs.hk_trp1_degC)
    if why:
        raise _bad(p, f"hk_trp1_degC: {why}: not a temperature in degC")
    for k in np.unique(obs.window):
        sel = obs.bias_window == k
        if not np.any(sel):
            raise _bad(p, f"window {k} has source frames but no closed-shutter frame")
        why = check_background_level(obs.bias_frames_adu[sel].mean(axis=0))
        if why:
            raise _bad(p, f"bias_frames_adu of window {k}: {why} (raw ADU expected)")
        t = np.sort(obs.time_unix_s[obs.window == k])
        if np.any(np.diff(t) <= 0):
            raise _bad(p, f"time_unix_s: two frames of window {k} share a start time")


def load_input(in_dir: str | Path) -> list[Observation]:
    """Every observation file of ``in_dir``, with its OBSID, in acquisition order.

    Raises:
        DataError: not a folder, no ``.npz`` file, a bad file, or one OBSID twice.
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise DataError(f"{in_dir}: input folder does not exist")
    files = sorted(p for p in in_dir.iterdir() if p.suffix == ".npz" and p.is_file())
    if not files:
        raise DataError(f"{in_dir}: no observation file (*.npz)")
    obs = sorted((load_observation(p) for p in files), key=lambda o: o.time_unix_s.min())
    for i, o in enumerate(obs):
        if o.obsid is None:
            o.obsid = i + 1
    ids = [o.obsid for o in obs]
    if len(set(ids)) != len(ids):
        raise DataError(f"{in_dir}: an OBSID appears in several files: {sorted(ids)}")
    return obs


# ------------------------------------------------------------------------- writing format v1
def _even_runs(t: np.ndarray) -> list[np.ndarray]:
    """Split sorted times into runs of evenly spaced frames (indices into ``t``)."""
    runs, start = [], 0
    while start < t.size:
        stop = start + 1
        if stop < t.size:
            cycle = t[stop] - t[start]
            while stop < t.size and abs(t[stop] - t[start] - (stop - start) * cycle) <= (
                CADENCE_TOL_S
            ):
                stop += 1
        runs.append(np.arange(start, stop))
        start = stop
    return runs


def _cycle_s(t: np.ndarray) -> float:
    """Time between frame starts of a run (0 for one frame)."""
    return float((t[-1] - t[0]) / (t.size - 1)) if t.size > 1 else 0.0


def _image_keys(obs: Observation, k: int, shutter: str, cycle_s: float) -> dict:
    keys = {
        "CCD_ID": (int(obs.ccd[k]), "CCD (1-4)"),
        "V_START": (int(obs.row0_px[k]), "CCD row of the window's first pixel (0-based)"),
        "H_START": (int(obs.col0_px[k]), "CCD column of the window's first pixel"),
        "EXPTIME": (obs.exptime_s, "exposure time (s)"),
        "CYCLETIM": (cycle_s, "time between frame starts (s)"),
        "SHUTTER": (shutter, "OPEN: source, CLOSED: bg"),
        "FOV_TH": (float(obs.field_theta_deg[k]), "commanded field angle theta (deg)"),
        "FOV_PHI": (float(obs.field_phi_deg[k]), "commanded field azimuth phi (deg)"),
    }
    if obs.gain_e_per_adu is not None:
        keys["GAIN"] = (obs.gain_e_per_adu, "e-/ADU")
    return keys


def _cube_plan(obs: Observation) -> list[tuple[int, str, np.ndarray]]:
    """The cubes of an observation in writing order: ``(window, shutter, frame indices)``.

    Source runs are ordered by their first frame; each window's closed-shutter cube comes
    just before its first source run.
    """
    runs = []
    for k in np.unique(obs.window):
        idx = np.flatnonzero(obs.window == k)
        idx = idx[np.argsort(obs.time_unix_s[idx], kind="stable")]
        runs += [
            (obs.time_unix_s[idx[r[0]]], int(k), idx[r]) for r in _even_runs(obs.time_unix_s[idx])
        ]
    plan, done = [], set()
    for _t0, k, idx in sorted(runs, key=lambda r: (r[0], r[1])):
        if k not in done:
            b = np.flatnonzero(obs.bias_window == k)
            plan.append((k, cf.SHUTTER_CLOSED, b[np.argsort(obs.bias_time_unix_s[b])]))
            done.add(k)
        plan.append((k, cf.SHUTTER_OPEN, idx))
    return plan


def write_observation(out: Path, obs: Observation, camera: str, site: str) -> int:
    """Write one observation folder (HK file and cubes); returns the number of cubes."""
    obs_dir = out / cf.obs_dir_name(obs.obsid, site, camera)
    obs_dir.mkdir()
    order = np.argsort(obs.hk_time_unix_s, kind="stable")
    t_hk = obs.hk_time_unix_s[order]
    cf.write_hk_csv(
        obs_dir / cf.hk_file_name(obs.obsid, site, camera, t_hk[0]), t_hk, obs.hk_trp1_degC[order]
    )
    plan = _cube_plan(obs)
    for counter, (k, shutter, idx) in enumerate(plan, start=1):
        closed = shutter == cf.SHUTTER_CLOSED
        t = (obs.bias_time_unix_s if closed else obs.time_unix_s)[idx]
        data = (obs.bias_frames_adu if closed else obs.frames_adu)[idx]
        side = "E" if obs.col0_px[k] >= CCD_PX // 2 else "F"
        primary = {
            "DATE-OBS": (cf.format_utc(t[0]), "UTC time of the first frame"),
            "OBSID": (obs.obsid, "observation id"),
            "SITE": (site, "test house"),
            "CAMERA": (camera, "camera"),
        }
        ext = cf.image_ext_name(int(obs.ccd[k]), side)
        keys = _image_keys(obs, k, shutter, _cycle_s(t))
        path = obs_dir / cf.cube_file_name(obs.obsid, site, counter, t[0])
        cf.write_cube(path, primary, [(ext, keys, data)])
    return len(plan)


def _check_names(out: Path, camera: str, site: str) -> None:
    if not camera or "_" in camera or "/" in camera:
        raise ParameterError(f"--camera {camera!r}: must be non-empty, without '_' or '/'")
    if not _SITE_RE.match(site):
        raise ParameterError(f"--site {site!r}: letters, digits and '-' only")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ParameterError(f"--out {out}: exists and is not an empty folder")


def convert(in_dir: str | Path, out_dir: str | Path, camera: str, site: str) -> dict:
    """Convert the input layout in ``in_dir`` into a campaign folder ``out_dir`` (format v1).

    Every input file is read and checked before anything is written.

    Returns:
        ``{"observations": n, "cubes": n, "source_frames": n}``.

    Raises:
        ParameterError: a bad camera or site name, or ``out_dir`` not an empty folder.
        DataError: bad input (see :func:`load_observation`).
    """
    out = Path(out_dir)
    _check_names(out, camera, site)
    observations = load_input(in_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_cubes = sum(write_observation(out, o, camera, site) for o in observations)
    n_src = sum(len(o.frames_adu) for o in observations)
    return {"observations": len(observations), "cubes": n_cubes, "source_frames": n_src}


def summary(campaign_dir: str | Path) -> str:
    """Read the campaign back with the project's reader: a one-line summary."""
    fr = read_campaign(campaign_dir)
    temps = ", ".join(f"{o.temperature_mean_degC:.2f}" for o in fr.observations)
    n_fields = int(np.unique(fr.field_id).size)
    return (
        f"{campaign_dir}: camera {fr.camera} at {fr.site}, {len(fr.observations)} observations "
        f"(TRP1 {temps} degC), {n_fields} field positions, {len(fr)} source frames read "
        f"({int(fr.usable.sum())} usable, {fr.drops.n_frames} dropped)"
    )


# ------------------------------------------------------------------------- demo input
#: The demo's plateaux (degC), OBSIDs, field positions (deg) and star.
DEMO_PLATEAUX_DEGC = (-85.0, -75.0)
DEMO_OBSIDS = (1024, 1035)
DEMO_THETA_DEG = (3.0, 12.0)
DEMO_PHI_DEG = (45.0, 200.0)
DEMO_WINDOW_PX = 40
DEMO_FRAMES_PER_FIELD = 2
DEMO_BIAS_FRAMES = 2
DEMO_FLUX_E = 3.0e5
DEMO_SIGMA_PX = 1.3
DEMO_GAIN_E_PER_ADU = cf.NOMINAL_GAIN_E_PER_ADU
DEMO_READ_NOISE_E = 50.0
DEMO_START_UNIX_S = cf.parse_utc("2026-03-02T08:00:00")


def write_demo_input(in_dir: str | Path, seed: int = 0) -> list[Path]:
    """A tiny input in this layout: 2 observations x 2 field positions x 2 frames.

    The star is a pixel-sampled Gaussian (``DEMO_SIGMA_PX``, ``DEMO_FLUX_E`` electrons) near
    the centre of a ``DEMO_WINDOW_PX`` window placed where the nominal camera sees the field
    position; frames hold Poisson and read noise on a 1000-ADU offset, at
    ``DEMO_GAIN_E_PER_ADU``; TRP1 has 0.01 degC of noise.  Returns the files written.
    """
    rng = np.random.default_rng(seed)
    in_dir = Path(in_dir)
    in_dir.mkdir(parents=True, exist_ok=True)
    ccd, row, col = ccd_of_field(
        PLATO_NORMAL_CAMERA, np.array(DEMO_THETA_DEG), np.array(DEMO_PHI_DEG)
    )
    w, half = DEMO_WINDOW_PX, DEMO_WINDOW_PX // 2
    row0 = np.round(row).astype(int) - half
    col0 = np.round(col).astype(int) - half
    yy, xx = np.mgrid[0:w, 0:w]
    cycle_s, offset_adu = 2.5, cf.NOMINAL_OFFSET_ADU
    paths, t = [], DEMO_START_UNIX_S
    for obsid, temp in zip(DEMO_OBSIDS, DEMO_PLATEAUX_DEGC, strict=True):
        t_first = t
        t += 60.0  # HK runs a minute before the first frame
        rec = {k: [] for k in ("frames", "time", "window", "bias", "bias_time", "bias_window")}
        for k in range(len(DEMO_THETA_DEG)):
            for j in range(DEMO_BIAS_FRAMES):
                e = rng.normal(0.0, DEMO_READ_NOISE_E, (w, w))
                rec["bias"].append(np.round(offset_adu + e / DEMO_GAIN_E_PER_ADU))
                rec["bias_time"].append(t + j * cycle_s)
                rec["bias_window"].append(k)
            t += DEMO_BIAS_FRAMES * cycle_s + 5.0  # shutter opens
            g = np.exp(
                -((yy - (row[k] - row0[k])) ** 2 + (xx - (col[k] - col0[k])) ** 2)
                / (2 * DEMO_SIGMA_PX**2)
            )
            star_e = DEMO_FLUX_E * g / g.sum()
            for j in range(DEMO_FRAMES_PER_FIELD):
                e = rng.poisson(star_e) + rng.normal(0.0, DEMO_READ_NOISE_E, (w, w))
                rec["frames"].append(np.round(offset_adu + e / DEMO_GAIN_E_PER_ADU))
                rec["time"].append(t + j * cycle_s)
                rec["window"].append(k)
            t += DEMO_FRAMES_PER_FIELD * cycle_s + 30.0  # slew to the next field position
        hk_t = np.arange(t_first, t + 60.0, 4.0)
        path = in_dir / f"plateau_{obsid}.npz"
        np.savez(
            path,
            frames_adu=np.asarray(rec["frames"]).astype(np.uint16),
            time_unix_s=np.asarray(rec["time"]),
            window=np.asarray(rec["window"]),
            bias_frames_adu=np.asarray(rec["bias"]).astype(np.uint16),
            bias_time_unix_s=np.asarray(rec["bias_time"]),
            bias_window=np.asarray(rec["bias_window"]),
            field_theta_deg=np.asarray(DEMO_THETA_DEG),
            field_phi_deg=np.asarray(DEMO_PHI_DEG),
            ccd=ccd,
            row0_px=row0,
            col0_px=col0,
            exptime_s=np.float64(0.1),
            gain_e_per_adu=np.float64(DEMO_GAIN_E_PER_ADU),
            obsid=np.int64(obsid),
            hk_time_unix_s=hk_t,
            hk_trp1_degC=temp + 0.01 * rng.standard_normal(hk_t.size),
        )
        paths.append(path)
        t += 3600.0  # the next plateau an hour later
    return paths


# ------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in", dest="in_dir", help="input folder (one .npz per observation)")
    ap.add_argument(
        "--out",
        default="out/convert_own_layout/campaign",
        help="campaign folder to write (absent or empty)",
    )
    ap.add_argument("--camera", help="camera name (no '_'); demo: 'democam'")
    ap.add_argument("--site", help="test house (letters, digits, '-'); demo: 'DEMO'")
    ap.add_argument(
        "--demo",
        action="store_true",
        help="first write a tiny synthetic input (into --in or a temporary folder)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the demo input")
    args = ap.parse_args(argv)
    if not args.demo and not (args.in_dir and args.camera and args.site):
        ap.error("--in, --camera and --site are required (or use --demo)")
    camera = args.camera or "democam"
    site = args.site or "DEMO"
    with tempfile.TemporaryDirectory(prefix="own_layout_") as tmp:
        in_dir = Path(args.in_dir or tmp)
        if args.demo:
            write_demo_input(in_dir, seed=args.seed)
        n = convert(in_dir, args.out, camera, site)
    print(
        f"wrote {args.out}: {n['observations']} observations, {n['cubes']} cube files, "
        f"{n['source_frames']} source frames (format v{cf.FORMAT_VERSION})"
    )
    print(summary(args.out))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except PlatoFocusError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
