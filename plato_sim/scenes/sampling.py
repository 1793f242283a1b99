"""What every synthetic-data scene shares: the config, the camera pool, optical states, labels.

Cameras.  A pool of ``cameras.n_pool`` random camera perturbations
(:meth:`plato_sim.optics.model.CameraModel.random`) is drawn once per dataset (seed and index
only).  For each camera:

* its T_BF is drawn (``cameras.bft_degC``) and ``T0 = T_BF - dz_bf / s`` where ``dz_bf`` is the
  thermal focal shift at best focus (independent of T0);
* the per-field EEF-optimal thermal focal shift ``dz_opt(theta, phi)``
  (:func:`plato_sim.truth.bestfocus.field_best_focus_um`) is computed on a grid (the centre plus
  rings, 19 positions by default; ``best_focus.search: fast``, docs/datasets.md) and
  interpolated: curvature and tilt shift ``dz_opt``
  exactly (``dz_opt + field_focal_offset`` does not depend on them), and the remainder, due
  to the aberrations, is fitted with 16 Zernike polynomials of the field position (Noll
  1-15, every term up to radial order 4, and 22, secondary spherical: the optimum moves
  with the field as a non-linear function of the local astigmatism, so its pattern carries
  3- and 4-fold terms).  ``benchmarks/generate.py`` measures
  the interpolation error against the direct search at random positions;
* ``dz_bf`` is by default the mean of ``dz_opt`` over the 40 ground-test positions
  (``best_focus.camera = mean_field_optimum``); the exact maximum of the field-averaged EEF
  (``exact``, :func:`plato_sim.truth.bestfocus.best_focus_shift_um`) costs ~7 s per camera.  The
  benchmark measures the difference.

Randomness: every draw comes from ``np.random.Generator`` objects seeded with
``np.random.SeedSequence(seed, spawn_key=...)``: ``(0, i)`` for camera ``i`` of the pool,
``(1, k)`` for shard ``k``, ``(1, k, 2)`` for the per-state charge diffusion of shard ``k``
when ``engine.diffusion_sigma_px`` is a spec.  A shard depends only on (seed, shard index,
config), never on which worker makes it.  Torch runs with one thread inside shard and
camera tasks, so the FFTs give the same bits whatever the number of workers.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml

from plato_sim.detector import DetectorModel, draw_value
from plato_sim.errors import ParameterError
from plato_sim.names import canonical_name, deprecated_alias, normalise_keys
from plato_sim.optics.camera import PLATO_NORMAL_CAMERA, ccd_of_field
from plato_sim.optics.model import CameraModel, OpticalModel
from plato_sim.optics.spectra import (
    SPECTRUM_RULES,
    Spectrum,
    blackbody_spectrum,
    ogse_spectrum,
    recoloured,
)
from plato_sim.optics.thermal import ThermalModel
from plato_sim.optics.wavefront import CameraPerturbation, zernike_basis
from plato_sim.psf.fast import FastEngine
from plato_sim.scenes.fields import ground_test_fields, uniform_random_fields
from plato_sim.truth.bestfocus import best_focus_shift_um, field_best_focus_um

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "OPTIONAL_SECTIONS",
    "SEED_KEY_CAMERA",
    "SEED_KEY_DIFFUSION",
    "SEED_KEY_SHARD",
    "default_config",
    "load_config",
    "validate_config",
    "canonical_config",
    "validate_imagette_config",
    "config_json",
    "camera_pool_size",
    "resolve_camera_pool",
    "single_thread_torch",
    "make_engine",
    "render_spectrum",
    "CameraEntry",
    "best_focus_grid",
    "best_focus_map_basis",
    "camera_best_focus_map",
    "build_camera",
    "focus_reach_um",
    "reachable_q_um_per_degC2",
    "LABEL_FIELDS",
    "label_dtype",
    "OpticalStates",
    "draw_optical_states",
    "detector_labels",
    "state_labels",
]

DEFAULT_CONFIG_NAME = "default_dataset.yaml"

#: Noll indices of the field-position polynomials fitted to the per-field best focus.
_MAP_NOLL = tuple(range(1, 16)) + (22,)

#: spawn keys of the seed sequence: ``(SEED_KEY_CAMERA, i)`` for camera ``i`` of the pool,
#: ``(SEED_KEY_SHARD, k)`` for shard ``k``
SEED_KEY_CAMERA = 0
SEED_KEY_SHARD = 1
#: ``(SEED_KEY_SHARD, k, SEED_KEY_DIFFUSION)``: the per-state diffusion draws of shard ``k``, a
#: stream of their own so that a config with a fixed diffusion draws exactly what it drew
SEED_KEY_DIFFUSION = 2

# ----------------------------------------------------------------------------- config


def default_config() -> dict:
    """The built-in dataset config (``plato_sim/data/default_dataset.yaml``) as a dict."""
    text = resources.files("plato_sim").joinpath("data", DEFAULT_CONFIG_NAME).read_text("utf-8")
    return yaml.safe_load(text)


#: Optional top-level config sections, absent from the default config: a config holding
#: ``imagettes`` makes in-orbit imagette samples (:mod:`plato_sim.scenes.inorbit`); one
#: holding ``families`` draws part of the camera pool from other optical families
#: (:func:`build_camera`); a config without them is exactly what it always was (same
#: manifest, same shards).
OPTIONAL_SECTIONS = ("imagettes", "families", "field_series")
#: ``field_series`` keys: ``states_per_field`` consecutive optical states share one camera
#: and field position, each at its own focus (a through-focus series of one star, as a
#: campaign images each field position at every plateau): what the field head
#: (:mod:`plato_cnn.nn.field_head`) learns from.
FIELD_SERIES_KEYS = {"states_per_field"}
#: ``families`` keys: the fraction of the pool drawn from the high-order family
#: (:mod:`plato_sim.optics.family_highorder`) and its ``strength`` (a spec, like
#: ``cameras.perturbation_strength``).  The nodal family is for evaluation only: never here.
FAMILY_KEYS = {"highorder_fraction", "highorder_strength"}
#: third spawn-key word of the per-camera family draw (its own stream: the design camera of
#: a pool index is the same with or without the ``families`` section)
_SEED_KEY_FAMILY = 1
#: Spawn key of a pool camera's quadratic thermal term (``cameras.q_um_per_degC2``).
_SEED_KEY_THERMAL = 2
#: Spawn key of a pool camera's detector and detected-spectrum draws (:data:`DETECTED_KEYS`).
_SEED_KEY_DETECTED = 3
#: Per-camera detector and spectrum keys (drawn in this order from the camera's own stream):
#: ``diffusion_sigma_px``, a bounded spec of the camera's charge diffusion (px), which then
#: replaces ``engine.diffusion_sigma_px`` for every sample of the camera and for its labels;
#: ``spectrum_tilt`` and ``spectrum_curvature``, specs of the colour change of its detected
#: spectrum (:func:`plato_sim.optics.spectra.colour_factor`), applied to the rendered
#: spectrum and to the best-focus definition's.  Both families of the pool take them.
DETECTED_KEYS = ("diffusion_sigma_px", "spectrum_tilt", "spectrum_curvature")
#: Keys a config may add inside a section that the defaults leave out (a draw of the pool
#: without them stays bit-identical): ``cameras.q_um_per_degC2``, a spec of the quadratic
#: thermal term (um/degC^2) of every pool camera, clipped so that each drawn focus stays
#: reachable (:func:`build_camera`), and the :data:`DETECTED_KEYS`.
OPTIONAL_KEYS = frozenset({"cameras.q_um_per_degC2"} | {f"cameras.{k}" for k in DETECTED_KEYS})


def _merge(base: dict, over: dict, path: str, src: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        where = f"{path}.{k}" if path else k
        if not path and k in OPTIONAL_SECTIONS and k not in base:
            out[k] = copy.deepcopy(v)
            continue
        if k not in base and where not in OPTIONAL_KEYS:
            raise ParameterError(f"{src}: unknown config key {where!r}")
        # 'detector' maps parameter names to specs: a user may add any DetectorModel name
        if k in base and isinstance(base[k], dict) and isinstance(v, dict) and where != "detector":
            out[k] = _merge(base[k], v, where, src)
        else:
            out[k] = copy.deepcopy(v)
    return out


def canonical_config(cfg: dict, where: str = "config") -> dict:
    """A copy of ``cfg`` with deprecated key names replaced by the canonical ones, at every level.

    For configs written by earlier versions (a YAML file, a dataset manifest's ``config``):
    ``cameras.t_bf_degC`` is read as ``cameras.bft_degC``, with a :class:`DeprecationWarning`
    naming ``where``.
    """
    out = {}
    for k, v in cfg.items():
        name = canonical_name(k, where, stacklevel=2) if isinstance(k, str) else k
        out[name] = canonical_config(v, where) if isinstance(v, dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The dataset config: the default, merged with a YAML file, then with ``overrides``.

    Unknown keys are errors naming the file and the key; deprecated key names are read as
    their canonical names (:func:`canonical_config`); the result is validated.
    """
    cfg = default_config()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ParameterError(f"{path}: cannot read the dataset config ({exc})") from exc
        except yaml.YAMLError as exc:
            raise ParameterError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ParameterError(f"{path}: a dataset config must hold a mapping")
        cfg = _merge(cfg, canonical_config(data, str(path)), "", str(path))
    if overrides:
        cfg = _merge(cfg, canonical_config(overrides, "overrides"), "", "overrides")
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> None:
    """Raise ``ValueError`` naming the key for a config that cannot make a dataset."""

    def need(cond: bool, key: str, why: str) -> None:
        if not cond:
            raise ParameterError(f"dataset config: {key} {why}")

    st, sh = cfg["stamp"], cfg["shards"]
    need(int(st["size_px"]) >= 12, "stamp.size_px", "must be >= 12 (EEF needs a 10x10 box)")
    need(int(st["window_margin_px"]) >= 4, "stamp.window_margin_px", "must be >= 4")
    need(
        4 <= int(cfg["engine"]["fov_px"]) <= int(st["size_px"]),
        "engine.fov_px",
        "must lie in [4, stamp.size_px] (the PSF patch must fit in the window)",
    )
    need(int(sh["samples_per_shard"]) >= 1, "shards.samples_per_shard", "must be >= 1")
    need(int(sh["samples_per_optical_state"]) >= 1, "shards.samples_per_optical_state", ">= 1")
    need(cfg["spectrum"]["kind"] in ("ogse", "blackbody"), "spectrum.kind", "ogse|blackbody")
    need(int(cfg["spectrum"]["n_wavelengths"]) >= 1, "spectrum.n_wavelengths", "must be >= 1")
    need(
        cfg["spectrum"].get("rule", "midpoint") in SPECTRUM_RULES,
        "spectrum.rule",
        "|".join(SPECTRUM_RULES),
    )
    pool = cfg["cameras"]["n_pool"]
    need(
        pool == "auto" or (isinstance(pool, int) and pool >= 1),
        "cameras.n_pool",
        f"must be 'auto' or an integer >= 1, got {pool!r}",
    )
    for key in ("s_um_per_degC", "bft_degC"):
        v = cfg["cameras"][key]
        need(
            isinstance(v, list | tuple) and len(v) == 2 and v[0] <= v[1],
            f"cameras.{key}",
            "must be [lo, hi]",
        )
    bf = cfg["best_focus"]
    n_grid = 1 + len(bf["rings_h"]) * int(bf["azimuths"])
    need(n_grid >= len(_MAP_NOLL), "best_focus", f"grid needs >= {len(_MAP_NOLL)} positions")
    need(all(0 < h <= 1 for h in bf["rings_h"]), "best_focus.rings_h", "must lie in (0, 1]")
    need(bf["camera"] in ("mean_field_optimum", "exact"), "best_focus.camera", "unknown mode")
    need(bf.get("search", "fast") in ("fast", "refined"), "best_focus.search", "fast | refined")
    need(
        cfg["focus"]["reference"] in ("field_best", "camera_best", "zero"),
        "focus.reference",
        "must be field_best, camera_best or zero",
    )
    need(float(cfg["exposure"]["exptime_s"]) > 0, "exposure.exptime_s", "must be > 0")
    need(int(cfg["exposure"]["n_closed_frames"]) >= 1, "exposure.n_closed_frames", ">= 1")
    # draw once from every spec so that a bad spec fails now, naming its key
    rng = np.random.default_rng(0)
    for key in ("flux_e", "background_e_per_px"):
        draw_value(rng, cfg["exposure"][key], f"exposure.{key}")
    draw_value(rng, cfg["focus"]["dz_um"], "focus.dz_um")
    draw_value(rng, cfg["cameras"]["perturbation_strength"], "cameras.perturbation_strength")
    if "q_um_per_degC2" in cfg["cameras"]:
        draw_value(rng, cfg["cameras"]["q_um_per_degC2"], "cameras.q_um_per_degC2")
    diffusion = cfg["engine"]["diffusion_sigma_px"]
    need(diffusion_floor_px(diffusion) >= 0, "engine.diffusion_sigma_px", "must be >= 0")
    _validate_detected_keys(cfg, rng, need)
    draw_value(rng, diffusion, "engine.diffusion_sigma_px")
    need(
        "imagettes" not in cfg or isinstance(diffusion, numbers.Real),
        "engine.diffusion_sigma_px",
        "must be a number for imagettes",
    )
    DetectorModel.random(rng, cfg["detector"])
    _validate_optional_sections(cfg, rng, need)
    if "imagettes" in cfg:
        validate_imagette_config(cfg)


def _validate_detected_keys(cfg: dict, rng: np.random.Generator, need: Callable) -> None:
    """The per-camera :data:`DETECTED_KEYS`, where present (:func:`validate_config`)."""
    cams = cfg["cameras"]
    for key in DETECTED_KEYS:
        if key in cams:
            draw_value(rng, cams[key], f"cameras.{key}")
            need("imagettes" not in cfg, f"cameras.{key}", "is for ground-test samples")
    if "diffusion_sigma_px" in cams:
        need(diffusion_floor_px(cams["diffusion_sigma_px"], "cameras.diffusion_sigma_px") >= 0,
             "cameras.diffusion_sigma_px", "must be >= 0")  # fmt: skip
        need(isinstance(cfg["engine"]["diffusion_sigma_px"], numbers.Real),
             "cameras.diffusion_sigma_px",
             "and a per-state engine.diffusion_sigma_px spec exclude each other")  # fmt: skip


def _validate_optional_sections(cfg: dict, rng: np.random.Generator, need: Callable) -> None:
    """The ``families`` and ``field_series`` sections, where present (:func:`validate_config`)."""
    if "families" in cfg:
        fam = cfg["families"]
        need(isinstance(fam, dict) and set(fam) == FAMILY_KEYS, "families",
             f"must hold exactly {sorted(FAMILY_KEYS)}")  # fmt: skip
        need(0.0 <= float(fam["highorder_fraction"]) <= 1.0, "families.highorder_fraction",
             "must lie in [0, 1]")  # fmt: skip
        draw_value(rng, fam["highorder_strength"], "families.highorder_strength")
    if "field_series" in cfg:
        fs = cfg["field_series"]
        need(isinstance(fs, dict) and set(fs) == FIELD_SERIES_KEYS, "field_series",
             f"must hold exactly {sorted(FIELD_SERIES_KEYS)}")  # fmt: skip
        k = fs["states_per_field"]
        need(isinstance(k, numbers.Integral) and k >= 1, "field_series.states_per_field",
             "must be an integer >= 1")  # fmt: skip
        need("imagettes" not in cfg, "field_series", "is for ground-test samples, not imagettes")


#: ``cameras.n_pool: auto``: one camera per this many optical states, at least
#: :data:`AUTO_POOL_MIN`, at most :data:`AUTO_POOL_MAX` cameras.  A camera costs ~1.2 s of
#: CPU (its best-focus map); an optical state ~8.5 ms: a small dataset needs a small pool.
AUTO_STATES_PER_CAMERA = 8
AUTO_POOL_MIN = 2
AUTO_POOL_MAX = 32


def camera_pool_size(cfg: dict, n_samples: int) -> int:
    """Cameras of the pool of an ``n_samples`` dataset: ``cameras.n_pool``, or the 'auto' rule.

    ``auto``: ``ceil(n_samples / samples_per_optical_state / AUTO_STATES_PER_CAMERA)``,
    clipped to ``[AUTO_POOL_MIN, AUTO_POOL_MAX]`` (32 cameras from 4096 samples up).
    """
    pool = cfg["cameras"]["n_pool"]
    if pool != "auto":
        return int(pool)
    states = math.ceil(int(n_samples) / int(cfg["shards"]["samples_per_optical_state"]))
    auto = math.ceil(states / AUTO_STATES_PER_CAMERA)
    return int(min(AUTO_POOL_MAX, max(AUTO_POOL_MIN, auto)))


def resolve_camera_pool(cfg: dict, n_samples: int, camera_pool: int | None = None) -> dict:
    """A copy of ``cfg`` whose ``cameras.n_pool`` is a number: ``camera_pool`` if given, else
    :func:`camera_pool_size`."""
    out = copy.deepcopy(cfg)
    if camera_pool is not None:
        if int(camera_pool) < 1:
            raise ParameterError(f"--camera-pool must be >= 1, got {camera_pool}")
        out["cameras"]["n_pool"] = int(camera_pool)
    else:
        out["cameras"]["n_pool"] = camera_pool_size(cfg, n_samples)
    return out


def single_thread_torch():
    """Context manager: torch with one intra-op thread (bit-identical FFTs in any worker)."""

    class _One:
        def __enter__(self):
            self.n = torch.get_num_threads()
            torch.set_num_threads(1)

        def __exit__(self, *exc):
            torch.set_num_threads(self.n)

    return _One()


def diffusion_floor_px(spec: object, key: str = "engine.diffusion_sigma_px") -> float:
    """The smallest charge-diffusion sigma (px) of a diffusion spec (``key``, the config key
    named in the error): the number itself, or the lower bound of a bounded spec (``[lo,
    hi]``, uniform, loguniform, choice); an unbounded one (normal) is refused."""
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return float(spec)
    bounds = None
    if isinstance(spec, list | tuple) and len(spec) == 2:
        bounds = spec
    elif isinstance(spec, dict) and len(spec) == 1:
        ((kind, args),) = spec.items()
        if kind in ("uniform", "loguniform", "choice") and isinstance(args, list | tuple) and args:
            bounds = args
    try:
        if bounds is not None:
            return float(min(float(b) for b in bounds))
    except (TypeError, ValueError):
        pass
    raise ParameterError(
        f"{key}: a number or a bounded spec ([lo, hi], uniform, loguniform, choice), got {spec!r}"
    )


def make_engine(cfg: dict) -> FastEngine:
    """The fast engine of a dataset config (CPU, float32); with a diffusion spec (per state,
    or per camera: ``cameras.diffusion_sigma_px``), at its floor (each optical state adds its
    own extra blur, :func:`plato_sim.scenes.dataset`)."""
    e = cfg["engine"]
    floor = diffusion_floor_px(e["diffusion_sigma_px"])
    per_camera = cfg["cameras"].get("diffusion_sigma_px")
    if per_camera is not None:
        floor = diffusion_floor_px(per_camera, "cameras.diffusion_sigma_px")
    return FastEngine(
        diffusion_sigma_px=floor,
        jitter_sigma_px=float(e["jitter_sigma_px"]),
        fov_px=int(e["fov_px"]),
    )


def render_spectrum(cfg: dict) -> Spectrum:
    """The spectrum the samples are rendered with."""
    sp = cfg["spectrum"]
    rule = sp.get("rule", "midpoint")  # configurations written before the key: midpoint
    if sp["kind"] == "blackbody":
        return blackbody_spectrum(
            PLATO_NORMAL_CAMERA, float(sp["teff_K"]), int(sp["n_wavelengths"]), rule
        )
    return ogse_spectrum(PLATO_NORMAL_CAMERA, int(sp["n_wavelengths"]), rule)


# ----------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class CameraEntry:
    """One camera of the pool, with what the labels need.

    Attributes:
        index: position in the pool (0-based); ``perturbation["perturbation_id"] = index + 1``.
        perturbation: :class:`plato_sim.optics.wavefront.CameraPerturbation` as a dict.
        s_um_per_degC: thermal sensitivity (um/degC).
        t0_degC: TRP1 temperature of zero thermal focal shift.
        bft_degC: best-focus temperature (drawn; ``t_bf_degC``: deprecated alias).
        dz_bf_um: thermal focal shift at best focus (um).
        map_coef_um: coefficients (um) of the best-focus remainder on ``_MAP_NOLL`` polynomials.
        grid_theta_deg, grid_phi_deg, grid_dz_opt_um, grid_eef_max: the search grid results.
        field_radius_deg: radius normalising the field position of the map.
        family: optical family (``"design"``, or ``"highorder"`` from the ``families``
            config section); ``camera``: that family's camera parameters (``None`` for the
            design, whose camera is ``perturbation``).
        q_um_per_degC2: quadratic thermal term of a design camera (um/degC^2; drawn where the
            config has ``cameras.q_um_per_degC2``, else 0); a family camera carries its own.
        diffusion_sigma_px: the camera's charge diffusion (px) where the config draws one
            (``cameras.diffusion_sigma_px``), else ``None`` (the engine's).
        spectrum_tilt, spectrum_curvature: colour change of its detected spectrum
            (:func:`plato_sim.optics.spectra.colour_factor`; 0 where not drawn).
    """

    index: int
    perturbation: dict
    s_um_per_degC: float
    t0_degC: float
    bft_degC: float
    dz_bf_um: float
    map_coef_um: tuple[float, ...]
    grid_theta_deg: tuple[float, ...]
    grid_phi_deg: tuple[float, ...]
    grid_dz_opt_um: tuple[float, ...]
    grid_eef_max: tuple[float, ...]
    field_radius_deg: float
    family: str = "design"
    camera: dict | None = None
    q_um_per_degC2: float = 0.0
    diffusion_sigma_px: float | None = None
    spectrum_tilt: float = 0.0
    spectrum_curvature: float = 0.0

    t_bf_degC = deprecated_alias("bft_degC", "t_bf_degC")

    @property
    def camera_id(self) -> int:
        """The camera's id: pool index + 1 (0 is reserved for the nominal design)."""
        return int(self.perturbation.get("perturbation_id", self.index + 1))

    def model(self) -> CameraModel:
        """The camera model (optics + thermal with this T0); a family camera for ``family``
        other than the design (it duck-types :class:`CameraModel`)."""
        if self.family == "highorder":
            from plato_sim.optics.family_highorder import HighOrderCamera

            return HighOrderCamera.from_dict(self.camera).with_t0(self.t0_degC)
        pert = CameraPerturbation.from_dict(self.perturbation)
        thermal = ThermalModel(self.s_um_per_degC, self.t0_degC, self.q_um_per_degC2)
        return CameraModel(OpticalModel(perturbation=pert), thermal)

    def detected_spectrum(self, spectrum: Spectrum) -> Spectrum:
        """``spectrum`` as this camera detects it (:func:`_detected`)."""
        return _detected(spectrum, self.spectrum_tilt, self.spectrum_curvature)

    def field_best_focus_um(
        self, theta_deg: np.ndarray, phi_deg: np.ndarray, optics: OpticalModel | None = None
    ) -> np.ndarray:
        """Interpolated EEF-optimal thermal focal shift (um) at field positions."""
        optics = optics or self.model().optics
        rest = best_focus_map_basis(theta_deg, phi_deg, self.field_radius_deg).T @ np.asarray(
            self.map_coef_um
        )
        return rest - optics.field_focal_offset_um(theta_deg, phi_deg)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (floats round-trip exactly through JSON); a design camera's
        has no ``family`` and ``camera`` keys (pools written before families were added)."""
        d = asdict(self)
        if self.family == "design":
            d.pop("family"), d.pop("camera")
        if self.q_um_per_degC2 == 0.0:  # pools written before the key existed
            d.pop("q_um_per_degC2")
        if self.diffusion_sigma_px is None:  # nor these
            d.pop("diffusion_sigma_px")
        if self.spectrum_tilt == 0.0 and self.spectrum_curvature == 0.0:
            d.pop("spectrum_tilt"), d.pop("spectrum_curvature")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> CameraEntry:
        """Inverse of :meth:`to_dict` (also reads the deprecated key ``t_bf_degC``, warning)."""
        d = normalise_keys(d, "camera entry", stacklevel=2)
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


def best_focus_map_basis(theta_deg, phi_deg, radius_deg: float) -> np.ndarray:
    """The best-focus map's polynomials (Noll ``_MAP_NOLL`` over the field normalised by
    ``radius_deg``) at field positions: shape ``(len(_MAP_NOLL), n)``."""
    h = np.atleast_1d(np.asarray(theta_deg, float)) / radius_deg
    ph = np.radians(np.atleast_1d(np.asarray(phi_deg, float)))
    full = zernike_basis(max(_MAP_NOLL), h * np.cos(ph), h * np.sin(ph))
    return full[[j - 1 for j in _MAP_NOLL]]


def best_focus_grid(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Field positions ``(theta_deg, phi_deg)`` of the per-camera best-focus grid."""
    bf = cfg["best_focus"]
    radius = float(cfg["fields"]["radius_deg"])
    n_az = int(bf["azimuths"])
    th, ph = [0.0], [0.0]
    for k, h in enumerate(bf["rings_h"]):
        for a in range(n_az):
            th.append(float(h) * radius)
            # stagger the rings by half a step: better conditioned fit
            ph.append((360.0 * (a + 0.5 * (k % 2)) / n_az) % 360.0)
    return np.asarray(th), np.asarray(ph)


