"""Model directories: weights as safetensors plus a JSON description, loaded safely.

``MODEL_DIR/model.safetensors``: the state dict; ``MODEL_DIR/model.json``: architecture
(:class:`plato_cnn.nn.model.FocusNetConfig`), input contract, training configuration, dataset
manifest hash, package version, and the EEF template of :mod:`plato_cnn.fit`.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from plato_cnn.nn.model import FocusNet, FocusNetConfig
from plato_sim._version import __version__
from plato_sim.errors import ModelFormatError
from plato_sim.io.atomic import atomic_write_text

__all__ = [
    "save_model",
    "load_model",
    "default_model_dir",
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


def save_model(model: FocusNet, out_dir: str | Path, metadata: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
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


def load_model(model_dir: str | Path, device: str = "cpu") -> tuple[FocusNet, dict]:
    """Load a model directory; refuses one whose config does not match its weights."""
    d = Path(model_dir)
    jpath, wpath = d / "model.json", d / "model.safetensors"
    for p in (jpath, wpath):
        if not p.is_file():
            raise ModelFormatError(f"{d}: missing {p.name} (not a plato-focus model directory)")
    try:
        desc = json.loads(jpath.read_text())
        cfg = FocusNetConfig.from_dict(desc["architecture"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{jpath}: unreadable model description ({exc})") from exc
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
    model.load_state_dict(state)
    model.to(device).eval()
    return model, desc


def default_model_dir() -> Path:
    """The model shipped with the package (plato_cnn/data/default_model)."""
    return Path(__file__).parent / "data" / "default_model"
