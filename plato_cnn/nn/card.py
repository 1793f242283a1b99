"""Model directories: weights as safetensors plus a JSON description, loaded safely.

``MODEL_DIR/model.safetensors``: the state dict; ``MODEL_DIR/model.json``: architecture
(:class:`plato_cnn.nn.model.FocusNetConfig`), input contract, training configuration, dataset
manifest hash, package version, and the EEF template of :mod:`plato_cnn.fit`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from plato_cnn.fit import EEFTemplate
from plato_cnn.nn.model import FocusNet, FocusNetConfig
from plato_sim._version import __version__
from plato_sim.errors import ModelFormatError
from plato_sim.io.atomic import atomic_write_text
from plato_sim.optics.thermal import S_PRIOR_UM_PER_DEGC

__all__ = [
    "ModelCard",
    "ResidualCheck",
    "SigmaCalibration",
    "save_model",
    "load_model",
    "default_model_dir",
    "inorbit_model_dir",
    "read_model_json",
    "write_model_json",
    "update_model_json",
    "ModelFormatError",
    "RECHECK_KEY",
]

MODEL_JSON = "model.json"

#: key of the one-plateau re-check (s from an earlier sweep) in the systematic-sigma table
RECHECK_KEY = "1s"

INPUT_CONTRACT = (
    "background-subtracted star stamps (N, 32, 32), linear units, pixel nearest the centroid "
    "at (16, 16) (plato_sim.stamps.extract_stamp); the central crop normalised by its sum; "
    "field position theta/phi in degrees"
)


@dataclass(frozen=True)
class SigmaCalibration:
    """One calibrated sigma table: per plateau count (``"5"``, ..., ``"1"``, ``RECHECK_KEY``).

    Attributes:
        systematic_sigma_degC: systematic term added in quadrature to the bootstrap sigma.
        bootstrap_scale: factor applied to the bootstrap sigma first (1 where not calibrated).
    """

    systematic_sigma_degC: dict[str, float]
    bootstrap_scale: dict[str, float]

    def entry(self, n_plateaux: int, recheck: bool = False) -> tuple[str, float, float] | None:
        """``(key, systematic, scale)`` for a fit of ``n_plateaux`` (largest count not above)."""
        table = self.systematic_sigma_degC
        if not table:
            return None
        keys = sorted(int(k) for k in table if k.isdigit())
        key = str(max([x for x in keys if x <= n_plateaux] or [keys[0]]))
        if recheck and RECHECK_KEY in table:
            key = RECHECK_KEY
        return key, float(table[key]), float(self.bootstrap_scale.get(key, 1.0))


@dataclass(frozen=True)
class ResidualCheck:
    """The thermal-residual check calibrated for a model (docs/cnn.md, "Uncertainty"), per
    plateau count (``"5"``, ``"3"``, ``"2"``; one plateau has no residual).

    Attributes:
        threshold_um: the largest thermal residual (:func:`plato_cnn.fit.thermal_residual_um`)
            among the in-family calibration cameras: a fit above it is outside what the
            calibration saw.
        sigma_per_residual: ``k``: such a fit's sigma is widened in quadrature by
            ``k * residual / |s|`` (degC), ``k`` measured on cameras of other optical families.
    """

    threshold_um: dict[str, float]
    sigma_per_residual: dict[str, float]

    def entry(self, n_plateaux: int) -> tuple[float, float] | None:
        """``(threshold um, k)`` for a fit of ``n_plateaux`` (largest calibrated count not
        above it); None below the smallest."""
        keys = [int(k) for k in self.threshold_um if int(k) <= n_plateaux]
        if not keys:
            return None
        key = str(max(keys))
        return float(self.threshold_um[key]), float(self.sigma_per_residual.get(key, 0.0))

    @classmethod
    def from_dict(cls, d, where: str = MODEL_JSON) -> ResidualCheck:
        """Check and type a ``thermal_residual_check`` entry."""
        if not isinstance(d, dict):
            raise ModelFormatError(f"{where}: thermal_residual_check must be an object")
        out = {}
        for key in ("threshold_um", "sigma_per_residual"):
            t = d.get(key)
            if (
                not isinstance(t, dict)
                or not t
                or not all(
                    isinstance(k, str) and k.isdigit() and int(k) >= 2 and _finite_at_least(v, 0.0)
                    for k, v in t.items()
                )
            ):
                raise ModelFormatError(
                    f"{where}: thermal_residual_check.{key} = {t!r} must map plateau counts "
                    ">= 2 to finite numbers >= 0"
                )
            out[key] = {k: float(v) for k, v in t.items()}
        return cls(**out)


#: Entries of ``model.json`` that say how the model was made (commands, machine, timings,
#: notes) and that no estimate reads.
DOCUMENTARY_KEYS = frozenset({"reproduce"})


@dataclass(frozen=True)
class ModelCard:
    """What a model directory's ``model.json`` says, typed and checked.

    The fields are the entries that inference reads; every other entry (training set-up,
    provenance, commands that reproduce the model) stays in :attr:`raw`, the whole JSON
    object, also reachable as ``card["key"]`` / ``card.get("key")``.

    Attributes:
        architecture: the network's configuration.
        package_version: version of the package that wrote the model.
        s_prior_um_per_degC: prior ``(mean, sigma)`` on ``s`` (um/degC).
        eef_template: the EEF curve shape used by the thermal-model fit (or ``None``).
        sigma: calibration made with the plateau head on every plateau (or ``None``).
        sigma_without_head: calibration for fits in which the head is not used (or ``None``).
        plateau_head: the head's entry (config, features, weights file, training summary).
        residual_check: the calibrated thermal-residual check (or ``None``).
        imagette_size_px, focus_map, focus_check_systematic_um: the in-orbit model's entries.
        raw: the whole JSON object.
    """

    architecture: FocusNetConfig
    package_version: str
    s_prior_um_per_degC: tuple[float, float]
    eef_template: EEFTemplate | None
    sigma: SigmaCalibration | None
    sigma_without_head: SigmaCalibration | None
    plateau_head: dict | None
    imagette_size_px: int | None
    focus_map: dict | None
    focus_check_systematic_um: float | None
    raw: dict = field(repr=False)
    residual_check: ResidualCheck | None = None

    @classmethod
    def from_dict(cls, d: dict, where: str = MODEL_JSON) -> ModelCard:
        """Check and type ``d``; a bad entry raises :class:`ModelFormatError` naming it."""
        if not isinstance(d, dict):
            raise ModelFormatError(f"{where}: a model description must be a JSON object")

        def bad(key: str, why: str) -> ModelFormatError:
            return ModelFormatError(f"{where}: {key} = {d.get(key)!r} {why}")

        try:
            arch = FocusNetConfig.from_dict(d["architecture"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{where}: unusable architecture ({exc})") from exc
        prior = d.get("s_prior_um_per_degC", S_PRIOR_UM_PER_DEGC)
        try:
            mean, sd = (float(v) for v in prior)
        except (TypeError, ValueError) as exc:
            raise bad("s_prior_um_per_degC", "is not [mean, sigma] in um/degC") from exc
        if not (math.isfinite(mean) and mean != 0 and math.isfinite(sd) and sd > 0):
            raise bad("s_prior_um_per_degC", "needs a finite non-zero mean and a sigma > 0")
        template = None
        if d.get("eef_template") is not None:
            try:
                template = EEFTemplate.from_dict(d["eef_template"])
            except (KeyError, TypeError, ValueError) as exc:
                raise bad("eef_template", f"is not an EEF template ({exc})") from exc
        size = d.get("imagette_size_px")
        if size is not None and not (isinstance(size, int) and 6 <= size <= 16):
            raise bad("imagette_size_px", "must be an integer in [6, 16]")
        fc_sys = d.get("focus_check_systematic_um")
        if fc_sys is not None and not _finite_at_least(fc_sys, 0.0):
            raise bad("focus_check_systematic_um", "must be a finite number >= 0 (um)")
        head = d.get("plateau_head")
        if head is not None and not isinstance(head, dict):
            raise bad("plateau_head", "must be an object")
        fmap = d.get("focus_map")
        if fmap is not None and not isinstance(fmap, dict):
            raise bad("focus_map", "must be an object")
        nh = d.get("without_plateau_head")
        return cls(
            architecture=arch,
            package_version=str(d.get("package_version", "?")),
            s_prior_um_per_degC=(mean, sd),
            eef_template=template,
            sigma=_sigma_table(d, where),
            sigma_without_head=_sigma_table(nh, f"{where}: without_plateau_head") if nh else None,
            plateau_head=head,
            imagette_size_px=size,
            focus_map=fmap,
            focus_check_systematic_um=None if fc_sys is None else float(fc_sys),
            raw=d,
            residual_check=None
            if d.get("thermal_residual_check") is None
            else ResidualCheck.from_dict(d["thermal_residual_check"], where),
        )

    def __getitem__(self, key: str):
        return self.raw[key]

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, default=None):
        """The raw JSON entry ``key`` (``default`` when absent)."""
        return self.raw.get(key, default)

    def sha256(self) -> str:
        """SHA-256 of the card's canonical JSON (what a report cites as the model's identity)."""
        return _canonical_sha256(self.raw)

    def behaviour_sha256(self) -> str:
        """SHA-256 of the card less its :data:`DOCUMENTARY_KEYS`: two cards with the same
        one give the same estimates from the same weights (what a cache of results keys on,
        so that mending the card's prose does not orphan it)."""
        return _canonical_sha256({k: v for k, v in self.raw.items() if k not in DOCUMENTARY_KEYS})


def _canonical_sha256(d: dict) -> str:
    text = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _finite_at_least(v, lo: float) -> bool:
    try:
        return math.isfinite(float(v)) and float(v) >= lo
    except (TypeError, ValueError):
        return False


def _sigma_table(d: dict | None, where: str) -> SigmaCalibration | None:
    """The calibrated sigma table in ``d`` (``None`` when the model was not calibrated)."""
    if not isinstance(d, dict):
        raise ModelFormatError(f"{where}: without_plateau_head must be an object")
    sys_t = d.get("systematic_sigma_degC")
    if sys_t is None:
        return None
    scale = d.get("bootstrap_scale", {})
    for key, table, lo in (("systematic_sigma_degC", sys_t, 0.0), ("bootstrap_scale", scale, 0.0)):
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and _finite_at_least(v, lo) for k, v in table.items()
        ):
            raise ModelFormatError(
                f"{where}: {key} = {table!r} must map plateau counts to finite numbers >= {lo}"
            )
    if not sys_t:
        return None
    if not any(k.isdigit() for k in sys_t):
        raise ModelFormatError(f"{where}: systematic_sigma_degC has no plateau count: {sys_t!r}")
    return SigmaCalibration(
        {k: float(v) for k, v in sys_t.items()}, {k: float(v) for k, v in scale.items()}
    )


