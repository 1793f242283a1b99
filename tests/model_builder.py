"""A tiny seeded FocusNet saved as a model directory: what tests of the plumbing around the
network (readers, fits, reports, fine-tuning, the CLI) need; its weights are random, so these
tests check shapes, flow and errors, never accuracy."""

from __future__ import annotations

from pathlib import Path

import torch

from plato_cnn.fit import EEFTemplate
from plato_cnn.nn.card import save_model
from plato_cnn.nn.model import FocusNet, FocusNetConfig

#: The tiny network (16-px crop, two stages of 8 and 16 channels).
TINY_FOCUSNET = FocusNetConfig(crop=16, channels=(8, 16), blocks_per_stage=1, hidden=16)
#: An EEF curve shape (offset from best focus in um, EEF) for the thermal-model fit.
TEMPLATE = EEFTemplate((-200.0, -100.0, 0.0, 100.0, 200.0), (0.3, 0.6, 0.8, 0.55, 0.3))


def save_tiny_model(d: str | Path, seed: int = 0, template: bool = True) -> Path:
    """Save a :data:`TINY_FOCUSNET` drawn with torch seed ``seed`` to ``d`` (with
    :data:`TEMPLATE` as its EEF template unless ``template`` is False); returns ``d``."""
    torch.manual_seed(seed)
    meta = {"eef_template": {"delta_um": list(TEMPLATE.delta_um), "eef": list(TEMPLATE.eef)}}
    save_model(FocusNet(TINY_FOCUSNET), d, meta if template else {})
    return Path(d)
