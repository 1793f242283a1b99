"""Campaign reader: a ground-test campaign folder (format v1) -> tidy per-frame arrays.

What it does, per observation (one TRP1 plateau) and cube file, in acquisition order:

1. reads the HK CSV file(s) and interpolates TRP1 at each frame's time
   (``DATE-OBS + k * CYCLETIM``); a frame farther than 60 s from every HK sample is dropped;
2. memory-maps each cube once (:func:`plato_sim.io.campaign_format.read_cube`); a
   closed-shutter cube becomes the background (mean of its frames, float ADU) of the next
   source cubes of the same extension and field position;
3. subtracts the background from every source frame in float (the raw uint16 values are
   never cast to a signed type), converts to **electrons** with the cube's ``GAIN`` (or the
   nominal 25 e-/ADU), and cuts a ``32 x 32`` stamp centred on the star's centroid with
   :func:`plato_sim.stamps.extract_stamp` (the procedure the synthetic datasets use);
4. flags frames: saturated (65535 ADU, or above 90 % of the full well), no detectable star,
   cosmic ray, star too close to the window edge for the 10x10 EEF box, and all frames of an
   observation whose TRP1 varied by more than 0.5 degC (not a plateau: warned, kept as its
   own observation, excluded from fits by default).

Beyond the format's list, a cube is also refused when its primary ``OBSID`` or ``CAMERA``
contradicts its folder, when a header value is not finite or out of range (``CCD_ID`` not
that of the extension name, window origin off the CCD, negative ``FOV_TH``), and frames of
float data (an adapter's) are dropped when they are not raw 16-bit ADU (outside 0-65535).

Bad input never crashes silently: a file that cannot be used is reported with its path,
extension and reason and its frames are counted as dropped (``strict=True`` raises
:class:`~plato_sim.io.campaign_format.FormatError` instead); a campaign with no usable frame
raises :class:`CampaignError`.

Frames can also be made from plain arrays with :meth:`CampaignFrames.from_arrays` (the reader
builds its result there too), e.g. to run the estimators on stamps from elsewhere.

Stamps are in electrons (e-) above the background; ``(row, col)`` are the star centroid's
CCD coordinates (0-based, pixel centres integral, :mod:`plato_sim.optics.camera` convention).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from plato_sim.errors import CampaignError, ParameterError, warn
from plato_sim.io import campaign_format as cf
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA
from plato_sim.stamps import background_adu, extract_stamp, saturation_level_adu

__all__ = [
    "CampaignError",
    "CampaignFrames",
    "DropReport",
    "ObservationInfo",
    "read_campaign",
    "FLAG_SATURATED",
    "FLAG_NO_STAR",
    "FLAG_COSMIC",
    "FLAG_UNSTABLE",
    "FLAG_EDGE",
    "FLAG_NAMES",
    "UNSTABLE_RANGE_DEGC",
    "PLATEAU_GAP_DEGC",
]

FLAG_SATURATED = 1
FLAG_NO_STAR = 2
FLAG_COSMIC = 4
FLAG_UNSTABLE = 8
FLAG_EDGE = 16
#: Flag bit -> reason name used in drop reports.
FLAG_NAMES = {
    FLAG_SATURATED: "saturated",
    FLAG_NO_STAR: "no_star",
    FLAG_COSMIC: "cosmic_ray",
    FLAG_UNSTABLE: "unstable_plateau",
    FLAG_EDGE: "star_at_window_edge",
}

#: An observation whose TRP1 spans more than this over its frames is not a plateau
#: (ground-test-format.md).
UNSTABLE_RANGE_DEGC = 0.5
#: A star is detected when the 3x3 box sum around its peak exceeds this many times its noise.
#: ASSUMED: far below any usable star (>1e5 e- in 3x3 against ~150 e- of read noise), far
#: above a noise peak among 4096 pixels (< 5 sigma).
STAR_DETECTION_SNR = 10.0
#: Cosmic-ray test thresholds (ASSUMED; false-alarm rate ~1e-9 per pixel for Gaussian noise):
#: a pixel exceeds the other frames of the same dither by this many sigma (+ 5 % of the
#: level for lamp flicker), or, far from the star, its 3x3 neighbourhood median.
COSMIC_NSIGMA = 7.0
COSMIC_FAR_RADIUS_PX = 7.0
#: Frames are repeats of one dither when their centroids agree within this (pixels): the
#: centroid noise of a repeat is ~0.003 px, while two consecutive random dithers land this
#: close with probability ~3e-4.
_REPEAT_TOL_PX = 0.05
#: Total read noise used in the noise model (plato-facts.md: 38.7 and 32 e- in quadrature).
READ_NOISE_E = math.hypot(38.7, 32.0)
#: Half side of the EEF's outer box: the 10x10 box must lie inside the window.
_EEF_HALF_BOX_PX = 6


@dataclass
class DropReport:
    """What the reader could not use, and why.

    Attributes:
        frames: reason -> number of frames dropped (not present in the frames).
        files: ``(path, reason, message)`` of every file or extension that was skipped.
        warnings: human-readable warnings (unstable plateaux, edge cases).
    """

    frames: Counter = field(default_factory=Counter)
    files: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def add(self, reason: str, n_frames: int, message: str, path: Path | None = None) -> None:
        """Record ``n_frames`` dropped for ``reason``, with a message naming the source."""
        self.frames[reason] += int(n_frames)
        if path is not None:
            self.files.append((str(path), reason, message))
        self.warnings.append(warn(message))

    @property
    def n_frames(self) -> int:
        """Total frames dropped."""
        return int(sum(self.frames.values()))


@dataclass(frozen=True)
class ObservationInfo:
    """One observation (TRP1 plateau).

    Attributes:
        obsid: observation id.
        path: its folder.
        n_frames: source frames read (kept in the frames, flagged or not).
        temperature_mean_degC: mean TRP1 over those frames (NaN if none).
        temperature_range_degC: max - min of TRP1 over those frames.
        unstable: range above :data:`UNSTABLE_RANGE_DEGC`.
    """

    obsid: int
    path: Path
    n_frames: int
    temperature_mean_degC: float
    temperature_range_degC: float
    unstable: bool


@dataclass
class CampaignFrames:
    """Tidy per-frame arrays of one camera's campaign (``N`` source frames).

    Attributes:
        stamps: ``(N, S, S)`` float32, background-subtracted, electrons, star centroid at the
            central pixel ``S // 2``.
        temperature_degC: ``(N,)`` TRP1 at the frame time.
        time_s: ``(N,)`` frame time, seconds since 1970 UTC.
        obsid: ``(N,)`` int64.
        field_id: ``(N,)`` int32, index into the campaign's distinct field positions.
        field_theta_deg, field_phi_deg: ``(N,)`` commanded field position (deg).
        ccd: ``(N,)`` int8 CCD id (1-4).
        row, col: ``(N,)`` star centroid on the CCD (pixels).
        flags: ``(N,)`` uint16 bit mask (``FLAG_*``); 0 = usable.
        peak_e: ``(N,)`` float32, maximum of the 3x3-smoothed frame (e-/px).
        cube_index: ``(N,)`` int32 index into ``cube_paths``; ``frame_index`` the frame in it.
        camera, site: from the folder names.
        observations: per-observation info, in OBSID order.
        drops: the drop report.
    """

    stamps: np.ndarray
    temperature_degC: np.ndarray
    time_s: np.ndarray
    obsid: np.ndarray
    field_id: np.ndarray
    field_theta_deg: np.ndarray
    field_phi_deg: np.ndarray
    ccd: np.ndarray
    row: np.ndarray
    col: np.ndarray
    flags: np.ndarray
    peak_e: np.ndarray
    cube_index: np.ndarray
    frame_index: np.ndarray
    cube_paths: list
    camera: str
    site: str
    observations: list
    drops: DropReport

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    @property
    def usable(self) -> np.ndarray:
        """Frames with no flag."""
        return self.flags == 0

    def flag_counts(self) -> dict[str, int]:
        """Number of frames carrying each flag (a frame may carry several)."""
        return {name: int(np.sum((self.flags & bit) != 0)) for bit, name in FLAG_NAMES.items()}

    def excluded_counts(self, ignore: int = 0) -> dict[str, int]:
        """Frames excluded by their flags, each counted once under its lowest flag bit."""
        out: Counter = Counter()
        f = self.flags & ~np.uint16(ignore)
        for bit, name in sorted(FLAG_NAMES.items()):
            sel = (f & bit) != 0
            out[name] += int(np.sum(sel))
            f = np.where(sel, 0, f)
        return {k: v for k, v in out.items() if v}

    def plateau_mask(self, plateaux_degC) -> np.ndarray:
        """Frames of the observations whose mean TRP1 is nearest each of ``plateaux_degC``.

        How a subset of a campaign's plateaux is chosen by nominal temperature (degC); a
        nominal value maps onto its nearest observation even when none lies close.
        """
        temps = np.asarray([o.temperature_mean_degC for o in self.observations])
        ids = [o.obsid for o in self.observations]
        want = [ids[int(np.argmin(np.abs(temps - t)))] for t in plateaux_degC]
        return np.isin(self.obsid, want)

    def select(self, mask: np.ndarray) -> CampaignFrames:
        """A copy holding only the frames where ``mask`` is true."""
        m = np.asarray(mask, dtype=bool)
        kw = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            kw[name] = v[m] if isinstance(v, np.ndarray) and v.shape[:1] == m.shape else v
        return CampaignFrames(**kw)

    @classmethod
    def from_arrays(
        cls,
        stamps: ArrayLike,
        temperatures_degC: ArrayLike,
        theta_deg: ArrayLike,
        phi_deg: ArrayLike,
        *,
        timestamps: ArrayLike | None = None,
        obsids: ArrayLike | None = None,
        field_id: ArrayLike | None = None,
        ccd: ArrayLike | None = None,
        row: ArrayLike | None = None,
        col: ArrayLike | None = None,
        flags: ArrayLike | None = None,
        peak_e: ArrayLike | None = None,
        cube_index: ArrayLike | None = None,
        frame_index: ArrayLike | None = None,
        cube_paths: list | None = None,
        camera: str = "",
        site: str = "",
        observations: list[ObservationInfo] | None = None,
        drops: DropReport | None = None,
    ) -> CampaignFrames:
        """Frames from plain arrays (``N`` frames); what is not given gets a sensible default.

        The one way to make frames (:func:`read_campaign` uses it too); arrays are copied
        into the attributes' dtypes.  Shapes and units:

        * ``stamps``: ``(N, S, S)`` background-subtracted stamps, **electrons**, star centroid
          at the central pixel ``S // 2``, CCD pixel axes ``[row, col]``; finite.
        * ``temperatures_degC``: ``(N,)`` TRP1 at each frame (degC); finite.
        * ``theta_deg``, ``phi_deg``: ``(N,)`` field position (deg): ``theta >= 0``, ``phi``
          finite (taken modulo 360 when outside 0-360).
        * ``timestamps``: ``(N,)`` s since 1970 UTC; default ``0, 1, ..., N-1``.
        * ``obsids``: ``(N,)`` observation (plateau) ids >= 0; default: the temperatures
          sorted and split where neighbours are more than :data:`PLATEAU_GAP_DEGC` apart,
          numbered 1, 2, ... from the coldest plateau.
        * ``field_id``: ``(N,)`` >= 0; default: distinct ``(theta, phi)`` (equal within the
          format's 1e-4 deg) numbered in first-seen order.
        * ``ccd`` (1-4), ``row``, ``col`` (pixels): ``(N,)``; default: where the nominal
          camera (:data:`~plato_sim.optics.camera.PLATO_NORMAL_CAMERA`) sees the field.
        * ``flags``: ``(N,)`` ``FLAG_*`` masks (0-65535); default: 0 (usable), except
          :data:`FLAG_UNSTABLE` on the frames of an unstable observation.
        * ``peak_e``: ``(N,)`` 3x3-smoothed maximum (e-/px); default: from the stamps.
        * ``cube_index`` (into ``cube_paths``, -1: none), ``frame_index``: ``(N,)``;
          default -1 and ``0, 1, ..., N-1``; ``cube_paths``, ``camera``, ``site``: empty.
        * ``observations``: an :class:`ObservationInfo` for every OBSID of the frames;
          default: from the frames' temperatures (mean, range; unstable when the range
          exceeds :data:`UNSTABLE_RANGE_DEGC`), folder ``Path()``.
        * ``drops``: the :class:`DropReport` (default empty).

        Raises:
            ParameterError: a wrong shape, a non-finite or out-of-range value, a field off
                the CCDs without ``ccd``, an OBSID without observation (naming the array, the
                value and what is allowed).
        """
        st = _checked_stamps(stamps)
        n = st.shape[0]
        temp, theta, phi = _field_arrays(n, temperatures_degC, theta_deg, phi_deg)
        obsid, observations, fl = _plateaux(temp, obsids, observations, flags)
        ccd_a, row_a, col_a = _ccd_position(theta, phi, ccd, row, col)
        paths = list(cube_paths or [])
        time_s, cube_i, frame_i = _bookkeeping(n, timestamps, cube_index, frame_index, len(paths))
        fid = _optional("field_id", field_id, n, np.int32, lambda: _field_ids(theta, phi),
                        lo=0, integral=True)  # fmt: skip
        return cls(
            stamps=st,
            temperature_degC=temp,
            time_s=time_s,
            obsid=obsid,
            field_id=fid,
            field_theta_deg=theta,
            field_phi_deg=phi,
            ccd=ccd_a,
            row=row_a,
            col=col_a,
            flags=fl,
            peak_e=_optional("peak_e", peak_e, n, np.float32, lambda: _smoothed_peak(st)),
            cube_index=cube_i,
            frame_index=frame_i,
            cube_paths=paths,
            camera=str(camera),
            site=str(site),
            observations=list(observations),
            drops=DropReport() if drops is None else drops,
        )


# ------------------------------------------------------------------ from_arrays helpers
#: Plateaux of :meth:`CampaignFrames.from_arrays` without OBSIDs: sorted temperatures more
#: than this apart (degC) belong to different plateaux (plateaux are degrees apart, TRP1
#: noise within one is ~0.01 degC).
PLATEAU_GAP_DEGC = UNSTABLE_RANGE_DEGC


def _per_frame(
    name: str,
    value: ArrayLike,
    n: int,
    dtype: type,
    lo: float | None = None,
    hi: float | None = None,
    integral: bool = False,
) -> np.ndarray:
    """``value`` as a ``(n,)`` array of ``dtype``: finite, within ``[lo, hi]``, integral.

    Raises:
        ParameterError: naming ``name``, the offending value and what is allowed.
    """
    a = np.asarray(value)
    if a.shape != (n,):
        raise ParameterError(f"{name} has shape {a.shape}; expected ({n},), one value per stamp")
    try:
        f = a.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name} must hold numbers, got dtype {a.dtype}") from exc
    bad = np.flatnonzero(~np.isfinite(f))
    if bad.size:
        raise ParameterError(
            f"{name}[{bad[0]}] = {f[bad[0]]}: {bad.size} non-finite value(s); allowed: finite"
        )
    rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    out = (f < lo if lo is not None else False) | (f > hi if hi is not None else False)
    if np.any(out):
        i = int(np.flatnonzero(out)[0])
        raise ParameterError(f"{name}[{i}] = {f[i]:g} is outside the allowed range {rng}")
    if integral and np.any(f != np.round(f)):
        i = int(np.flatnonzero(f != np.round(f))[0])
        raise ParameterError(f"{name}[{i}] = {f[i]:g} is not an integer; allowed: {rng}")
    return np.array(a, dtype=dtype)


def _optional(
    name: str,
    value: ArrayLike | None,
    n: int,
    dtype: type,
    default: Callable[[], np.ndarray],
    **checks: Any,
) -> np.ndarray:
    """``default()`` when ``value`` is None, else ``value`` checked by :func:`_per_frame`."""
    return default() if value is None else _per_frame(name, value, n, dtype, **checks)


def _field_arrays(
    n: int, temperatures_degC: ArrayLike, theta_deg: ArrayLike, phi_deg: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked float64 temperatures (finite), theta (>= 0) and phi (modulo 360 outside 0-360)."""
    temp = _per_frame("temperatures_degC", temperatures_degC, n, np.float64)
    theta = _per_frame("theta_deg", theta_deg, n, np.float64, lo=0.0)
    phi = _per_frame("phi_deg", phi_deg, n, np.float64)
    return temp, theta, np.where((phi < 0.0) | (phi > 360.0), phi % 360.0, phi)


