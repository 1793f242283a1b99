"""Campaign reader: a ground-test campaign folder (format v1) -> tidy per-frame arrays.

What it does, per observation (one TRP1 plateau) and cube file, in acquisition order:

1. reads the HK CSV file(s) and interpolates TRP1 at each frame's time
   (``DATE-OBS + k * CYCLETIM``); a frame farther than 60 s from every HK sample is dropped;
2. opens each cube once, after checking it is a regular file
   (:func:`plato_sim.io.campaign_format.read_cube`), and reads its frames a block at a time
   (memory bounded whatever the cube's size); a closed-shutter cube becomes the background
   (mean of its frames, float ADU) of the next source cubes of the same extension and field
   position, once it looks like bias + dark and leaves ~0 far from the star in the source
   frames (:func:`check_background_level`, :func:`background_problem`);
3. subtracts the background from every source frame in float (the raw uint16 values are
   never cast to a signed type), converts to **electrons** with the cube's ``GAIN`` (or the
   nominal 25 e-/ADU), and cuts a ``32 x 32`` stamp centred on the star's centroid with
   :func:`plato_sim.stamps.extract_stamp` (the procedure the synthetic datasets use);
4. flags frames: saturated (65535 ADU, or above 90 % of the full well), no detectable star,
   cosmic ray, star too close to the window edge for the 10x10 EEF box, and all frames of an
   observation whose TRP1 varied by more than 0.5 degC (not a plateau: warned, kept as its
   own observation, excluded from fits by default);
5. checks TRP1 is plausible degC (:data:`TRP1_PLAUSIBLE_DEGC`) and that repeated HK time
   stamps agree, and counts plateaux by distinct temperature: observations within
   :data:`PLATEAU_GAP_DEGC` of each other are one plateau (warned; their frames carry the
   lowest OBSID).

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
    "TRP1_PLAUSIBLE_DEGC",
    "BIAS_LEVEL_RANGE_ADU",
    "BG_RESIDUAL_TOL_E",
    "BG_DIFFUSE_MAX_E",
    "BG_RESIDUAL_NSIGMA",
    "check_trp1",
    "check_background_level",
    "background_residual_adu",
    "plateau_groups",
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
#: (docs/campaign-format.md).
UNSTABLE_RANGE_DEGC = 0.5
#: Plateaux are counted by distinct temperature: sorted temperatures more than this apart
#: (degC) belong to different plateaux (plateaux are degrees apart, TRP1 noise within one is
#: ~0.01 degC).  Used by :meth:`CampaignFrames.from_arrays` without OBSIDs, and by the reader
#: to merge observations at one temperature into one plateau.
PLATEAU_GAP_DEGC = UNSTABLE_RANGE_DEGC
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
#: Total read noise used in the noise model (docs/facts.md: 38.7 and 32 e- in quadrature).
READ_NOISE_E = math.hypot(38.7, 32.0)
#: Half side of the EEF's outer box: the 10x10 box must lie inside the window.
_EEF_HALF_BOX_PX = 6

# ------------------------------------------------------------------ physical checks
#: Plausible TRP1 (degC).  TVAC plateaux lie at -90 ... -70 degC (docs/facts.md, "Ground
#: test"); the camera's operating range reaches a few tens of degrees either side, and a
#: room-temperature test is near +20 degC.  Values outside (TRP1 in kelvin: 180-300; a sign
#: lost: +70 ... +90; millikelvin) are not degC: the HK file is refused (``implausible_trp1``).
TRP1_PLAUSIBLE_DEGC = (-120.0, 40.0)
#: A TRP1 column whose samples are all equal over at least this many samples is a stuck sensor
#: (TRP1 noise is ~0.01 degC and the format writes 4 decimals): warned about.
TRP1_STUCK_MIN_SAMPLES = 10
#: A closed-shutter frame is bias + dark: its median must lie within this range (ADU), an
#: order of magnitude either side of the nominal ~1000 ADU offset (docs/facts.md, "Detector";
#: ASSUMED), and its pixels must not all be equal (a readout always has read noise).
BIAS_LEVEL_RANGE_ADU = (100.0, 10000.0)
#: The background-subtracted source frames far from the star (the window's outer ring of
#: ``BG_RING_PX`` pixels) must be ~0 (``bad_background`` otherwise): their median level,
#: in electrons, must lie within ``-BG_RESIDUAL_TOL_E`` ... ``BG_DIFFUSE_MAX_E +
#: BG_RESIDUAL_TOL_E``, widened by ``BG_RESIDUAL_NSIGMA`` standard errors.  50 e-/px is one
#: read-noise sigma (2 ADU at the nominal gain); diffuse light reaching the detector with the
#: shutter open (absent from the closed-shutter frames) is allowed up to the 100 e-/px the
#: training datasets cover (``plato_sim/data/default_dataset.yaml``).  A zeroed background
#: is ~25 000 e-/px off, one off by 100 ADU 2500 e-/px.
BG_RESIDUAL_TOL_E = 50.0
BG_DIFFUSE_MAX_E = 100.0
BG_RESIDUAL_NSIGMA = 5.0
BG_RING_PX = 2
#: Source frames (spread over the cube) on which the residual is measured.
BG_CHECK_FRAMES = 8
#: Longest run of repeats the cosmic-ray test holds in memory at once (frames of one dither,
#: typically 2-4; a longer run is tested in consecutive pieces of this length).
COSMIC_GROUP_MAX = 16


def check_trp1(trp1_degC: np.ndarray) -> str:
    """Why TRP1 samples (degC) are not plausible, or ``""`` (non-finite ones are ignored).

    Outside :data:`TRP1_PLAUSIBLE_DEGC` they are not degC (kelvin, a lost sign, mK).
    """
    v = np.asarray(trp1_degC, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = TRP1_PLAUSIBLE_DEGC
    bad = v[(v < lo) | (v > hi)]
    if not bad.size:
        return ""
    hint = " (kelvin?)" if np.all((bad > 150) & (bad < 320)) else ""
    return (
        f"{bad.size} TRP1 value(s) outside the plausible {lo:g} ... {hi:g} degC, e.g. "
        f"{bad[0]:g}{hint}"
    )


def check_background_level(bg_adu: np.ndarray) -> str:
    """Why a mean closed-shutter frame (ADU) is not bias + dark, or ``""``.

    Its median must lie in :data:`BIAS_LEVEL_RANGE_ADU` and its pixels must differ.
    """
    b = np.asarray(bg_adu, dtype=np.float64)
    med = float(np.median(b))
    lo, hi = BIAS_LEVEL_RANGE_ADU
    if not lo <= med <= hi:
        return (
            f"median level {med:.1f} ADU outside {lo:g} ... {hi:g} ADU (the electronic offset, "
            f"~{cf.NOMINAL_OFFSET_ADU:g} ADU, plus dark): not a bias + dark frame"
        )
    if float(np.ptp(b)) == 0.0:
        return f"every pixel equals {med:g} ADU: no read noise, not a readout"
    return ""


def background_residual_adu(sub_adu: np.ndarray, ring_px: int = BG_RING_PX) -> tuple[float, float]:
    """Level of background-subtracted frames ``(n, h, w)`` (ADU) on their outer ring.

    Returns ``(level, standard_error)``: the mean over the frames of each frame's median on
    the outer ``ring_px`` pixels (far from the star), and its standard error (from the
    pixels' MAD, or from the frames' scatter when larger).  ~0 when the background is the
    source's own; see :data:`BG_RESIDUAL_TOL_ADU`.
    """
    a = np.asarray(sub_adu, dtype=np.float64)
    n, h, w = a.shape
    r = max(1, min(int(ring_px), h // 2, w // 2))
    mask = np.ones((h, w), dtype=bool)
    mask[r : h - r, r : w - r] = False
    ring = a[:, mask]
    meds = np.median(ring, axis=1)
    mad = np.median(np.abs(ring - meds[:, None]), axis=1) * 1.4826
    # a median's standard error is ~1.25 sigma / sqrt(pixels)
    se_pix = 1.25 * float(np.sqrt(np.mean(mad**2))) / np.sqrt(ring.shape[1] * n)
    se_frames = float(np.std(meds, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return float(np.mean(meds)), max(se_pix, se_frames)


def background_problem(sub_adu: np.ndarray, gain_e_per_adu: float) -> str:
    """Why the background does not fit these background-subtracted source frames (ADU), or
    ``""`` (limits: :data:`BG_RESIDUAL_TOL_E`, :data:`BG_DIFFUSE_MAX_E`)."""
    level, se = background_residual_adu(sub_adu)
    g = float(gain_e_per_adu)
    lo = -(BG_RESIDUAL_TOL_E / g + BG_RESIDUAL_NSIGMA * se)
    hi = (BG_DIFFUSE_MAX_E + BG_RESIDUAL_TOL_E) / g + BG_RESIDUAL_NSIGMA * se
    if lo <= level <= hi:
        return ""
    return (
        f"background-subtracted level far from the star is {level:+.1f} ADU ({level * g:+.0f} "
        f"e-/px; allowed {lo:+.1f} ... {hi:+.1f} ADU): the background is not bias + dark of "
        "this window"
    )


def plateau_groups(temperatures_degC: np.ndarray, gap_degC: float = PLATEAU_GAP_DEGC) -> np.ndarray:
    """Group index of each temperature: sorted values split where neighbours are more than
    ``gap_degC`` apart (one group per distinct plateau; numbered from the coldest)."""
    t = np.asarray(temperatures_degC, dtype=float)
    order = np.argsort(t, kind="stable")
    new = np.concatenate([[True], np.diff(t[order]) > gap_degC])
    g = np.empty(t.size, dtype=np.int64)
    g[order] = np.cumsum(new) - 1
    return g


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
        merged_obsids: when several observations were at one temperature (within
            :data:`PLATEAU_GAP_DEGC`), all of them: they are one plateau, whose frames carry
            the lowest OBSID (``obsid``); empty otherwise.
    """

    obsid: int
    path: Path
    n_frames: int
    temperature_mean_degC: float
    temperature_range_degC: float
    unstable: bool
    merged_obsids: tuple = ()


