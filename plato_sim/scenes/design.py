"""What a ground-test campaign measures: :class:`CampaignDesign`, with its defaults written once.

The design is shared by the campaign emulator (:func:`plato_sim.scenes.ground_test.
emulate_campaign`), the Cramer-Rao bound (:mod:`plato_sim.bounds`) and the benchmarks: the
plateaux, the field table, the dithers and frames, the closed-shutter frames, the source flux,
the readout window, the acquisition timing and the detector.  What identifies one emulated
camera (its name, true T_BF, seed, optical model) is *not* part of the design.

Defaults are the test houses' usual sequence (docs/facts.md): plateaux -90..-70 degC in 5 degC
steps, the 40-position field table, 25 dithers of +-3 px, 2 frames per dither, 2 background
frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from plato_sim.detector import DetectorModel
from plato_sim.errors import ParameterError
from plato_sim.optics.camera import FIELD_RADIUS_DEG
from plato_sim.scenes.fields import ground_test_fields

__all__ = [
    "CampaignDesign",
    "CampaignTiming",
    "DEFAULT_PLATEAUX_DEGC",
    "DEFAULT_FLUX_E",
    "DITHER_PX",
    "BOUND_STAMP_PX",
]

#: The test houses' usual TRP1 plateaux (docs/facts.md).
DEFAULT_PLATEAUX_DEGC = (-90.0, -85.0, -80.0, -75.0, -70.0)
#: Detected electrons of the point source per 0.1 s frame.  ASSUMED: the OGSE's
#: neutral-density wheel is set so that the sharpest stamp (about half the flux in one
#: pixel) stays below the 90 %-of-full-well saturation level (810 000 e-): 8e5 e- puts the
#: brightest pixel at ~3-4e5 e-, well exposed (SNR of the 2x2 box ~1000).
DEFAULT_FLUX_E = 8.0e5
#: Dither amplitude (pixels, uniform per axis): +-0.012 deg ~ +-3 px (docs/facts.md).
DITHER_PX = 3.0
#: Stamp side (pixels) the campaign reader cuts, used by the bound's Fisher matrices.
BOUND_STAMP_PX = 32


@dataclass(frozen=True)
class CampaignTiming:
    """Acquisition timing and housekeeping behaviour.  All values ASSUMED (typical of the
    CGSE partial-readout focus sequences; no public number).

    Attributes:
        exptime_s: exposure time (docs/facts.md: about 0.1 s).
        cycle_s: time between the starts of consecutive frames (s).
        slew_s: time to move the OGSE to the next field position (s).
        shutter_s: time between the background cube and the source cube (s).
        plateau_gap_s: time between two observations (thermal transition, s).
        hk_period_s: HK sampling period (format: 1-10 s).
        hk_lead_s: HK samples start this long before the first frame (s).
        trp1_noise_degC: white noise of the TRP1 reading (degC rms).
        settling_degC: rms amplitude of the residual settling at the start of the HK record
            (degC), decaying with ``settling_tau_s``.
        settling_tau_s: settling time constant (s).
        setpoint_error_degC: rms difference between the nominal and the achieved plateau.
        trp22_offset_degC: TRP22 minus TRP1 (degC), a second column the reader ignores.
        lamp_flicker: relative rms frame-to-frame variation of the source flux.
    """

    exptime_s: float = 0.1
    cycle_s: float = 2.5
    slew_s: float = 30.0
    shutter_s: float = 5.0
    plateau_gap_s: float = 4 * 3600.0
    hk_period_s: float = 4.0
    hk_lead_s: float = 600.0
    trp1_noise_degC: float = 0.015
    settling_degC: float = 0.3
    settling_tau_s: float = 180.0
    setpoint_error_degC: float = 0.05
    trp22_offset_degC: float = -2.0
    lamp_flicker: float = 0.005


def _check(name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ParameterError(
            f"CampaignDesign: {name}={value!r} outside the allowed range {allowed}"
        )


@dataclass(frozen=True)
class CampaignDesign:
    """What one campaign measures (immutable; change a copy with :func:`dataclasses.replace`
    or :meth:`with_`).

    Attributes:
        plateaux_degC: nominal TRP1 plateaux in acquisition order (degC).
        n_fields: number of field positions of the table (40 = the test houses' table, other
            counts a sunflower pattern over 95 % of the field radius).  When explicit
            positions are given, ``n_fields`` is set to their count (any other value is
            ignored).
        theta_deg, phi_deg: explicit field positions (deg), or ``None`` for the table of
            ``n_fields`` positions (:meth:`field_table_deg`).  The emulator may still move a
            position in azimuth to put its window on a CCD.
        n_dithers: dithers per field position and plateau (random, +-``dither_px`` per axis).
        frames_per_dither: frames per dither.
        n_background_frames: frames of each closed-shutter cube (background).
        flux_e: mean detected electrons of the star per frame.
        window_px: side of the square readout window (pixels, >= 32).
        dither_px: dither amplitude (pixels, uniform per axis).
        timing: acquisition timing and housekeeping (:class:`CampaignTiming`).
        detector: the detector model (noise, gain, offset, ...).
        n_wavelengths: wavelength samples of the OGSE spectrum (10 = the project's default).
        stamp_px: stamp side the reader cuts (pixels); used by the Cramer-Rao bound only.
        offsets_seed: seed of the bound's dither sub-pixel offsets (the bound only; the
            emulator draws its dithers from its own seed).
    """

    plateaux_degC: tuple[float, ...] = DEFAULT_PLATEAUX_DEGC
    n_fields: int = 40
    theta_deg: tuple[float, ...] | None = None
    phi_deg: tuple[float, ...] | None = None
    n_dithers: int = 25
    frames_per_dither: int = 2
    n_background_frames: int = 2
    flux_e: float = DEFAULT_FLUX_E
    window_px: int = 64
    dither_px: float = DITHER_PX
    timing: CampaignTiming = field(default_factory=CampaignTiming)
    detector: DetectorModel = field(default_factory=DetectorModel)
    n_wavelengths: int = 10
    stamp_px: int = BOUND_STAMP_PX
    offsets_seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "plateaux_degC", tuple(float(t) for t in self.plateaux_degC))
        if self.timing is None:
            set_(self, "timing", CampaignTiming())
        if self.detector is None:
            set_(self, "detector", DetectorModel())
        _check("plateaux_degC", self.plateaux_degC, len(self.plateaux_degC) >= 1,
               "(at least one plateau)")  # fmt: skip
        if (self.theta_deg is None) != (self.phi_deg is None):
            raise ParameterError("CampaignDesign: theta_deg and phi_deg: give both or neither")
        if self.theta_deg is not None:
            th = tuple(float(v) for v in self.theta_deg)
            ph = tuple(float(v) for v in self.phi_deg)
            ok = len(th) == len(ph) and len(th) > 0
            why = f"(theta_deg and phi_deg: same non-zero length; phi_deg has {len(ph)})"
            _check("theta_deg", f"{len(th)} values", ok, why)
            set_(self, "theta_deg", th)
            set_(self, "phi_deg", ph)
            set_(self, "n_fields", len(th))
        for name in ("n_fields", "n_dithers", "frames_per_dither", "n_background_frames"):
            v = getattr(self, name)
            _check(name, v, int(v) == v and v >= 1, "[1, inf) (integer)")
            set_(self, name, int(v))
        _check("window_px", self.window_px, self.window_px >= 32,
               "[32, inf) (stamp plus +-3 px dithers)")  # fmt: skip
        _check("flux_e", self.flux_e, self.flux_e > 0, "(0, inf)")
        _check("dither_px", self.dither_px, 0 <= self.dither_px <= self.window_px / 4,
               f"[0, {self.window_px / 4}]")  # fmt: skip
        _check("n_wavelengths", self.n_wavelengths, self.n_wavelengths >= 1, "[1, inf)")

    # ------------------------------------------------------------------------ fields
    def field_table_deg(
        self, field_radius_deg: float = FIELD_RADIUS_DEG
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(theta_deg, phi_deg)`` of the field positions (explicit ones, or the table of
        ``n_fields`` positions for a camera of field radius ``field_radius_deg``)."""
        if self.theta_deg is not None:
            return np.asarray(self.theta_deg, dtype=float), np.asarray(self.phi_deg, dtype=float)
        return ground_test_fields(self.n_fields, field_radius_deg)

    # ------------------------------------------------------------------------ helpers
    @property
    def exptime_s(self) -> float:
        """Exposure time (s), from :attr:`timing`."""
        return self.timing.exptime_s

    @property
    def n_plateaux(self) -> int:
        """Number of plateaux."""
        return len(self.plateaux_degC)

    def with_(self, **changes) -> CampaignDesign:
        """A copy with ``changes``; ``None`` values are ignored (callers' unset options)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ParameterError(f"CampaignDesign has no field(s) {unknown}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if ("theta_deg" in changes or "phi_deg" in changes) or "n_fields" not in changes:
            return replace(self, **changes)
        # a new field count replaces explicit positions
        return replace(self, theta_deg=None, phi_deg=None, **changes)

    def offsets_px(self) -> np.ndarray:
        """``(n_fields, n_dithers, 2)`` sub-pixel offsets of the dithers for the bound (the
        same per plateau; the first ``n`` dithers are the same for any larger ``n_dithers``)."""
        rng = np.random.default_rng(self.offsets_seed)
        return np.stack([rng.uniform(-0.5, 0.5, (self.n_dithers, 2)) for _ in range(self.n_fields)])

    @classmethod
    def from_truth(cls, truth: dict, **overrides) -> CampaignDesign:
        """The design of an emulated campaign, from its truth sidecar (``*.truth.json``):
        the *achieved* plateaux and the *placed* field positions."""
        timing = CampaignTiming(**truth["timing"]) if "timing" in truth else CampaignTiming()
        kw = dict(
            plateaux_degC=tuple(float(t) for t in truth["plateaux_achieved_degC"]),
            theta_deg=tuple(float(v) for v in truth["fields"]["theta_deg"]),
            phi_deg=tuple(float(v) for v in truth["fields"]["phi_deg"]),
            n_dithers=int(truth["n_dithers"]),
            frames_per_dither=int(truth["frames_per_dither"]),
            n_background_frames=int(truth["n_background_frames"]),
            flux_e=float(truth["flux_e"]),
            window_px=int(truth.get("window_px", 64)),
            timing=timing,
            detector=DetectorModel.from_dict(truth["detector"]),
            n_wavelengths=int(truth.get("n_wavelengths", 10)),
        )
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        d["detector"] = self.detector.to_dict()
        return d