#: Margin (um) added to the largest ``focus.dz_um`` bound for the field's own best-focus
#: offset and the camera's best-focus shift (both tens of um): the reach of the thermal model.
_FOCUS_REACH_MARGIN_UM = 100.0


def reachable_q_um_per_degC2(q: float, s_um_per_degC: float, reach_um: float) -> float:
    """``q`` clipped to ``|q| <= s^2 / (4 reach)``: a thermal model ``s d + q d^2`` then stays
    monotonic over every focal shift up to ``reach_um`` (um), so each is reached."""
    q_max = s_um_per_degC**2 / (4.0 * reach_um)
    return float(np.clip(q, -q_max, q_max))


def focus_reach_um(cfg: dict) -> float:
    """The largest thermal focal shift (um) a sample of ``cfg`` may ask for."""
    spec = cfg["focus"]["dz_um"]
    vals = spec if isinstance(spec, list | tuple) else [spec]
    if isinstance(spec, dict):
        vals = [v for x in spec.values() for v in (x if isinstance(x, list | tuple) else [x])]
    return max(abs(float(v)) for v in vals) + _FOCUS_REACH_MARGIN_UM


def _camera_rng(seed: int, index: int, *key: int) -> np.random.Generator:
    """Pool camera ``index``'s random stream (``key``: one of its own sub-streams)."""
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(SEED_KEY_CAMERA, index, *key))
    )