def _bookkeeping(
    n: int,
    timestamps: ArrayLike | None,
    cube_index: ArrayLike | None,
    frame_index: ArrayLike | None,
    n_cubes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame times (default 0, 1, ... s), cube indices (default -1), frame indices (0, 1, ...)."""
    time_s = _optional("timestamps", timestamps, n, np.float64, lambda: np.arange(n, dtype=float))
    cube_i = _optional(
        "cube_index", cube_index, n, np.int32, lambda: np.full(n, -1, dtype=np.int32),
        lo=-1, hi=n_cubes - 1, integral=True,
    )  # fmt: skip
    frame_i = _optional(
        "frame_index", frame_index, n, np.int32, lambda: np.arange(n, dtype=np.int32),
        lo=0, integral=True,
    )  # fmt: skip
    return time_s, cube_i, frame_i


def _plateaux(
    temp: np.ndarray,
    obsids: ArrayLike | None,
    observations: list[ObservationInfo] | None,
    flags: ArrayLike | None,
) -> tuple[np.ndarray, list[ObservationInfo], np.ndarray]:
    """OBSIDs, observations and flags, given or derived (see :meth:`CampaignFrames.from_arrays`)."""
    n = temp.size
    if obsids is None:
        obsid = _plateau_ids(temp)
    else:
        obsid = _per_frame("obsids", obsids, n, np.int64, lo=0, integral=True)
    if observations is None:
        observations = _observations_of(obsid, temp)
    _check_observations(obsid, observations)
    if flags is None:
        unstable = [o.obsid for o in observations if o.unstable]
        fl = np.where(np.isin(obsid, unstable), FLAG_UNSTABLE, 0).astype(np.uint16)
    else:
        fl = _per_frame("flags", flags, n, np.uint16, lo=0, hi=0xFFFF, integral=True)
    return obsid, observations, fl


def _checked_stamps(stamps: ArrayLike) -> np.ndarray:
    """``stamps`` as a float32 ``(N, S, S)`` array, N >= 1, all finite (else ParameterError)."""
    try:
        st = np.array(stamps, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"stamps must be a numeric (N, S, S) array ({exc})") from exc
    if st.ndim != 3 or st.shape[0] < 1 or st.shape[1] != st.shape[2] or st.shape[1] < 1:
        raise ParameterError(
            f"stamps has shape {st.shape}; expected (N, S, S) with N >= 1 square stamps"
        )
    bad = np.flatnonzero(~np.all(np.isfinite(st), axis=(1, 2)))
    if bad.size:
        raise ParameterError(
            f"stamps: frame(s) {bad[:10].tolist()} hold NaN or infinite values; "
            "allowed: finite electrons"
        )
    return st


def _ccd_position(
    theta: np.ndarray,
    phi: np.ndarray,
    ccd: ArrayLike | None,
    row: ArrayLike | None,
    col: ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ccd int8, row, col float64)``: the given ones checked, the others from the field.

    Defaults come from the nominal camera: the CCD that sees ``(theta, phi)`` and the
    field's position on it.
    """
    n = theta.size
    cam = PLATO_NORMAL_CAMERA
    x, y = cam.field_to_focal_plane(theta, phi)
    if ccd is None:
        c = np.atleast_1d(cam.ccd_of_focal_plane(x, y)).astype(np.int8)
        off = np.flatnonzero(c == 0)
        if off.size:
            i = int(off[0])
            raise ParameterError(
                f"field (theta_deg, phi_deg)[{i}] = ({theta[i]:g}, {phi[i]:g}) deg is off the "
                "four CCDs of the nominal camera; pass ccd= (1-4), row= and col="
            )
    else:
        c = _per_frame("ccd", ccd, n, np.int8, lo=1, hi=4, integral=True)
    r0 = c0 = None
    if row is None or col is None:
        r0, c0 = cam.focal_plane_to_ccd(x, y, c.astype(int))
    r = _per_frame("row", row, n, np.float64) if row is not None else np.asarray(r0, float)
    k = _per_frame("col", col, n, np.float64) if col is not None else np.asarray(c0, float)
    return c, r, k


def _plateau_ids(temp: np.ndarray) -> np.ndarray:
    """Plateau ids 1, 2, ... (coldest first): sorted temperatures split at gaps above
    :data:`PLATEAU_GAP_DEGC`."""
    order = np.argsort(temp, kind="stable")
    new = np.concatenate([[True], np.diff(temp[order]) > PLATEAU_GAP_DEGC])
    ids = np.empty(temp.size, dtype=np.int64)
    ids[order] = np.cumsum(new)
    return ids


def _observations_of(obsid: np.ndarray, temp: np.ndarray) -> list[ObservationInfo]:
    """One :class:`ObservationInfo` per OBSID from its frames' temperatures (no folder)."""
    out = []
    for o in np.unique(obsid):
        t = temp[obsid == o]
        trange = float(t.max() - t.min())
        out.append(
            ObservationInfo(
                int(o), Path(), int(t.size), float(t.mean()), trange, trange > UNSTABLE_RANGE_DEGC
            )
        )
    return out


def _check_observations(obsid: np.ndarray, observations: list[ObservationInfo]) -> None:
    """Every frame's OBSID has an observation (else ParameterError)."""
    missing = sorted(set(np.unique(obsid).tolist()) - {int(o.obsid) for o in observations})
    if missing:
        raise ParameterError(
            f"obsids {missing[:10]} have no entry in observations; allowed: "
            f"{sorted(int(o.obsid) for o in observations)}"
        )


def _smoothed_peak(stamps: np.ndarray) -> np.ndarray:
    """Maximum of each 3x3-smoothed stamp (edges padded), as :func:`extract_stamp` does."""
    img = stamps.astype(np.float64)
    h, w = img.shape[1:]
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    sm = sum(pad[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    return sm.reshape(len(img), -1).max(axis=1).astype(np.float32)


# ------------------------------------------------------------------------------ helpers
def _int_key(h, key: str) -> int:
    """An integer header value (a logical ``T``/``F`` or a fractional number is not one)."""
    v = h[key]
    if isinstance(v, bool) or float(v) != int(float(v)):
        raise ValueError(f"{key} = {v!r} is not an integer")
    return int(float(v))


def _header_values(path: Path, ext: cf.CubeExtension) -> dict:
    h = ext.header
    try:
        vals = dict(
            ccd=_int_key(h, "CCD_ID"),
            v_start=_int_key(h, "V_START"),
            h_start=_int_key(h, "H_START"),
            exptime_s=float(h["EXPTIME"]),
            cycle_s=float(h["CYCLETIM"]),
            shutter=str(h["SHUTTER"]).strip().upper(),
            theta_deg=float(h["FOV_TH"]),
            phi_deg=float(h["FOV_PHI"]) % 360.0,
            gain=float(h["GAIN"]) if "GAIN" in h else cf.NOMINAL_GAIN_E_PER_ADU,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise cf.FormatError(
            path, "bad_key_value", f"unparsable header value ({exc})", ext.name
        ) from exc
    bad = [
        k
        for k in ("exptime_s", "cycle_s", "theta_deg", "phi_deg", "gain")
        if not math.isfinite(vals[k])
    ]
    if bad:
        raise cf.FormatError(path, "bad_key_value", f"non-finite header value(s) {bad}", ext.name)
    ccd_of_name = cf.parse_image_ext_name(ext.name)[0]
    if vals["ccd"] != ccd_of_name:
        raise cf.FormatError(
            path,
            "bad_key_value",
            f"CCD_ID = {vals['ccd']} but the extension is {ext.name}",
            ext.name,
        )
    n_px = PLATO_NORMAL_CAMERA.ccd_pixels
    if not (0 <= vals["v_start"] < n_px and 0 <= vals["h_start"] < n_px):
        raise cf.FormatError(
            path,
            "bad_key_value",
            f"V_START = {vals['v_start']}, H_START = {vals['h_start']}: outside the "
            f"{n_px} x {n_px} px CCD",
            ext.name,
        )
    if vals["theta_deg"] < 0:
        raise cf.FormatError(
            path, "bad_key_value", f"FOV_TH = {vals['theta_deg']} deg is negative", ext.name
        )
    if vals["shutter"] not in (cf.SHUTTER_OPEN, cf.SHUTTER_CLOSED):
        raise cf.FormatError(
            path, "bad_key_value", f"SHUTTER must be OPEN or CLOSED: {vals['shutter']}", ext.name
        )
    if not vals["gain"] > 0 or not vals["cycle_s"] >= 0:
        raise cf.FormatError(path, "bad_key_value", "GAIN must be > 0 and CYCLETIM >= 0", ext.name)
    return vals


def _raw_frame_checks(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of ``(frames, rows, cols)`` raw ADU: all values finite; all within 0-65535.

    uint16 data always pass; float data (written by an adapter) must still be raw ADU of
    the 16-bit ADC, not background-subtracted or scaled values.
    """
    finite = np.all(np.isfinite(frames), axis=(1, 2))
    with np.errstate(invalid="ignore"):
        in_range = np.all((frames >= 0) & (frames <= cf.ADC_MAX_ADU), axis=(1, 2))
    return finite, in_range


def _primary_mismatch(primary, obsid: int, camera: str) -> str:
    """Why a cube's primary header contradicts its folder (OBSID, CAMERA), or ``""``."""
    try:
        h_obsid = _int_key(primary, "OBSID")
    except (TypeError, ValueError, OverflowError):
        return f"OBSID {primary['OBSID']!r} in the primary header is not an integer"
    problems = []
    if h_obsid != obsid:
        problems.append(f"OBSID {h_obsid} in the header but {obsid} in the folder name")
    h_camera = str(primary["CAMERA"]).strip()
    if h_camera != camera:
        problems.append(f"CAMERA {h_camera!r} in the header but {camera!r} in the folder name")
    return "; ".join(problems)


def _n_frames_of(path: Path) -> int:
    """Best-effort frame count of an unreadable cube (0 when even the headers fail)."""
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    try:
        n = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=True, do_not_scale_image_data=True) as hl:
                for hdu in hl[1:]:
                    shutter = str(hdu.header.get("SHUTTER", "")).strip().upper()
                    if cf.parse_image_ext_name(str(hdu.name)) and shutter == cf.SHUTTER_OPEN:
                        n += int(hdu.header.get("NAXIS3", 0))
        return n
    except Exception:
        return 0


def _cosmic_flags(windows_e: np.ndarray, cen: np.ndarray) -> np.ndarray:
    """Cosmic-ray test of the background-subtracted frames of one source cube (electrons).

    Consecutive frames whose centroids agree within ``_REPEAT_TOL_PX`` are repeats of one
    dither: a pixel far above the repeats' minimum is a hit.  Any frame: a pixel beyond
    :data:`COSMIC_FAR_RADIUS_PX` from the star's centroid that stands far above the median
    of its 8 neighbours.  The test works in window pixels (the stamps of two repeats may be
    cut one pixel apart when the centroid sits on a pixel boundary).
    """
    n, h, w = windows_e.shape
    out = np.zeros(n, dtype=bool)
    var_floor = READ_NOISE_E**2
    # groups of consecutive repeats (contiguous runs of frames at the same position)
    same = np.all(np.abs(np.diff(cen, axis=0)) < _REPEAT_TOL_PX, axis=1)
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    group = np.cumsum(np.concatenate([[True], ~same])) - 1
    sizes = np.diff(np.append(starts, n))
    if np.any(sizes >= 2):
        a = windows_e
        ref = np.minimum.reduceat(a, starts, axis=0)  # (G, H, W)
        sig = np.sqrt(2.0 * (np.clip(ref, 0, None) + var_floor))
        # tolerances: lamp flicker (5 % of the level) and a residual shift of up to
        # _REPEAT_TOL_PX between the repeats (local gradient x tolerance)
        rp = np.pad(ref, ((0, 0), (1, 1), (1, 1)), mode="edge")
        grad = np.max(
            np.abs(
                np.stack([rp[:, :-2, 1:-1], rp[:, 2:, 1:-1], rp[:, 1:-1, :-2], rp[:, 1:-1, 2:]])
                - ref
            ),
            axis=0,
        )
        tol = COSMIC_NSIGMA * sig + 0.05 * np.abs(ref) + grad * _REPEAT_TOL_PX
        excess = a - ref[group] - tol[group]
        out |= np.any(excess > 0, axis=(1, 2)) & (sizes[group] >= 2)
    # far from the star: only pixels above 2 x COSMIC_NSIGMA read-noise sigmas are candidates
    f_i, r_i, c_i = np.nonzero(windows_e > 2.0 * COSMIC_NSIGMA * READ_NOISE_E)
    far = np.hypot(r_i - cen[f_i, 0], c_i - cen[f_i, 1]) > COSMIC_FAR_RADIUS_PX
    f_i, r_i, c_i = f_i[far], r_i[far], c_i[far]
    if f_i.size:
        pad = np.pad(windows_e, ((0, 0), (1, 1), (1, 1)), mode="edge")
        neigh = np.stack(
            [pad[f_i, r_i + i, c_i + j] for i in range(3) for j in range(3) if (i, j) != (1, 1)]
        )
        med = np.median(neigh, axis=0)
        sig = np.sqrt(np.clip(med, 0, None) + var_floor)
        hit = (windows_e[f_i, r_i, c_i] - med) > 2.0 * COSMIC_NSIGMA * sig
        out[np.unique(f_i[hit])] = True
    return out


# ------------------------------------------------------------------------------ reading
class _Drops:
    """The reader's one rule for a bad file: raise when strict, else record it and go on.

    Attributes:
        report: the :class:`DropReport` being filled.
        strict: raise instead of recording.
    """

    def __init__(self, strict: bool) -> None:
        self.report = DropReport()
        self.strict = strict

    def fail(
        self,
        reason: str,
        path: Path,
        detail: str,
        ext: str | None = None,
        *,
        n_frames: int | None = None,
        listed: bool = True,
        cause: BaseException | None = None,
    ) -> None:
        """Make a format error for ``path`` and :meth:`reject` it (``file=path`` if ``listed``)."""
        err = cf.FormatError(path, reason, detail, ext)
        self.reject(err, n_frames=n_frames, file=path if listed else None, cause=cause)

    def reject(
        self,
        err: cf.FormatError,
        *,
        n_frames: int | None = None,
        file: Path | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """Raise ``err`` (from ``cause``) when strict; else record it.

        Recorded: its message as a warning; ``n_frames`` dropped frames under its reason
        (``None``: the frames are counted elsewhere, or there are none); ``file`` (when
        given) in the report's list of skipped files.
        """
        if self.strict:
            if cause is None or cause is err:
                raise err
            raise err from cause
        msg = str(err)
        if n_frames is not None:
            self.report.frames[err.reason] += int(n_frames)
        if file is not None:
            self.report.files.append((str(file), err.reason, msg))
        self.report.warnings.append(warn(msg))


@dataclass
class _Acc:
    """Per-frame lists (one entry per source extension), concatenated at the end."""

    stamps: list = field(default_factory=list)
    time_s: list = field(default_factory=list)
    obsid: list = field(default_factory=list)
    theta: list = field(default_factory=list)
    phi: list = field(default_factory=list)
    ccd: list = field(default_factory=list)
    row: list = field(default_factory=list)
    col: list = field(default_factory=list)
    flags: list = field(default_factory=list)
    peak: list = field(default_factory=list)
    cube: list = field(default_factory=list)
    frame: list = field(default_factory=list)
    temp: list = field(default_factory=list)
    covered: list = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        """Source frames accumulated so far."""
        return sum(len(x) for x in self.obsid)


@dataclass
class _Source:
    """One source extension to turn into frames: where it is and what goes with it.

    Attributes:
        path: the cube file; ``ext`` its extension; ``hv`` the checked header values
            (:func:`_header_values`); ``bg`` the background (ADU, window shape);
        t0_s: the cube's ``DATE-OBS`` (s); ``cube_idx`` its index in the cube list;
        obsid: the observation; ``size`` the stamp side (pixels).
    """

    path: Path
    ext: cf.CubeExtension
    hv: dict
    bg: np.ndarray
    t0_s: float
    cube_idx: int
    obsid: int
    size: int


def _checked_frames(src: _Source, report: DropReport) -> tuple[np.ndarray, np.ndarray]:
    """The extension's frames as float32 ADU and the mask of those that are raw 16-bit data.

    Frames with NaN/inf or values outside 0-65535 ADU are recorded as dropped (in strict
    mode too: they are frames, not a bad file).
    """
    path, ext = src.path, src.ext
    frames = ext.data.astype(np.float32)  # from uint16 (or float): exact, no signed overflow
    finite, in_range = _raw_frame_checks(frames)
    if not np.all(finite):
        bad = np.flatnonzero(~finite)
        report.add(
            "non_finite",
            bad.size,
            f"{path}[{ext.name}] frame(s) {bad.tolist()}: NaN or infinite values, dropped",
            path,
        )
    if not np.all(in_range[finite]):
        bad = np.flatnonzero(finite & ~in_range)
        report.add(
            "out_of_range",
            bad.size,
            f"{path}[{ext.name}] frame(s) {bad.tolist()}: values outside the raw 16-bit range "
            f"0-{cf.ADC_MAX_ADU} ADU (not raw data), dropped",
            path,
        )
    return frames, finite & in_range


def _frame_noise_e(frames: np.ndarray, bg: np.ndarray, gain: float) -> np.ndarray:
    """Per-frame pixel noise (e-): robust MAD of the background-subtracted frame.

    The star covers a few tens of the window's pixels; every other pixel is plenty for a MAD.
    """
    nf = frames.shape[0]
    sub_all = ((frames[:, ::2, ::2] - bg[None, ::2, ::2]) * np.float32(gain)).reshape(nf, -1)
    med = np.median(sub_all, axis=1)
    mad = np.median(np.abs(sub_all - med[:, None]), axis=1)
    return np.maximum(1.4826 * np.nan_to_num(mad, nan=1e-3), 1e-3)


def _process_source(src: _Source, acc: _Acc, drops: DropReport) -> None:
    """Background-subtract, convert to e-, cut and flag every usable frame of a source."""
    frames, ok = _checked_frames(src, drops)
    hv, bg = src.hv, src.bg
    gain = hv["gain"]
    sat_adu = saturation_level_adu(gain)
    noise_e = _frame_noise_e(frames, bg, gain)
    h, w = frames.shape[1:]
    cuts, flags, wins = [], [], []
    for k in np.flatnonzero(ok):
        raw = frames[k]
        sub_adu = raw - bg
        sub_e = sub_adu * np.float32(gain)
        f = 0
        if raw.max() >= cf.ADC_MAX_ADU or sub_adu.max() > sat_adu:
            f |= FLAG_SATURATED
        cut = extract_stamp(sub_e, src.size)
        wins.append(sub_e)
        if 3.0 * cut.peak / noise_e[k] < STAR_DETECTION_SNR:
            f |= FLAG_NO_STAR
        r, c = cut.centre_row, cut.centre_col
        if (
            r - _EEF_HALF_BOX_PX < 0
            or c - _EEF_HALF_BOX_PX < 0
            or r + _EEF_HALF_BOX_PX > h
            or c + _EEF_HALF_BOX_PX > w
        ):
            f |= FLAG_EDGE
        cuts.append(cut)
        flags.append(f)
    if not cuts:
        return
    keep = np.flatnonzero(ok)
    cens = np.asarray([(cut.centroid_row, cut.centroid_col) for cut in cuts])
    fl = np.asarray(flags, dtype=np.uint16)
    fl |= np.where(_cosmic_flags(np.stack(wins), cens), FLAG_COSMIC, 0).astype(np.uint16)
    acc.stamps.append(np.stack([cut.stamp for cut in cuts]))
    acc.time_s.append(src.t0_s + keep * hv["cycle_s"])
    acc.obsid.append(np.full(keep.size, src.obsid))
    acc.theta.append(np.full(keep.size, hv["theta_deg"]))
    acc.phi.append(np.full(keep.size, hv["phi_deg"]))
    acc.ccd.append(np.full(keep.size, hv["ccd"]))
    acc.row.append(np.asarray([hv["v_start"] + cut.centroid_row for cut in cuts]))
    acc.col.append(np.asarray([hv["h_start"] + cut.centroid_col for cut in cuts]))
    acc.flags.append(fl)
    acc.peak.append(np.asarray([cut.peak for cut in cuts]))
    acc.cube.append(np.full(keep.size, src.cube_idx))
    acc.frame.append(keep)


def _read_hk(obs_dir: Path, obsid: int, drops: _Drops) -> tuple[cf.HKTable | None, str]:
    """The observation's HK table (None if unusable) and, if None, the reason."""
    files = sorted(
        p for p in obs_dir.iterdir() if (m := cf.parse_hk_file_name(p.name)) and m[0] == obsid
    )
    if not files:
        reason = "missing_hk"
        drops.fail(
            reason, obs_dir, f"no HK file *_TCS-HK_<YYYYMMDD>.csv in {obs_dir}", listed=False
        )
        return None, reason
    tables = []
    reason = ""
    for p in files:
        try:
            tables.append(cf.read_hk_csv(p))
        except cf.FormatError as err:
            drops.reject(err, file=p)
            reason = err.reason
    return (cf.HKTable.merge(tables), "") if tables else (None, reason)


def _open_cube(
    cpath: Path, obsid: int, camera: str, drops: _Drops
) -> tuple[cf.CubeFile, float] | None:
    """The cube and its ``DATE-OBS`` (s), or None (recorded) when it cannot be used."""
    try:
        cube = cf.read_cube(cpath)
    except cf.FormatError as err:
        drops.reject(err, n_frames=_n_frames_of(cpath), file=cpath)
        return None
    try:
        t0 = cf.parse_utc(str(cube.primary["DATE-OBS"]))
        mismatch = _primary_mismatch(cube.primary, obsid, camera)
        if mismatch:
            raise cf.FormatError(cpath, "header_mismatch", mismatch)
    except (ValueError, OverflowError) as exc:
        cube.close()
        err = (
            exc
            if isinstance(exc, cf.FormatError)
            else cf.FormatError(cpath, "bad_key_value", f"DATE-OBS unparsable ({exc})")
        )
        drops.reject(err, n_frames=_n_frames_of(cpath), file=cpath, cause=exc)
        return None
    return cube, t0


def _extension_values(cpath: Path, ext: cf.CubeExtension) -> dict:
    """Checked header values of an extension whose data can hold a star (else FormatError)."""
    hv = _header_values(cpath, ext)
    if ext.data.shape[0] < 1:
        raise cf.FormatError(
            cpath, "wrong_shape", f"no frame (data shape {ext.data.shape})", ext.name
        )
    if min(ext.data.shape[1:]) < 2 * _EEF_HALF_BOX_PX:
        raise cf.FormatError(
            cpath, "wrong_shape", f"unusable data shape {ext.data.shape}", ext.name
        )
    return hv


def _store_background(
    cpath: Path, ext: cf.CubeExtension, hv: dict, backgrounds: dict, report: DropReport
) -> None:
    """A closed-shutter extension: its mean raw frame becomes the background of its field."""
    bgf = ext.data.astype(np.float64)
    finite, in_range = _raw_frame_checks(bgf)
    ok = finite & in_range
    if not np.any(ok):
        why = "non_finite" if not np.any(finite) else "out_of_range"
        report.add(
            why,
            0,
            f"{cpath}[{ext.name}]: background has no finite frame within the "
            f"raw 16-bit range 0-{cf.ADC_MAX_ADU} ADU",
            cpath,
        )
        return
    backgrounds[(ext.name, hv["theta_deg"], hv["phi_deg"])] = (background_adu(bgf[ok]), hv["ccd"])


def _match_background(backgrounds: dict, ext_name: str, hv: dict) -> np.ndarray | None:
    """The latest background of the same extension and field position (None if none)."""
    bg = None
    for (en, th, ph), val in backgrounds.items():
        if (
            en == ext_name
            and abs(th - hv["theta_deg"]) <= cf.FIELD_MATCH_DEG
            and abs(((ph - hv["phi_deg"] + 180.0) % 360.0) - 180.0) <= cf.FIELD_MATCH_DEG
        ):
            bg = val[0]  # dict keeps insertion order: the last match is latest
    return bg


def _read_extension(
    cpath: Path,
    ext: cf.CubeExtension,
    cube_info: tuple[float, int, int, int],
    backgrounds: dict,
    acc: _Acc,
    drops: _Drops,
) -> None:
    """One extension: a background to store, or a source to cut (``cube_info`` is
    ``(t0_s, cube_idx, obsid, stamp_size)``)."""
    nf = int(ext.data.shape[0])
    try:
        hv = _extension_values(cpath, ext)
    except cf.FormatError as err:
        drops.reject(err, n_frames=nf, file=cpath)
        return
    if hv["shutter"] == cf.SHUTTER_CLOSED:
        _store_background(cpath, ext, hv, backgrounds, drops.report)
        return
    bg = _match_background(backgrounds, ext.name, hv)
    if bg is None:
        detail = (
            "source cube without a preceding closed-shutter cube of the same "
            f"extension and field (FOV_TH={hv['theta_deg']}, FOV_PHI={hv['phi_deg']})"
        )
        drops.fail("no_background", cpath, detail, ext.name, n_frames=nf)
        return
    if bg.shape != ext.data.shape[1:]:
        detail = f"window {ext.data.shape[1:]} differs from its background {bg.shape}"
        drops.fail("wrong_shape", cpath, detail, ext.name, n_frames=nf)
        return
    t0, ci, obsid, size = cube_info
    _process_source(_Source(cpath, ext, hv, bg, t0, ci, obsid, size), acc, drops.report)


def _read_cubes(
    listing: list[Path],
    obsid: int,
    camera: str,
    stamp_size: int,
    acc: _Acc,
    cube_paths: list[Path],
    drops: _Drops,
) -> None:
    """The observation's cubes in COUNTER order; closed-shutter cubes feed the backgrounds."""
    cubes = sorted(
        (m[2], p) for p in listing if (m := cf.parse_cube_file_name(p.name)) and m[0] == obsid
    )
    backgrounds: dict = {}
    for _counter, cpath in cubes:
        opened = _open_cube(cpath, obsid, camera, drops)
        if opened is None:
            continue
        cube, t0 = opened
        cube_paths.append(cpath)
        info = (t0, len(cube_paths) - 1, obsid, stamp_size)
        try:
            for ext in cube.extensions:
                _read_extension(cpath, ext, info, backgrounds, acc, drops)
        finally:
            cube.close()


def _observation_temperatures(
    obs_dir: Path,
    obsid: int,
    hk: cf.HKTable | None,
    hk_reason: str,
    n_before: int,
    acc: _Acc,
    report: DropReport,
) -> ObservationInfo:
    """TRP1 at the observation's frames (those from ``n_before`` on) and its summary.

    Frames without a temperature (no usable HK, or farther than the format's gap from every
    sample) are recorded as dropped; an observation whose TRP1 varies by more than
    :data:`UNSTABLE_RANGE_DEGC` is warned about and marked unstable.
    """
    n_after = acc.n_frames
    sl = slice(n_before, n_after)
    times = np.concatenate(acc.time_s)[sl] if n_after > n_before else np.zeros(0)
    if hk is None:
        temp = np.full(times.shape, np.nan)
        covered = np.zeros(times.shape, dtype=bool)
        if times.size:
            report.add(
                hk_reason, times.size, f"{obs_dir}: no usable HK, {times.size} frames dropped"
            )
    else:
        temp, covered = hk.temperature_at(times)
        if times.size and not np.all(covered):
            nbad = int(np.sum(~covered))
            report.add(
                "hk_not_covering",
                nbad,
                f"{obs_dir}: {nbad} frames more than {cf.HK_MAX_GAP_S:g} s from every HK "
                f"sample of {[str(p) for p in hk.paths]}, dropped",
            )
    acc.temp.append(temp)
    acc.covered.append(covered)
    good = temp[covered]
    if good.size:
        tmean, trange = float(good.mean()), float(good.max() - good.min())
    else:
        tmean, trange = math.nan, math.nan
    unstable = bool(good.size and trange > UNSTABLE_RANGE_DEGC)
    if unstable:
        report.warnings.append(
            warn(
                f"{obs_dir}: TRP1 varied by {trange:.2f} degC over the frames "
                f"(> {UNSTABLE_RANGE_DEGC} degC): not a plateau, kept separate and flagged"
            )
        )
    return ObservationInfo(obsid, obs_dir, int(good.size), tmean, trange, unstable)


def _read_observation(
    obs_dir: Path,
    obsid: int,
    camera: str,
    stamp_size: int,
    acc: _Acc,
    cube_paths: list[Path],
    drops: _Drops,
) -> ObservationInfo | None:
    """One observation folder: HK, cubes, temperatures (None when it cannot be listed)."""
    try:
        listing = sorted(obs_dir.iterdir())
    except OSError as exc:
        detail = f"cannot list the folder ({exc})"
        drops.fail("unreadable_folder", obs_dir, detail, listed=False, cause=exc)
        return None
    hk, hk_reason = _read_hk(obs_dir, obsid, drops)
    n_before = acc.n_frames
    _read_cubes(listing, obsid, camera, stamp_size, acc, cube_paths, drops)
    return _observation_temperatures(obs_dir, obsid, hk, hk_reason, n_before, acc, drops.report)


def _campaign_root(path: str | Path) -> Path:
    """``path`` as a campaign folder (CampaignError when it is not a folder)."""
    root = Path(path)
    if not root.is_dir():
        what = (
            "is a symbolic link that does not resolve (a loop?)"
            if root.is_symlink()
            else ("is not a folder" if root.exists() else "does not exist")
        )
        raise CampaignError(f"{root}: campaign folder {what}")
    return root


def _list_observations(
    root: Path, obsids: list[int] | None, report: DropReport
) -> tuple[dict[int, Path], str, str]:
    """The observation folders to read (OBSID -> folder), the camera and the site.

    Raises:
        CampaignError: folder not listable, no observation, an OBSID in several folders,
            several cameras, unknown ``obsids``.
    """
    obs_dirs: dict = {}
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise CampaignError(f"{root}: cannot list the campaign folder ({exc})") from exc
    for p in entries:
        parsed = cf.parse_obs_dir_name(p.name)
        if parsed is None:
            continue
        if not p.is_dir():
            if p.is_symlink():  # an observation folder that cannot be reached: say so
                report.warnings.append(
                    warn(
                        f"{p}: observation folder is a symbolic link that does not resolve "
                        "(broken or a loop), ignored"
                    )
                )
            continue
        if parsed[0] in obs_dirs:
            raise CampaignError(
                f"{root}: OBSID {parsed[0]} appears in several observation folders "
                f"({obs_dirs[parsed[0]][0].name}, {p.name}); one folder per OBSID"
            )
        obs_dirs[parsed[0]] = (p, parsed)
    if not obs_dirs:
        raise CampaignError(f"{root}: no observation folder <OBSID:05d>_<SITE>_<CAMERA>")
    cameras = {v[1][2] for v in obs_dirs.values()}
    if len(cameras) > 1:
        raise CampaignError(f"{root}: one camera per campaign, found {sorted(cameras)}")
    if obsids is not None:
        unknown = sorted(set(int(o) for o in obsids) - set(obs_dirs))
        if unknown:
            raise CampaignError(
                f"{root}: OBSID(s) {unknown} not in the campaign {sorted(obs_dirs)}"
            )
        obs_dirs = {o: obs_dirs[o] for o in sorted(set(int(o) for o in obsids))}
    site = next(iter(obs_dirs.values()))[1][1]
    return {o: v[0] for o, v in obs_dirs.items()}, cameras.pop(), site


def _assemble(
    root: Path,
    acc: _Acc,
    cube_paths: list[Path],
    names: tuple[str, str],
    observations: list[ObservationInfo],
    report: DropReport,
) -> CampaignFrames:
    """The frames with a temperature, through :meth:`CampaignFrames.from_arrays`.

    Unstable observations' frames get :data:`FLAG_UNSTABLE`; field ids are given over all
    frames (before the frames without temperature are dropped), in first-seen order.
    """
    if not acc.obsid:
        raise CampaignError(
            f"{root}: no usable source frame; problems: " + "; ".join(report.warnings[:10])
        )
    keep = np.concatenate(acc.covered)
    if not np.any(keep):
        raise CampaignError(
            f"{root}: no source frame with a temperature; problems: "
            + "; ".join(report.warnings[:10])
        )
    unstable_ids = [o.obsid for o in observations if o.unstable]
    obsid = np.concatenate(acc.obsid).astype(np.int64)
    flags = np.concatenate(acc.flags).astype(np.uint16)
    flags |= np.where(np.isin(obsid, unstable_ids), FLAG_UNSTABLE, 0).astype(np.uint16)
    theta = np.concatenate(acc.theta)
    phi = np.concatenate(acc.phi)
    field_id = _field_ids(theta, phi)
    return CampaignFrames.from_arrays(
        np.concatenate(acc.stamps)[keep],
        np.concatenate(acc.temp)[keep],
        theta[keep],
        phi[keep],
        timestamps=np.concatenate(acc.time_s)[keep],
        obsids=obsid[keep],
        field_id=field_id[keep],
        ccd=np.concatenate(acc.ccd)[keep],
        row=np.concatenate(acc.row)[keep],
        col=np.concatenate(acc.col)[keep],
        flags=flags[keep],
        peak_e=np.concatenate(acc.peak)[keep],
        cube_index=np.concatenate(acc.cube)[keep],
        frame_index=np.concatenate(acc.frame)[keep],
        cube_paths=cube_paths,
        camera=names[0],
        site=names[1],
        observations=observations,
        drops=report,
    )


def read_campaign(
    path: str | Path,
    obsids: list[int] | None = None,
    stamp_size: int = 32,
    strict: bool = False,
) -> CampaignFrames:
    """Read a campaign folder (format v1) into :class:`CampaignFrames`.

    Args:
        path: the campaign folder (one camera).
        obsids: only these observations (all by default); an unknown OBSID is an error.
        stamp_size: stamp side (pixels).
        strict: raise :class:`~plato_sim.io.campaign_format.FormatError` on the first bad
            file instead of dropping it.

    Raises:
        CampaignError: not a folder, no observation, several cameras, an OBSID in several
            folders, unknown OBSIDs, or no usable source frame at all.
        FormatError: any bad file when ``strict``.
    """
    root = _campaign_root(path)
    drops = _Drops(strict)
    obs_dirs, camera, site = _list_observations(root, obsids, drops.report)
    acc = _Acc()
    cube_paths: list[Path] = []
    observations: list[ObservationInfo] = []
    for obsid in sorted(obs_dirs):
        info = _read_observation(obs_dirs[obsid], obsid, camera, stamp_size, acc, cube_paths, drops)
        if info is not None:
            observations.append(info)
    return _assemble(root, acc, cube_paths, (camera, site), observations, drops.report)


def _field_ids(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Group field positions equal within the format's 1e-4 deg into ids (first-seen order)."""
    pairs, first, inv = np.unique(
        np.stack([theta, phi], axis=1), axis=0, return_index=True, return_inverse=True
    )
    inv = inv.ravel()
    order = np.argsort(first)  # first-seen order
    rep = np.empty(len(pairs), dtype=np.int32)
    known: list[tuple[float, float]] = []
    for u in order:
        t, p = pairs[u]
        for j, (kt, kp) in enumerate(known):
            if (
                abs(kt - t) <= cf.FIELD_MATCH_DEG
                and abs(((kp - p + 180.0) % 360.0) - 180.0) <= cf.FIELD_MATCH_DEG
            ):
                rep[u] = j
                break
        else:
            known.append((float(t), float(p)))
            rep[u] = len(known) - 1
    return rep[inv]