@dataclass
class CampaignFrames:
    """Tidy per-frame arrays of one camera's campaign (``N`` source frames).

    Attributes:
        stamps: ``(N, S, S)`` float32, background-subtracted, electrons, star centroid at the
            central pixel ``S // 2``.
        temperature_degC: ``(N,)`` TRP1 at the frame time.
        time_s: ``(N,)`` frame time, seconds since 1970 UTC.
        obsid: ``(N,)`` int64, the frame's plateau: its observation's OBSID, or, when
            several observations were at one temperature, the lowest of their OBSIDs
            (:attr:`ObservationInfo.merged_obsids`).
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

    # Long because: 34 of its lines are the docstring (every array, its shape and unit); the
    # body fills each default and delegates the checks to small helpers.
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


def _group_hits(windows_e: np.ndarray) -> np.ndarray:
    """Cosmic-ray test of one run of repeats of a dither ``(n, h, w)`` (electrons).

    A pixel far above the repeats' minimum is a hit (tolerances: lamp flicker, 5 % of the
    level, and a residual shift of up to ``_REPEAT_TOL_PX`` between the repeats: local
    gradient x tolerance).  A run of one frame has no hit.
    """
    n = windows_e.shape[0]
    if n < 2:
        return np.zeros(n, dtype=bool)
    ref = windows_e.min(axis=0)
    sig = np.sqrt(2.0 * (np.clip(ref, 0, None) + READ_NOISE_E**2))
    rp = np.pad(ref, ((1, 1), (1, 1)), mode="edge")
    grad = np.max(
        np.abs(np.stack([rp[:-2, 1:-1], rp[2:, 1:-1], rp[1:-1, :-2], rp[1:-1, 2:]]) - ref), axis=0
    )
    tol = COSMIC_NSIGMA * sig + 0.05 * np.abs(ref) + grad * _REPEAT_TOL_PX
    return np.any(windows_e - ref - tol > 0, axis=(1, 2))


def _isolated_hit(window_e: np.ndarray, cen: tuple[float, float]) -> bool:
    """A pixel beyond :data:`COSMIC_FAR_RADIUS_PX` from the star's centroid that stands far
    above the median of its 8 neighbours (one background-subtracted window, electrons)."""
    r_i, c_i = np.nonzero(window_e > 2.0 * COSMIC_NSIGMA * READ_NOISE_E)
    far = np.hypot(r_i - cen[0], c_i - cen[1]) > COSMIC_FAR_RADIUS_PX
    r_i, c_i = r_i[far], c_i[far]
    if not r_i.size:
        return False
    pad = np.pad(window_e, ((1, 1), (1, 1)), mode="edge")
    neigh = np.stack(
        [pad[r_i + i, c_i + j] for i in range(3) for j in range(3) if (i, j) != (1, 1)]
    )
    med = np.median(neigh, axis=0)
    sig = np.sqrt(np.clip(med, 0, None) + READ_NOISE_E**2)
    return bool(np.any((window_e[r_i, c_i] - med) > 2.0 * COSMIC_NSIGMA * sig))


class _CosmicTest:
    """The cosmic-ray test, frame by frame: holds only the current run of repeats.

    Consecutive frames whose centroids agree within ``_REPEAT_TOL_PX`` are repeats of one
    dither (tested together by :func:`_group_hits`, at most :data:`COSMIC_GROUP_MAX` at a
    time); every frame also goes through :func:`_isolated_hit`.  The test works in window
    pixels (the stamps of two repeats may be cut one pixel apart).
    """

    def __init__(self) -> None:
        self.flags: list[bool] = []
        self._run: list[np.ndarray] = []
        self._last: tuple[float, float] | None = None

    def add(self, window_e: np.ndarray, cen: tuple[float, float]) -> None:
        """One kept frame, in order."""
        same = self._last is not None and all(
            abs(a - b) < _REPEAT_TOL_PX for a, b in zip(cen, self._last, strict=True)
        )
        if not same or len(self._run) >= COSMIC_GROUP_MAX:
            self._close_run()
        self._last = cen
        self._run.append(window_e)
        self.flags.append(_isolated_hit(window_e, cen))

    def _close_run(self) -> None:
        if self._run:
            hits = _group_hits(np.stack(self._run))
            n0 = len(self.flags) - len(self._run)
            for i, h in enumerate(hits):
                self.flags[n0 + i] = self.flags[n0 + i] or bool(h)
        self._run = []

    def result(self) -> np.ndarray:
        """Hit flag of every frame added."""
        self._close_run()
        return np.asarray(self.flags, dtype=bool)


# ------------------------------------------------------------------------------ reading
class _Drops:
    """The reader's one rule for a bad file: raise when strict, else record it and go on.

    Every record names its file (or folder), its reason, and counts its frames under that
    reason (0 when it held none or they are counted elsewhere).

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
        cause: BaseException | None = None,
    ) -> None:
        """Make a format error for ``path`` and :meth:`reject` it."""
        err = cf.FormatError(path, reason, detail, ext)
        self.reject(err, n_frames=n_frames, cause=cause)

    def reject(
        self,
        err: cf.FormatError,
        *,
        n_frames: int | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """Raise ``err`` (from ``cause``) when strict; else :meth:`record` it."""
        if self.strict:
            if cause is None or cause is err:
                raise err
            raise err from cause
        self.record(err, n_frames)

    def record(self, err: cf.FormatError, n_frames: int | None = None) -> None:
        """Record ``err`` whatever the mode (bad frames, not a bad file): its message as a
        warning, its file in the list of skipped files (once per file and reason),
        ``n_frames`` (default: the error's own count) under its reason."""
        msg = str(err)
        n = err.n_frames if n_frames is None else n_frames
        self.report.frames[err.reason] += int(n)
        if not any(f[:2] == (str(err.path), err.reason) for f in self.report.files):
            self.report.files.append((str(err.path), err.reason, msg))  # first message kept
        self.report.warnings.append(warn(msg))

    def frames(self, reason: str, path: Path, detail: str, n: int, ext: str | None = None):
        """Record ``n`` frames of ``path`` dropped for ``reason`` (never raises)."""
        self.record(cf.FormatError(path, reason, detail, ext), n)

    def warning(self, message: str) -> None:
        """A warning that drops nothing."""
        self.report.warnings.append(warn(message))


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


@dataclass
class _Background:
    """A closed-shutter window: its mean frame (ADU), its file, and why it is unusable."""

    adu: np.ndarray | None
    path: Path
    problem: str = ""


def _frame_blocks(ext: cf.CubeExtension):
    """``(start, frames as float32)`` a block at a time (FormatError if unreadable)."""
    step = ext.block_frames()
    for start in range(0, ext.n_frames, step):
        yield start, ext.read_frames(start, start + step).astype(np.float32)


def _report_bad_frames(src_path: Path, ext_name: str, bad: dict, drops: _Drops) -> None:
    """Record the frames left out as ``non_finite`` or ``out_of_range``."""
    why = {
        "non_finite": "NaN or infinite values",
        "out_of_range": f"values outside the raw 16-bit range 0-{cf.ADC_MAX_ADU} ADU (not raw "
        "data)",
    }
    for reason, frames in bad.items():
        if frames:
            detail = f"frame(s) {frames}: {why[reason]}, dropped"
            drops.frames(reason, src_path, detail, len(frames), ext_name)


def _sort_bad(start: int, finite: np.ndarray, in_range: np.ndarray, bad: dict) -> np.ndarray:
    """Add a block's bad frames to ``bad`` (reason -> frame list); the block's good mask."""
    bad["non_finite"].extend((start + np.flatnonzero(~finite)).tolist())
    bad["out_of_range"].extend((start + np.flatnonzero(finite & ~in_range)).tolist())
    return finite & in_range


def _frame_noise_e(frames: np.ndarray, bg: np.ndarray, gain: float) -> np.ndarray:
    """Per-frame pixel noise (e-): robust MAD of the background-subtracted frame.

    The star covers a few tens of the window's pixels; every other pixel is plenty for a MAD.
    """
    nf = frames.shape[0]
    sub_all = ((frames[:, ::2, ::2] - bg[None, ::2, ::2]) * np.float32(gain)).reshape(nf, -1)
    med = np.median(sub_all, axis=1)
    mad = np.median(np.abs(sub_all - med[:, None]), axis=1)
    return np.maximum(1.4826 * np.nan_to_num(mad, nan=1e-3), 1e-3)


def _frame_flags(src: _Source, raw: np.ndarray, sub_adu: np.ndarray, cut, noise_e: float) -> int:
    """Saturation, detection and window-edge flags of one source frame."""
    f = 0
    if raw.max() >= cf.ADC_MAX_ADU or sub_adu.max() > saturation_level_adu(src.hv["gain"]):
        f |= FLAG_SATURATED
    if 3.0 * cut.peak / noise_e < STAR_DETECTION_SNR:
        f |= FLAG_NO_STAR
    h, w = raw.shape
    r, c = cut.centre_row, cut.centre_col
    if (
        r - _EEF_HALF_BOX_PX < 0
        or c - _EEF_HALF_BOX_PX < 0
        or r + _EEF_HALF_BOX_PX > h
        or c + _EEF_HALF_BOX_PX > w
    ):
        f |= FLAG_EDGE
    return f


def _process_source(src: _Source, acc: _Acc, drops: _Drops) -> None:
    """Background-subtract, convert to e-, cut and flag every usable frame of a source, a
    block of frames at a time (memory bounded by one block and the stamps)."""
    gain = np.float32(src.hv["gain"])
    bad: dict = {"non_finite": [], "out_of_range": []}
    cosmic = _CosmicTest()
    keep, cuts, flags = [], [], []
    try:
        for start, block in _frame_blocks(src.ext):
            ok = _sort_bad(start, *_raw_frame_checks(block), bad)
            noise_e = _frame_noise_e(block, src.bg, src.hv["gain"])
            for k in np.flatnonzero(ok):
                sub_adu = block[k] - src.bg
                sub_e = sub_adu * gain
                cut = extract_stamp(sub_e, src.size)
                flags.append(_frame_flags(src, block[k], sub_adu, cut, noise_e[k]))
                cosmic.add(sub_e, (cut.centroid_row, cut.centroid_col))
                keep.append(start + int(k))
                cuts.append(cut)
    except cf.FormatError as err:  # a block that cannot be read: it and the rest dropped
        done = keep[-1] + 1 if keep else 0
        drops.reject(err, n_frames=src.ext.n_frames - done)
    _report_bad_frames(src.path, src.ext.name, bad, drops)
    if cuts:
        _accumulate(src, acc, np.asarray(keep), cuts, flags, cosmic.result())


def _accumulate(src: _Source, acc: _Acc, keep, cuts, flags, cosmic_hits) -> None:
    """Append one source's kept frames to the accumulator."""
    hv = src.hv
    fl = np.asarray(flags, dtype=np.uint16)
    fl |= np.where(cosmic_hits, FLAG_COSMIC, 0).astype(np.uint16)
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


def _checked_hk(path: Path, drops: _Drops) -> cf.HKTable:
    """One HK file, read and checked: TRP1 plausible (degC), repeats that agree.

    Raises:
        FormatError: the format's reasons, ``implausible_trp1``, ``conflicting_hk``.
    """
    hk = cf.read_hk_csv(path)
    why = check_trp1(hk.trp1_degC)
    if why:
        raise cf.FormatError(path, "implausible_trp1", f"{why}: not a temperature in degC")
    if hk.duplicate_spread_degC > cf.HK_DUPLICATE_TOL_DEGC:
        raise cf.FormatError(
            path,
            "conflicting_hk",
            f"samples at {cf.format_utc(hk.duplicate_time_s)} share a time stamp but differ by "
            f"{hk.duplicate_spread_degC:.3f} degC (> {cf.HK_DUPLICATE_TOL_DEGC} degC)",
        )
    if hk.trp1_degC.size >= TRP1_STUCK_MIN_SAMPLES and np.ptp(hk.trp1_degC) == 0.0:
        drops.warning(
            f"{path}: TRP1 reads {hk.trp1_degC[0]:g} degC in all {hk.trp1_degC.size} samples: "
            "a stuck sensor? (TRP1 noise is ~0.01 degC)"
        )
    return hk


def _read_hk(
    obs_dir: Path, obsid: int, listing: list[Path], drops: _Drops
) -> tuple[cf.HKTable | None, str, Path]:
    """The observation's HK table (None if unusable) and, if None, the reason and the file
    to name (the observation folder when it has no HK file)."""
    files = sorted(p for p in listing if (m := cf.parse_hk_file_name(p.name)) and m[0] == obsid)
    if not files:
        drops.fail("missing_hk", obs_dir, f"no HK file *_TCS-HK_<YYYYMMDD>.csv in {obs_dir}")
        return None, "missing_hk", obs_dir
    tables = []
    reason, where = "", obs_dir
    for p in files:
        try:
            tables.append(_checked_hk(p, drops))
        except cf.FormatError as err:
            drops.reject(err)
            reason, where = err.reason, p
    if not tables:
        return None, reason, where
    hk = cf.HKTable.merge(tables)
    if hk.duplicate_spread_degC > cf.HK_DUPLICATE_TOL_DEGC:
        names = ", ".join(p.name for p in hk.paths)
        drops.fail(
            "conflicting_hk",
            hk.paths[0],
            f"HK files {names} hold samples at {cf.format_utc(hk.duplicate_time_s)} that differ "
            f"by {hk.duplicate_spread_degC:.3f} degC (> {cf.HK_DUPLICATE_TOL_DEGC} degC)",
        )
        return None, "conflicting_hk", hk.paths[0]
    return hk, "", obs_dir


def _cube_source_frames(cube: cf.CubeFile) -> int:
    """Open-shutter frames of an opened cube (for the drop count)."""
    return sum(
        e.n_frames
        for e in cube.extensions
        if str(e.header.get("SHUTTER", "")).strip().upper() == cf.SHUTTER_OPEN
    )


def _open_cube(
    cpath: Path, obsid: int, camera: str, drops: _Drops
) -> tuple[cf.CubeFile, float] | None:
    """The cube and its ``DATE-OBS`` (s), or None (recorded) when it cannot be used.

    The file is opened once (:func:`plato_sim.io.campaign_format.read_cube`); the frames
    of a cube that fails are counted from the headers it was read with.
    """
    try:
        cube = cf.read_cube(cpath)
    except cf.FormatError as err:
        drops.reject(err)
        return None
    try:
        t0 = cf.parse_utc(str(cube.primary["DATE-OBS"]))
        mismatch = _primary_mismatch(cube.primary, obsid, camera)
        if mismatch:
            raise cf.FormatError(cpath, "header_mismatch", mismatch)
    except (ValueError, OverflowError) as exc:
        n = _cube_source_frames(cube)
        cube.close()
        err = (
            exc
            if isinstance(exc, cf.FormatError)
            else cf.FormatError(cpath, "bad_key_value", f"DATE-OBS unparsable ({exc})")
        )
        drops.reject(err, n_frames=n, cause=exc)
        return None
    return cube, t0


def _extension_values(cpath: Path, ext: cf.CubeExtension) -> dict:
    """Checked header values of an extension whose data can hold a star (else FormatError)."""
    hv = _header_values(cpath, ext)
    if ext.shape[0] < 1:
        raise cf.FormatError(cpath, "wrong_shape", f"no frame (data shape {ext.shape})", ext.name)
    if min(ext.shape[1:]) < 2 * _EEF_HALF_BOX_PX:
        raise cf.FormatError(cpath, "wrong_shape", f"unusable data shape {ext.shape}", ext.name)
    return hv


def _mean_background(cpath: Path, ext: cf.CubeExtension, drops: _Drops) -> np.ndarray | None:
    """Mean raw frame (float32 ADU) of a closed-shutter extension's usable frames, a block at
    a time; None (recorded) when no frame is usable or the data cannot be read."""
    total, n = None, 0
    any_finite = False
    try:
        for _start, block in _frame_blocks(ext):
            finite, in_range = _raw_frame_checks(block)
            any_finite |= bool(np.any(finite))
            ok = finite & in_range
            if ext.n_frames <= ext.block_frames() and np.any(ok):
                return background_adu(block[ok])  # the dataset generator's very bits
            if np.any(ok):
                s = block[ok].astype(np.float64).sum(axis=0)
                total = s if total is None else total + s
                n += int(ok.sum())
    except cf.FormatError as err:
        drops.record(err, 0)
        return None
    if n == 0:
        why = "non_finite" if not any_finite else "out_of_range"
        detail = (
            f"background has no finite frame within the raw 16-bit range 0-{cf.ADC_MAX_ADU} ADU"
        )
        drops.frames(why, cpath, detail, 0, ext.name)
        return None
    return (total / n).astype(np.float32)


def _store_background(
    cpath: Path, ext: cf.CubeExtension, hv: dict, backgrounds: dict, drops: _Drops
) -> None:
    """A closed-shutter extension: its mean raw frame becomes the background of its field,
    unless it does not look like bias + dark (then its sources are dropped, naming it)."""
    bg = _mean_background(cpath, ext, drops)
    if bg is None:
        return
    problem = check_background_level(bg)
    if problem:
        drops.frames("bad_background", cpath, problem, 0, ext.name)
    key = (ext.name, hv["theta_deg"], hv["phi_deg"])
    backgrounds[key] = _Background(bg, cpath, problem)


def _match_background(backgrounds: dict, ext_name: str, hv: dict) -> _Background | None:
    """The latest background of the same extension and field position (None if none)."""
    bg = None
    for (en, th, ph), val in backgrounds.items():
        if (
            en == ext_name
            and abs(th - hv["theta_deg"]) <= cf.FIELD_MATCH_DEG
            and abs(((ph - hv["phi_deg"] + 180.0) % 360.0) - 180.0) <= cf.FIELD_MATCH_DEG
        ):
            bg = val  # dict keeps insertion order: the last match is latest
    return bg


def _residual_problem(ext: cf.CubeExtension, bg: np.ndarray, gain: float) -> str:
    """Why ``bg`` is not the background of this source (:func:`background_problem` on up to
    :data:`BG_CHECK_FRAMES` usable frames spread over the cube), or ``""``."""
    idx = np.unique(np.linspace(0, ext.n_frames - 1, min(BG_CHECK_FRAMES, ext.n_frames)))
    subs = []
    for k in idx.astype(int):
        f = ext.read_frames(k, k + 1).astype(np.float32)
        finite, in_range = _raw_frame_checks(f)
        if finite[0] and in_range[0]:
            subs.append(f[0] - bg)
    return background_problem(np.stack(subs), gain) if subs else ""


def _source_background(cpath: Path, ext: cf.CubeExtension, hv: dict, backgrounds: dict, drops):
    """The checked background (ADU) of a source extension, or None (its frames recorded)."""
    nf = ext.n_frames
    bg = _match_background(backgrounds, ext.name, hv)
    if bg is None:
        detail = (
            "source cube without a preceding closed-shutter cube of the same "
            f"extension and field (FOV_TH={hv['theta_deg']}, FOV_PHI={hv['phi_deg']})"
        )
        drops.fail("no_background", cpath, detail, ext.name, n_frames=nf)
        return None
    if bg.adu.shape != ext.shape[1:]:
        detail = f"window {ext.shape[1:]} differs from its background {bg.adu.shape}"
        drops.fail("wrong_shape", cpath, detail, ext.name, n_frames=nf)
        return None
    try:
        problem = bg.problem or _residual_problem(ext, bg.adu, hv["gain"])
    except cf.FormatError as err:
        drops.reject(err, n_frames=nf)
        return None
    if problem:
        detail = f"background {bg.path}[{ext.name}]: {problem}; frames dropped"
        drops.fail("bad_background", cpath, detail, ext.name, n_frames=nf)
        return None
    return bg.adu


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
    try:
        hv = _extension_values(cpath, ext)
    except cf.FormatError as err:
        drops.reject(err, n_frames=ext.n_frames)
        return
    if hv["shutter"] == cf.SHUTTER_CLOSED:
        _store_background(cpath, ext, hv, backgrounds, drops)
        return
    bg = _source_background(cpath, ext, hv, backgrounds, drops)
    if bg is not None:
        t0, ci, obsid, size = cube_info
        _process_source(_Source(cpath, ext, hv, bg, t0, ci, obsid, size), acc, drops)


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
    hk_info: tuple[cf.HKTable | None, str, Path],
    n_before: int,
    acc: _Acc,
    drops: _Drops,
) -> ObservationInfo:
    """TRP1 at the observation's frames (those from ``n_before`` on) and its summary.

    Frames without a temperature (no usable HK, or farther than the format's gap from every
    sample) are recorded as dropped, naming the HK file (or the folder without one); an
    observation whose TRP1 varies by more than :data:`UNSTABLE_RANGE_DEGC` is warned about
    and marked unstable.
    """
    hk, hk_reason, hk_where = hk_info
    sl = slice(n_before, acc.n_frames)
    times = np.concatenate(acc.time_s)[sl] if acc.n_frames > n_before else np.zeros(0)
    if hk is None:
        temp = np.full(times.shape, np.nan)
        covered = np.zeros(times.shape, dtype=bool)
        if times.size:
            detail = f"no usable HK for {obs_dir.name}, {times.size} frames dropped"
            drops.frames(hk_reason, hk_where, detail, times.size)
    else:
        temp, covered = hk.temperature_at(times)
        if times.size and not np.all(covered):
            nbad = int(np.sum(~covered))
            detail = (
                f"{nbad} frames of {obs_dir.name} more than {cf.HK_MAX_GAP_S:g} s from every HK "
                f"sample of {[str(p) for p in hk.paths]}, dropped"
            )
            drops.frames("hk_not_covering", hk.paths[0], detail, nbad)
    acc.temp.append(temp)
    acc.covered.append(covered)
    good = temp[covered]
    if good.size:
        tmean, trange = float(good.mean()), float(good.max() - good.min())
    else:
        tmean, trange = math.nan, math.nan
    unstable = bool(good.size and trange > UNSTABLE_RANGE_DEGC)
    if unstable:
        drops.warning(
            f"{obs_dir}: TRP1 varied by {trange:.2f} degC over the frames "
            f"(> {UNSTABLE_RANGE_DEGC} degC): not a plateau, kept separate and flagged"
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
        drops.fail("unreadable_folder", obs_dir, detail, n_frames=0, cause=exc)
        return None
    hk_info = _read_hk(obs_dir, obsid, listing, drops)
    n_before = acc.n_frames
    _read_cubes(listing, obsid, camera, stamp_size, acc, cube_paths, drops)
    return _observation_temperatures(obs_dir, obsid, hk_info, n_before, acc, drops)


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
    root: Path, obsids: list[int] | None, drops: _Drops
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
                detail = "observation folder is a symbolic link that does not resolve (broken "
                drops.frames("unreadable_folder", p, detail + "or a loop), ignored", 0)
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
    drops: _Drops,
) -> CampaignFrames:
    """The frames with a temperature, through :meth:`CampaignFrames.from_arrays`.

    Observations at one temperature become one plateau (:func:`_merge_plateaux`); unstable
    observations' frames get :data:`FLAG_UNSTABLE`; field ids are given over all frames
    (before the frames without temperature are dropped), in first-seen order.
    """
    report = drops.report
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
    obsid = np.concatenate(acc.obsid).astype(np.int64)
    obsid, observations = _merge_plateaux(obsid, np.concatenate(acc.temp), observations, drops)
    unstable_ids = [o.obsid for o in observations if o.unstable]
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


