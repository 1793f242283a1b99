"""Fine-tuning on ground-test campaigns whose only labels are the TRP1 temperatures.

The true offsets of real frames are unknown, but the physics ties them together: within one
camera the thermal focal shift is a piston, linear in temperature, so for every frame ``i`` of
field position ``f``::

    delta_i = s_c (T_i - T_f)

with one sensitivity ``s_c`` per camera (free, even its sign) and one optimal temperature
``T_f`` per field position.  The method (per epoch, per camera):

1. **Self-consistency** gives ``s_c``: the network's current predictions on the camera's
   frames are fitted with the thermal model (:func:`plato_cnn.bft.fit_thermal_model`, robust,
   weak prior).  A slope is what the network measures well: it only needs the *differences*
   between plateaux.
2. **The images' own EEF** anchors ``T_f``: a network bias that is constant within a field
   would shift ``T_f`` unseen by the slope, so ``T_f`` comes from the measured ensquared
   energy of that field's frames against temperature, fitted with the shape of the EEF curve
   (:class:`plato_cnn.bft.EEFTemplate`, amplitude and ``T_f`` free).  This needs >= 3
   plateaux, which a ground-test campaign has.
3. **Pseudo-labels** ``s_c (T_i - T_f)`` train the network (Gaussian NLL, as in pretraining).

Collapse guards: the pseudo-labels carry the scale of the physics (a network that predicted
zero everywhere would get ``s_c ~ 0`` but labels anchored by the EEF), an L2-SP penalty keeps
the weights near the pretrained ones, and a synthetic dataset (if given) is replayed with its
true labels in every epoch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from .bft import EEFTemplate, fit_thermal_model
from .data import ArrayFocusDataset
from .model import FocusNet, prepare_inputs
from .modelio import load_model, save_model
from .predict import network_stamps

__all__ = ["FinetuneConfig", "eef_field_optima", "pseudo_labels", "finetune"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-4
    l2sp_weight: float = 1e-3
    synthetic_samples_per_epoch: int = 4096
    min_plateaux: int = 3
    seed: int = 0
    s_prior_um_per_degC: tuple[float, float] = (10.0, 10.0)


def eef_field_optima(
    eef_values: np.ndarray,
    temperature_degC: np.ndarray,
    field_index: np.ndarray,
    plateau_index: np.ndarray,
    s_um_per_degC: float,
    template: EEFTemplate,
    n_fields: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per field, the temperature where its measured EEF peaks, from the EEF-curve shape.

    For each field the mean EEF per plateau ``m_p`` is fitted by ``A g(s (T_p - T_f))`` with
    ``A`` free (least squares) on a grid of ``T_f``.  Returns ``(T_f, rms residual)``; NaN for
    fields with fewer than 3 plateaux.
    """
    n_p = int(plateau_index.max()) + 1
    flat = plateau_index * n_fields + field_index
    ok = np.isfinite(eef_values)
    s = np.bincount(flat[ok], eef_values[ok], n_p * n_fields).reshape(n_p, n_fields)
    c = np.bincount(flat[ok], minlength=n_p * n_fields).reshape(n_p, n_fields)
    ts = np.bincount(flat, temperature_degC, n_p * n_fields).reshape(n_p, n_fields)
    cn = np.bincount(flat, minlength=n_p * n_fields).reshape(n_p, n_fields)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s / c
        tp = ts / cn
    t_f = np.full(n_fields, np.nan)
    rms = np.full(n_fields, np.nan)
    for f in range(n_fields):
        good = np.isfinite(m[:, f]) & np.isfinite(tp[:, f])
        if good.sum() < 3:
            continue
        y, t = m[good, f], tp[good, f]
        grid = np.linspace(t.min() - 5.0, t.max() + 5.0, 601)
        g = template(s_um_per_degC * (t[None, :] - grid[:, None]))  # (G, P)
        a = np.sum(g * y, axis=1) / np.maximum(np.sum(g * g, axis=1), 1e-12)
        res = np.sum((y[None, :] - a[:, None] * g) ** 2, axis=1)
        k = int(np.argmin(res))
        t_f[f] = grid[k]
        rms[f] = math.sqrt(res[k] / good.sum())
    return t_f, rms