def _pool_camera_model(cfg: dict, seed: int, index: int) -> tuple[CameraModel, float, str, float]:
    """The optical and thermal model of pool camera ``index``, its drawn T_BF (degC), its
    family and its quadratic thermal term (um/degC^2), each from its own random stream."""
    rng = _camera_rng(seed, index)
    c = cfg["cameras"]
    strength = draw_value(rng, c["perturbation_strength"], "cameras.perturbation_strength")
    model = CameraModel.random(
        rng, index + 1, strength=strength, s_range_um_per_degC=tuple(c["s_um_per_degC"])
    )
    t_bf = float(rng.uniform(*c["bft_degC"]))
    # the design camera is drawn even when replaced below: T_BF and every later draw of this
    # stream stay those of the pool without the families section
    family = "design"
    if "families" in cfg:
        fam = cfg["families"]
        r_fam = _camera_rng(seed, index, _SEED_KEY_FAMILY)
        if r_fam.uniform() < float(fam["highorder_fraction"]):
            from plato_sim.optics.family_highorder import HighOrderCamera

            st = draw_value(r_fam, fam["highorder_strength"], "families.highorder_strength")
            model = HighOrderCamera.random(r_fam, index + 1, strength=float(st))
            family = "highorder"
    q = 0.0
    if "q_um_per_degC2" in c:  # its own stream: every other draw stays as without the key
        r_q = _camera_rng(seed, index, _SEED_KEY_THERMAL)
        q = float(draw_value(r_q, c["q_um_per_degC2"], "cameras.q_um_per_degC2"))
        q = reachable_q_um_per_degC2(q, model.thermal.s_um_per_degC, focus_reach_um(cfg))
        model = replace(model, thermal=replace(model.thermal, q_um_per_degC2=q))
    return model, t_bf, family, q


