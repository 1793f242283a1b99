"""The CNN estimate of a camera's best-focus temperature from its campaign frames.

Frames (from :func:`plato_cnn.campaign.read_campaign`) -> FocusNet offsets per frame ->
:func:`plato_cnn.bft.fit_bft` (thermal model, EEF-template maximum, bootstrap sigma).
Works with any subset of plateaux, down to one (then ``s`` is the prior's and the side of
focus comes from the network's sign head; ``sign_ambiguous`` says when it cannot decide).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bft import EEFTemplate, FocusFit, fit_bft
from .modelio import default_model_dir, load_model

__all__ = ["cnn_bft", "predict_frames"]


def predict_frames(frames, model_dir: str | Path | None = None, device: str = "cpu") -> dict:
    """FocusNet outputs for every frame: ``mu_um``, ``sigma_um``, ``p_behind`` and the model."""
    model, desc = load_model(model_dir or default_model_dir(), device)
    pred = model.predict(frames.stamps, frames.field_theta_deg, frames.field_phi_deg, device=device)
    pred["model_description"] = desc
    return pred


def cnn_bft(
    frames,
    model_dir: str | Path | None = None,
    n_boot: int = 200,
    seed: int = 0,
    device: str = "cpu",
    include_unstable: bool = False,
) -> tuple[FocusFit, dict]:
    """Best-focus temperature of one camera from its (usable) frames.

    Args:
        frames: :class:`plato_cnn.campaign.CampaignFrames` (already restricted to the chosen
            OBSIDs).
        model_dir: a model directory (default: the model shipped with the package).
        n_boot: bootstrap replicates for the 1-sigma uncertainty.
        seed: bootstrap seed.
        device: torch device.
        include_unstable: also use frames of observations that were not a plateau.

    Returns:
        ``(fit, info)`` with ``info`` holding the frame counts and the model's description.
    """
    from .campaign import FLAG_UNSTABLE

    ignore = FLAG_UNSTABLE if include_unstable else 0
    use = (frames.flags & ~np.uint16(ignore)) == 0
    if not np.any(use):
        raise ValueError("no usable frame for the CNN estimate")
    sel = frames.select(use)
    pred = predict_frames(sel, model_dir, device)
    desc = pred["model_description"]
    template = None
    if "eef_template" in desc:
        template = EEFTemplate.from_dict(desc["eef_template"])
    prior = tuple(desc.get("s_prior_um_per_degC", (10.0, 3.0)))
    fit = fit_bft(
        pred["mu_um"],
        pred["sigma_um"],
        sel.temperature_degC,
        sel.field_id,
        p_behind=pred["p_behind"],
        template=template,
        s_prior=prior,
        plateau_id=sel.obsid,
        n_boot=n_boot,
        seed=seed,
    )
    info = {
        "frames_used": int(use.sum()),
        "model": str(model_dir or default_model_dir()),
        "model_version": desc.get("package_version"),
        "frame_mu_um": pred["mu_um"],
        "frame_sigma_um": pred["sigma_um"],
    }
    return fit, info
