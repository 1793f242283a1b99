"""Training of the plateau head (:mod:`plato_cnn.nn.plateau_head`): emulate the training
cameras, read them through the shipped network, fit the set network, store it.

The training cameras are emulated from :data:`TRAINING_SEED`, a seed range that neither the
pretraining, the calibration nor the benchmarks use.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from plato_cnn.nn.card import update_model_json
from plato_cnn.nn.plateau_head import (
    FIELD_FEATURES,
    HEAD_SCALE_UM,
    WEIGHTS_FILE,
    PlateauHead,
    PlateauHeadConfig,
    Snapshot,
    campaign_snapshots,
    random_field_subsets,
    stack_snapshots,
    subset_targets_um,
)
from plato_sim.errors import ParameterError
from plato_sim.workers import map_jobs, pin_one_thread

__all__ = ["TRAINING_SEED", "train_plateau_head", "save_plateau_head", "build_plateau_head"]


def train_plateau_head(
    train: list[Snapshot],
    config: PlateauHeadConfig | None = None,
    validation: list[Snapshot] | None = None,
) -> tuple[PlateauHead, dict]:
    """Fit the ensemble on ``train`` (smooth-L1 on the target); report RMS on both sets (um)."""
    cfg = config or PlateauHeadConfig()
    if not train:
        raise ParameterError("no training snapshots")
    torch.manual_seed(cfg.seed)
    head = PlateauHead(cfg)
    x = stack_snapshots(train)
    y = torch.tensor([s.target_um for s in train], dtype=torch.float32) / HEAD_SCALE_UM
    g = torch.Generator().manual_seed(cfg.seed)
    for net in head.members:
        opt = torch.optim.AdamW(net.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(x), generator=g)
            for b in range(0, len(perm), cfg.batch):
                i = perm[b : b + cfg.batch]
                xb, yb = x[i], y[i]
                if cfg.min_fields is not None:
                    xb, keep = random_field_subsets(xb, cfg.min_fields, g)
                    yb = subset_targets_um([train[j] for j in i.tolist()], keep) / HEAD_SCALE_UM
                loss = nn.functional.smooth_l1_loss(net(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    head.eval()
    summary = {
        "config": asdict(cfg),
        "train_snapshots": len(train),
        "fields_per_snapshot": int(x.shape[1]),
    }
    if cfg.min_fields is not None:
        summary["min_fields_per_snapshot"] = int(cfg.min_fields)
    for name, snaps in (("train", train), ("validation", validation or [])):
        if not snaps:
            continue
        xs = stack_snapshots(snaps)
        t = np.array([s.target_um for s in snaps])
        with torch.no_grad():
            p = head(xs).numpy()
        summary[f"{name}_rms_target_um"] = float(np.sqrt(np.mean(t**2)))
        summary[f"{name}_rms_residual_um"] = float(np.sqrt(np.mean((t - p) ** 2)))
        summary[f"{name}_snapshots"] = len(snaps)
        if cfg.min_fields is not None and name == "validation":
            # the smallest tables the head serves: one random subset of each snapshot
            g_val = torch.Generator().manual_seed(cfg.seed + 1)
            small, keep = random_field_subsets(xs, cfg.min_fields, g_val, n=cfg.min_fields)
            t_small = subset_targets_um(snaps, keep).numpy()
            with torch.no_grad():
                p = head(small).numpy()
            summary["validation_rms_target_um_min_fields"] = float(np.sqrt(np.mean(t_small**2)))
            summary["validation_rms_residual_um_min_fields"] = float(
                np.sqrt(np.mean((t_small - p) ** 2))
            )
    return head, summary


def save_plateau_head(head: PlateauHead, model_dir: str | Path, summary: dict) -> Path:
    """Write the weights next to the FocusNet and describe them in its ``model.json``."""
    from safetensors.torch import save_file

    d = Path(model_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(d / WEIGHTS_FILE))
    update_model_json(
        d,
        plateau_head={
            "config": asdict(head.config),
            "features": list(FIELD_FEATURES),
            "weights": WEIGHTS_FILE,
            "training": summary,
        },
    )
    return d / WEIGHTS_FILE


#: Seed of the head's training cameras (campaign seeds ``seed * 1000 + i``): distinct from the
#: calibration (91,000), the benchmarks (20,260 and 73,000) and the pretraining pool.
TRAINING_SEED = 95_000


def _camera_snapshots(job: tuple[str, str, float]) -> list[Snapshot]:
    """Snapshots of every plateau of one emulated training camera (worker process)."""
    pin_one_thread()
    from plato_cnn.metrics import frame_eef
    from plato_cnn.predict import predict_frames
    from plato_cnn.reader import read_campaign
    from plato_sim.scenes.ground_test import read_truth

    folder, model_dir, s0 = job
    truth = read_truth(folder)
    fr = read_campaign(folder)
    fr = fr.select(fr.usable)
    pred = predict_frames(fr, model_dir)
    return campaign_snapshots(fr, pred, frame_eef(fr.stamps), s0, truth, Path(folder).name)


def build_plateau_head(
    model_dir: str | Path,
    workdir: str | Path = "out/plateau_head",
    n_cameras: int = 1140,
    validation_cameras: int = 40,
    seed: int = TRAINING_SEED,
    workers: int = 2,
    config: PlateauHeadConfig | None = None,
    write: bool = True,
    fields: int = 40,
    dithers: int = 3,
    frames: int = 2,
) -> dict:
    """Emulate (or reuse) the training cameras, train the head, store it in ``model_dir``.

    The last ``validation_cameras`` cameras are held out (whole cameras, all their plateaux)
    and only reported.  ``fields``, ``dithers`` and ``frames`` (per dither) shape the emulated
    campaigns (the calibration set's defaults).  Returns the training summary.
    """

    from plato_cnn.nn.card import load_model
    from plato_cnn.pipelines.calibrate import emulate_calibration_set

    if not 0 <= validation_cameras < n_cameras:
        raise ParameterError("need 0 <= validation_cameras < n_cameras")
    if config is not None and config.min_fields is not None and config.min_fields > fields:
        raise ParameterError(f"min_fields={config.min_fields} exceeds the {fields} positions")
    _, card = load_model(model_dir)
    s0 = card.s_prior_um_per_degC[0]
    cams = emulate_calibration_set(workdir, n_cameras, seed, fields, dithers, frames, workers)
    jobs = [(str(f), str(model_dir), s0) for f, _ in cams]
    per_cam = map_jobs(_camera_snapshots, jobs, workers, desc="plateau head: cameras")
    n_train = n_cameras - validation_cameras
    train = [s for c in per_cam[:n_train] for s in c]
    val = [s for c in per_cam[n_train:] for s in c]
    head, summary = train_plateau_head(train, config, val)
    summary.update(train_cameras=n_train, validation_cameras=validation_cameras, seed=seed)
    if write:
        save_plateau_head(head, model_dir, summary)
    return summary