def _detected(spectrum: Spectrum, tilt: float, curvature: float) -> Spectrum:
    """``spectrum`` recoloured by a camera's tilt and curvature
    (:func:`plato_sim.optics.spectra.recoloured`); the same object where both are 0, so that
    a pool without the spectrum keys renders exactly what it always rendered."""
    if tilt == 0.0 and curvature == 0.0:
        return spectrum
    return recoloured(spectrum, tilt, curvature)


def _detected_draws(cfg: dict, seed: int, index: int) -> dict:
    """Pool camera ``index``'s draws of the :data:`DETECTED_KEYS` present in ``cfg`` (its own
    stream, in the keys' order)."""
    cams = cfg["cameras"]
    if not any(k in cams for k in DETECTED_KEYS):
        return {}
    rng = _camera_rng(seed, index, _SEED_KEY_DETECTED)
    return {k: float(draw_value(rng, cams[k], f"cameras.{k}")) for k in DETECTED_KEYS if k in cams}


def camera_best_focus_map(
    cfg: dict, optics, spectrum: Spectrum, engine: FastEngine, exact: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A camera's EEF-optimal focus on the config's best-focus grid and what follows from it.

    Returns ``(dz_opt_um, eef_max, map_coef_um, dz_bf_um)``: the per-position optima
    (:func:`best_focus_grid`), the coefficients of their smooth remainder ``dz_opt +
    field_focal_offset`` on :func:`best_focus_map_basis`, and the camera's best-focus thermal
    shift (um) over the ground-test table: by its definition (``exact``, default from
    ``best_focus.camera``) or as the mean of the map there.
    """
    bf = cfg["best_focus"]
    exact = bf["camera"] == "exact" if exact is None else bool(exact)
    gth, gph = best_focus_grid(cfg)
    radius = float(cfg["fields"]["radius_deg"])
    with single_thread_torch(), torch.no_grad():
        dz_opt, e_max = field_best_focus_um(
            optics,
            gth,
            gph,
            spectrum,
            engine,
            int(bf["n_sub"]),
            float(bf["half_width_um"]),
            search=bf.get("search", "fast"),
        )
        rest = dz_opt + optics.field_focal_offset_um(gth, gph)
        coef, *_ = np.linalg.lstsq(best_focus_map_basis(gth, gph, radius).T, rest, rcond=None)
        tth, tph = ground_test_fields()
        if exact:
            dz_bf, _ = best_focus_shift_um(
                optics, tth, tph, spectrum, engine, int(bf["n_sub"]), float(bf["half_width_um"])
            )
        else:
            rest_t = best_focus_map_basis(tth, tph, radius).T @ coef
            dz_bf = float(np.mean(rest_t - optics.field_focal_offset_um(tth, tph)))
    return dz_opt, e_max, coef, float(dz_bf)


def build_camera(cfg: dict, seed: int, index: int, engine: FastEngine | None = None) -> CameraEntry:
    """Camera ``index`` of the pool of dataset ``seed`` (~1.2 s on one core with the default grid).

    Deterministic in ``(cfg, seed, index)``.  With the per-camera :data:`DETECTED_KEYS`, its
    best-focus map is searched at its own diffusion and detected spectrum.
    """
    model, t_bf, family, q = _pool_camera_model(cfg, seed, index)
    drawn = _detected_draws(cfg, seed, index)
    engine = engine or make_engine(cfg)
    if "diffusion_sigma_px" in drawn:
        engine = engine.replace(diffusion_sigma_px=drawn["diffusion_sigma_px"])
        if family != "design":  # the family camera records the diffusion it is imaged with
            model = replace(model, diffusion_sigma_px=drawn["diffusion_sigma_px"])
    family_camera = None if family == "design" else model.to_dict()
    optics = model.optics
    bf = cfg["best_focus"]
    tilt, curvature = drawn.get("spectrum_tilt", 0.0), drawn.get("spectrum_curvature", 0.0)
    sp = _detected(ogse_spectrum(optics.camera, int(bf["n_wavelengths"])), tilt, curvature)
    gth, gph = best_focus_grid(cfg)
    dz_opt, e_max, coef, dz_bf = camera_best_focus_map(cfg, optics, sp, engine)
    radius = float(cfg["fields"]["radius_deg"])
    s, q = model.thermal.s_um_per_degC, model.thermal.q_um_per_degC2
    t0 = t_bf - float(ThermalModel(s, 0.0, q).temperature_degC(dz_bf))
    return CameraEntry(
        index=int(index),
        q_um_per_degC2=float(q) if family == "design" else 0.0,
        perturbation=optics.perturbation.to_dict() if family == "design" else {},
        s_um_per_degC=float(s),
        t0_degC=float(t0),
        bft_degC=t_bf,
        dz_bf_um=float(dz_bf),
        map_coef_um=tuple(float(v) for v in coef),
        grid_theta_deg=tuple(float(v) for v in gth),
        grid_phi_deg=tuple(float(v) for v in gph),
        grid_dz_opt_um=tuple(float(v) for v in dz_opt),
        grid_eef_max=tuple(float(v) for v in e_max),
        field_radius_deg=radius,
        family=family,
        camera=family_camera,
        diffusion_sigma_px=drawn.get("diffusion_sigma_px"),
        spectrum_tilt=drawn.get("spectrum_tilt", 0.0),
        spectrum_curvature=drawn.get("spectrum_curvature", 0.0),
    )


# ----------------------------------------------------------------------------- samples

#: Per-sample labels (name, dtype, meaning with unit).
LABEL_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("seed", "i8", "dataset seed"),
    ("shard", "i4", "shard index"),
    ("index", "i4", "sample index within the shard"),
    ("optical_state", "i4", "optical state (OTF) index within the shard; shared by its samples"),
    ("camera_id", "i4", "camera perturbation id (pool index + 1)"),
    ("theta_deg", "f8", "field angle from the optical axis (deg)"),
    ("phi_deg", "f8", "field azimuth (deg)"),
    ("ccd", "i1", "CCD (1-4) holding the star"),
    ("ccd_row", "f8", "star row on its CCD (pixels, continuous)"),
    ("ccd_col", "f8", "star column on its CCD (pixels, continuous)"),
    ("dz_th_um", "f8", "thermal focal shift dz_th (um, > 0 behind focus)"),
    ("dz_local_um", "f8", "local (achromatic) focal offset: dz_th + curvature + tilt (um)"),
    ("dz_field_best_um", "f8", "dz_th at this field position's EEF-optimal focus (um)"),
    ("dz_from_best_um", "f8", "dz_th - dz_field_best: offset from the field's best focus (um)"),
    ("dz_camera_best_um", "f8", "dz_th at the camera's best focus (T_BF) (um)"),
    ("temperature_degC", "f8", "TRP1 temperature of dz_th for this camera (degC)"),
    ("t0_degC", "f8", "camera T0: temperature of zero thermal focal shift (degC)"),
    ("bft_degC", "f8", "camera best-focus temperature (degC)"),
    ("s_um_per_degC", "f8", "camera thermal sensitivity (um/degC)"),
    ("offset_x_px", "f8", "true star x - stamp centre pixel column (pixels)"),
    ("offset_y_px", "f8", "true star y - stamp centre pixel row (pixels)"),
    ("star_row_px", "f8", "true star row in the detector window (pixels)"),
    ("star_col_px", "f8", "true star column in the detector window (pixels)"),
    ("centre_row", "i2", "window row placed at the stamp centre"),
    ("centre_col", "i2", "window column placed at the stamp centre"),
    ("flux_e", "f8", "star's detected electrons"),
    ("background_e_per_px", "f8", "diffuse background (e-/pixel in the exposure)"),
    ("exptime_s", "f8", "exposure time (s)"),
    ("gain_e_per_adu", "f8", "detector gain (e-/ADU)"),
    ("offset_adu", "f8", "electronic offset (ADU)"),
    ("read_noise_e", "f8", "total read noise (e- RMS)"),
    ("dark_e_per_s", "f8", "dark current (e-/px/s)"),
    ("prnu_sigma", "f8", "PRNU relative RMS"),
    ("hot_pixel_fraction", "f8", "hot-pixel fraction"),
    ("cosmic_rate_per_cm2_s", "f8", "cosmic-ray rate (/cm^2/s)"),
    ("eef_true", "f4", "EEF of the noise-free stamp at this sub-pixel offset"),
    ("saturated", "u1", "1 if a window pixel is saturated (the campaign reader's rule)"),
    ("n_outside_px", "i2", "stamp pixels beyond the window (zero-filled)"),
)


def label_dtype() -> np.dtype:
    """Structured dtype of the per-sample labels."""
    return np.dtype([(n, t) for n, t, _ in LABEL_FIELDS])


def _draw_fields(rng: np.random.Generator, n: int, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    radius = float(cfg["fields"]["radius_deg"])
    th, ph = uniform_random_fields(rng, n, radius)
    if cfg["fields"]["on_ccd_only"]:
        for _ in range(100):
            ccd, _, _ = ccd_of_field(PLATO_NORMAL_CAMERA, th, ph)
            off = ccd == 0
            if not off.any():
                break
            th[off], ph[off] = uniform_random_fields(rng, int(off.sum()), radius)
        else:
            raise ParameterError("fields: could not draw positions on the CCDs (radius too large?)")
    return th, ph


@dataclass(frozen=True)
class OpticalStates:
    """The optical states of a shard: camera, field position and focus of each.

    Attributes:
        cam_idx: ``(S,)`` pool index of each state's camera.
        theta_deg, phi_deg: ``(S,)`` field positions.
        models: pool index -> :class:`plato_sim.optics.model.CameraModel` of the cameras used.
        dz_field_best_um: ``(S,)`` thermal focal shift of the field's EEF-optimal focus.
        dz_camera_best_um: ``(S,)`` thermal focal shift at the camera's best focus.
        dz_th_um: ``(S,)`` thermal focal shift of the state.
    """

    cam_idx: np.ndarray
    theta_deg: np.ndarray
    phi_deg: np.ndarray
    models: dict
    dz_field_best_um: np.ndarray
    dz_camera_best_um: np.ndarray
    dz_th_um: np.ndarray


def draw_optical_states(
    rng: np.random.Generator, n_states: int, cfg: dict, cameras: list[CameraEntry]
) -> OpticalStates:
    """Draw ``n_states`` optical states (camera, field, focus) from ``rng`` and the config.

    With a ``field_series`` section, each run of ``states_per_field`` consecutive states
    shares its camera and field position (the last run may be shorter); the focus of every
    state is drawn on its own.  Without it, the draws are those of every earlier version."""
    per = int(cfg.get("field_series", {}).get("states_per_field", 1))
    n_fields = -(-n_states // per)
    cam_idx = np.repeat(rng.integers(len(cameras), size=n_fields), per)[:n_states]
    th, ph = (np.repeat(a, per)[:n_states] for a in _draw_fields(rng, n_fields, cfg))
    dz_off = draw_value(rng, cfg["focus"]["dz_um"], "focus.dz_um", n_states)
    models = {int(i): cameras[int(i)].model() for i in np.unique(cam_idx)}
    dz_fbest = np.empty(n_states)
    for i in np.unique(cam_idx):
        sel = cam_idx == i
        dz_fbest[sel] = cameras[int(i)].field_best_focus_um(th[sel], ph[sel], models[int(i)].optics)
    dz_cbest = np.array([cameras[int(i)].dz_bf_um for i in cam_idx])
    ref = cfg["focus"]["reference"]
    dz_th = dz_off + {"field_best": dz_fbest, "camera_best": dz_cbest, "zero": 0.0}[ref]
    return OpticalStates(cam_idx, th, ph, models, dz_fbest, dz_cbest, dz_th)


def detector_labels(lab: np.ndarray, idx: np.ndarray, det: DetectorModel) -> None:
    """Write the detector parameters of samples ``idx`` into their labels (in place)."""
    lab["gain_e_per_adu"][idx] = det.gain_e_per_adu
    lab["offset_adu"][idx] = det.offset_adu
    lab["read_noise_e"][idx] = det.read_noise_e
    lab["dark_e_per_s"][idx] = det.dark_e_per_s
    lab["prnu_sigma"][idx] = det.prnu_sigma
    lab["hot_pixel_fraction"][idx] = det.hot_pixel_fraction
    lab["cosmic_rate_per_cm2_s"][idx] = det.cosmic_rate_per_cm2_s


def state_labels(
    lab: np.ndarray, states: OpticalStates, cameras: list[CameraEntry], state_of: np.ndarray
) -> None:
    """Write the camera, field and focus labels of every sample (in place)."""
    cam_idx, th, ph, models = states.cam_idx, states.theta_deg, states.phi_deg, states.models
    dz_th, dz_fbest = states.dz_th_um, states.dz_field_best_um
    cams = [cameras[int(i)] for i in cam_idx]
    st = state_of
    lab["optical_state"] = st
    lab["camera_id"] = np.array([cm.camera_id for cm in cams])[st]
    lab["theta_deg"], lab["phi_deg"] = th[st], ph[st]
    lab["dz_th_um"] = dz_th[st]
    dz_local = np.array(
        [
            models[int(cam_idx[s])].optics.local_focal_offset_um(th[s], ph[s], dz_th[s])
            for s in range(len(cam_idx))
        ]
    )
    lab["dz_local_um"] = dz_local[st]
    lab["dz_field_best_um"] = dz_fbest[st]
    lab["dz_from_best_um"] = (dz_th - dz_fbest)[st]
    lab["dz_camera_best_um"] = states.dz_camera_best_um[st]
    temp = [models[int(cam_idx[s])].thermal.temperature_degC(dz_th[s]) for s in range(len(cam_idx))]
    lab["temperature_degC"] = np.asarray(temp, dtype=float)[st]
    lab["t0_degC"] = np.array([cm.t0_degC for cm in cams])[st]
    lab["bft_degC"] = np.array([cm.bft_degC for cm in cams])[st]
    lab["s_um_per_degC"] = np.array([cm.s_um_per_degC for cm in cams])[st]


def config_json(cfg: dict) -> str:
    """Canonical JSON of a config (sorted keys): what manifests store and compare."""
    return json.dumps(cfg, sort_keys=True)


def validate_imagette_config(cfg: dict) -> None:
    """Raise ``ValueError`` naming the key for a bad ``imagettes`` config section."""
    im = cfg["imagettes"]
    if not isinstance(im, dict):
        raise ParameterError("dataset config: imagettes must be a mapping")
    known = {
        "size_px",
        "v_mag",
        "teff_K",
        "exptime_s",
        "sky_photons_per_px_s",
        "jitter_rms_arcsec",
        "drift_arcsec",
        "pointing_error_px",
        "dither_px",
    }
    unknown = set(im) - known
    if unknown:
        raise ParameterError(f"dataset config: unknown key(s) imagettes.{sorted(unknown)}")
    missing = known - set(im)
    if missing:
        raise ParameterError(f"dataset config: missing key(s) imagettes.{sorted(missing)}")
    if not 6 <= int(im["size_px"]) <= 16:
        raise ParameterError("dataset config: imagettes.size_px must lie in [6, 16]")
    for key in ("exptime_s",):
        if not float(im[key]) > 0:
            raise ParameterError(f"dataset config: imagettes.{key} must be > 0")
    for key in ("jitter_rms_arcsec", "pointing_error_px", "dither_px"):
        if not float(im[key]) >= 0:
            raise ParameterError(f"dataset config: imagettes.{key} must be >= 0")
    rng = np.random.default_rng(0)
    for key in ("v_mag", "teff_K", "sky_photons_per_px_s", "drift_arcsec"):
        draw_value(rng, im[key], f"imagettes.{key}")