@torch.no_grad()
def pseudo_labels(
    model: FocusNet,
    frames,
    eef_values: np.ndarray,
    template: EEFTemplate,
    s_prior: tuple[float, float],
) -> tuple[np.ndarray, dict]:
    """Pseudo-labels (um) for the usable frames of one camera, and the fitted quantities."""
    pred = model.predict(network_stamps(frames), frames.field_theta_deg, frames.field_phi_deg)
    _, plateau = np.unique(frames.obsid, return_inverse=True)
    fids, f = np.unique(frames.field_id, return_inverse=True)
    s, s_sig, t_f_net = fit_thermal_model(
        pred["mu_um"], pred["sigma_um"], frames.temperature_degC, f, len(fids), s_prior
    )
    t_f, rms = eef_field_optima(
        eef_values, frames.temperature_degC, f, plateau, abs(s), template, len(fids)
    )
    labels = s * (frames.temperature_degC - t_f[f])
    info = {
        "s_um_per_degC": float(s),
        "s_sigma_um_per_degC": float(s_sig),
        "t_field_eef_degC": t_f.tolist(),
        "t_field_net_degC": t_f_net.tolist(),
        "net_minus_eef_degC_mean": float(np.nanmean(t_f_net - t_f)),
        "eef_fit_rms": float(np.nanmean(rms)),
    }
    return labels, info


def _l2sp(model: FocusNet, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    tot = torch.zeros(())
    for name, p in model.named_parameters():
        tot = tot + ((p - ref[name]) ** 2).sum()
    return tot


def finetune(
    frames_list: list,
    out_dir: str | Path,
    base_model_dir: str | Path | None = None,
    config: FinetuneConfig | None = None,
    synthetic: Dataset | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune a model on campaigns (list of usable :class:`CampaignFrames`, one per camera).

    Returns a summary (per camera: s, the EEF-anchored field temperatures, the mean offset of
    the network's field temperatures from them before and after).
    """
    from .metrics import frame_eef
    from .modelio import default_model_dir

    cfg = config or FinetuneConfig()
    base = Path(base_model_dir or default_model_dir())
    model, desc = load_model(base)
    if "eef_template" not in desc:
        raise ValueError(f"{base}: model has no EEF template (needed to anchor the fields)")
    template = EEFTemplate.from_dict(desc["eef_template"])
    for k, fr in enumerate(frames_list):
        n_plat = len(np.unique(fr.obsid))
        if n_plat < cfg.min_plateaux:
            raise ValueError(
                f"campaign {k} ({fr.camera}): {n_plat} plateaux; fine-tuning needs "
                f">= {cfg.min_plateaux} to anchor the field temperatures with the EEF"
            )
    torch.manual_seed(cfg.seed)
    eefs = [frame_eef(fr.stamps) for fr in frames_list]
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    history = []
    before = None
    for epoch in range(cfg.epochs):
        parts, infos = [], []
        for k, fr in enumerate(frames_list):
            lab, info = pseudo_labels(model, fr, eefs[k], template, cfg.s_prior_um_per_degC)
            ok = np.isfinite(lab)
            parts.append(
                ArrayFocusDataset(
                    network_stamps(fr)[ok],
                    fr.field_theta_deg[ok],
                    fr.field_phi_deg[ok],
                    lab[ok],
                    np.full(ok.sum(), k),
                )  # fmt: skip
            )
            infos.append(info)
        if before is None:
            before = infos
        sets: list[Dataset] = list(parts)
        if synthetic is not None and cfg.synthetic_samples_per_epoch > 0:
            n = min(len(synthetic), cfg.synthetic_samples_per_epoch)
            sets.append(Subset(synthetic, rng.choice(len(synthetic), n, replace=False).tolist()))
        loader = DataLoader(
            ConcatDataset(sets),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
        )
        model.train()
        tot, n_seen = 0.0, 0
        for stamp, theta, phi, target in loader:
            img, sc = prepare_inputs(stamp, theta, phi, model.config.crop)
            loss, _ = FocusNet.loss(model(img, sc), target.float())
            loss = loss + cfg.l2sp_weight * _l2sp(model, ref)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            tot += float(loss.detach()) * len(target)
            n_seen += len(target)
        history.append({"epoch": epoch + 1, "loss": tot / max(1, n_seen)})
        if progress:
            print(f"finetune epoch {epoch + 1}/{cfg.epochs}: loss {tot / max(1, n_seen):.4f}")
    model.eval()
    after = [
        pseudo_labels(model, fr, eefs[k], template, cfg.s_prior_um_per_degC)[1]
        for k, fr in enumerate(frames_list)
    ]
    meta = {k: v for k, v in desc.items() if k not in ("architecture",)}
    meta["finetune"] = {
        "config": asdict(cfg),
        "base_model": str(base),
        "cameras": [fr.camera for fr in frames_list],
        "history": history,
        "before": before,
        "after": after,
    }
    save_model(model, out_dir, meta)
    (Path(out_dir) / "finetune.json").write_text(json.dumps(meta["finetune"], indent=2))
    return meta["finetune"]