def save_model(model: FocusNet, out_dir: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise ModelFormatError(f"{out}: weight {k} is not finite; the model is not saved")
    save_file(state, str(out / "model.safetensors"))
    desc = {
        "format": "plato-focus FocusNet v1",
        "architecture": model.config.to_dict(),
        "input_contract": INPUT_CONTRACT,
        "target": "delta_um: focal offset from the field position's EEF-optimal focus (um)",
        "package_version": __version__,
    }
    desc.update(metadata or {})
    write_model_json(out, desc)
    return out


def read_model_json(model_dir: str | Path) -> dict:
    """The model description of ``model_dir`` (``model.json``) as a dict."""
    path = Path(model_dir) / MODEL_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: unreadable model description ({exc})") from exc


def write_model_json(model_dir: str | Path, desc: dict) -> Path:
    """Write ``desc`` as ``model_dir/model.json``, atomically (no half-written card)."""
    text = json.dumps(desc, indent=2, default=str, allow_nan=False)
    return atomic_write_text(Path(model_dir) / MODEL_JSON, text)


def update_model_json(model_dir: str | Path, drop: tuple[str, ...] = (), **entries) -> dict:
    """Set ``entries`` (and remove the keys in ``drop``) in ``model.json``; returns the result.

    The one way the offline pipelines (calibration, head training, the in-orbit focus map)
    add what they measured to a model directory.
    """
    desc = read_model_json(model_dir)
    for key in drop:
        desc.pop(key, None)
    desc.update(entries)
    write_model_json(model_dir, desc)
    return desc


def load_model(model_dir: str | Path, device: str = "cpu") -> tuple[FocusNet, ModelCard]:
    """Load a model directory: the network and its checked :class:`ModelCard`.

    Refuses (:class:`ModelFormatError`) a card with a bad entry, weights that do not match
    the architecture, and non-finite weights.
    """
    d = Path(model_dir)
    jpath, wpath = d / "model.json", d / "model.safetensors"
    for p in (jpath, wpath):
        if not p.is_file():
            raise ModelFormatError(f"{d}: missing {p.name} (not a plato-focus model directory)")
    try:
        desc = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{jpath}: unreadable model description ({exc})") from exc
    card = ModelCard.from_dict(desc, str(jpath))
    cfg = card.architecture
    try:
        state = load_file(str(wpath), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise ModelFormatError(f"{wpath}: unreadable weights ({exc})") from exc
    model = FocusNet(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ModelFormatError(
            f"{d}: model.json does not match model.safetensors "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {shapes[:3]})"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFormatError(f"{wpath}: non-finite weights in {bad[:3]}")
    model.load_state_dict(state)
    model.to(device).eval()
    return model, card


def default_model_dir() -> Path:
    """The model shipped with the package (plato_cnn/data/default_model)."""
    return Path(__file__).resolve().parents[1] / "data" / "default_model"


def inorbit_model_dir() -> Path:
    """The in-orbit model shipped with the package (plato_cnn/data/inorbit_model)."""
    return Path(__file__).resolve().parents[1] / "data" / "inorbit_model"