def _merge_plateaux(
    obsid: np.ndarray, temp: np.ndarray, observations: list[ObservationInfo], drops: _Drops
) -> tuple[np.ndarray, list[ObservationInfo]]:
    """Plateaux counted by distinct temperature, not by OBSID.

    Stable observations whose mean TRP1 lie within :data:`PLATEAU_GAP_DEGC` of each other
    (chained, :func:`plateau_groups`) are one plateau: warned about, and their frames carry
    the lowest OBSID of the group, so that every estimator sees the true number of plateaux
    (a TRP1 stuck at one value collapses the whole campaign into one plateau).  Returns the
    frames' OBSIDs and the observations (a merged one lists ``merged_obsids``).
    """
    stable = [o for o in observations if not o.unstable and math.isfinite(o.temperature_mean_degC)]
    if len(stable) < 2:
        return obsid, observations
    groups = plateau_groups(np.array([o.temperature_mean_degC for o in stable]))
    out = [o for o in observations if o not in stable]
    obsid = obsid.copy()
    for g in np.unique(groups):
        members = [o for o, gg in zip(stable, groups, strict=True) if gg == g]
        if len(members) == 1:
            out.append(members[0])
            continue
        ids = [o.obsid for o in members]
        sel = np.isin(obsid, ids) & np.isfinite(temp)
        obsid[np.isin(obsid, ids)] = min(ids)
        t = temp[sel]
        temps = ", ".join(f"{o.obsid}: {o.temperature_mean_degC:.2f}" for o in members)
        drops.warning(
            f"OBSIDs {ids} are one plateau: mean TRP1 ({temps} degC) within "
            f"{PLATEAU_GAP_DEGC} degC of each other; counted as one plateau (OBSID {min(ids)}) "
            f"of the {len(np.unique(groups))} distinct temperature(s) in the campaign"
        )
        tmean = float(t.mean()) if t.size else math.nan
        trange = float(t.max() - t.min()) if t.size else math.nan
        first = min(members, key=lambda o: o.obsid)
        n = sum(o.n_frames for o in members)
        out.append(ObservationInfo(min(ids), first.path, n, tmean, trange, False, tuple(ids)))
    return obsid, sorted(out, key=lambda o: o.obsid)


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
    obs_dirs, camera, site = _list_observations(root, obsids, drops)
    acc = _Acc()
    cube_paths: list[Path] = []
    observations: list[ObservationInfo] = []
    for obsid in sorted(obs_dirs):
        info = _read_observation(obs_dirs[obsid], obsid, camera, stamp_size, acc, cube_paths, drops)
        if info is not None:
            observations.append(info)
    return _assemble(root, acc, cube_paths, (camera, site), observations, drops)


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
