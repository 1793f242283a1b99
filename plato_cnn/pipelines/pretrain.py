"""Pretraining of :class:`plato_cnn.nn.model.FocusNet` on synthetic stamps.

* Streams any map-style dataset whose items are ``(stamp (H, W) float32, theta_deg,
  phi_deg, delta_um)`` and which exposes ``group_ids`` (the camera-perturbation id of each
  sample): the validation split holds out whole camera perturbations, never frames of a
  camera seen in training.
* Augmentation by the symmetries of the camera (the design is mirror-symmetric about each
  field azimuth and the perturbations are drawn from mirror-symmetric distributions): a
  column flip maps ``phi -> 180 - phi``, a row flip ``phi -> -phi``, a transpose
  ``phi -> 90 - phi``.
* AdamW, cosine learning rate with warm-up, early stopping on the validation loss, a
  checkpoint after every epoch (atomic: temporary file, then rename) and resume from it,
  a CSV log (and TensorBoard when installed).
* Under ``torchrun`` (``WORLD_SIZE > 1``) it uses DistributedDataParallel (gloo on CPU,
  NCCL on CUDA); rank 0 alone writes.  Mixed precision (bf16 autocast) on CUDA.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from plato_cnn.nn.card import save_model
from plato_cnn.nn.data import BlockShuffleSampler
from plato_cnn.nn.model import FocusNet, FocusNetConfig, prepare_inputs
from plato_sim._version import __version__

__all__ = ["TrainConfig", "pretrain", "split_by_group", "augment"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (stored in the model directory)."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    val_fraction: float = 0.15
    patience: int = 5
    seed: int = 0
    num_workers: int = 0
    augment: bool = True
    max_steps_per_epoch: int = 0  # 0: the whole training split every epoch
    max_val_samples: int = 8192  # validation subset (still whole held-out cameras); 0: all
    deterministic: bool = False


def split_by_group(group_ids: np.ndarray, val_fraction: float, seed: int):
    """Indices ``(train, val)`` holding out whole groups (camera perturbations)."""
    groups = np.unique(group_ids)
    if len(groups) < 2:
        raise ValueError("need at least two camera perturbations to hold one out for validation")
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(val_fraction * len(groups))))
    val_groups = rng.choice(groups, n_val, replace=False)
    is_val = np.isin(group_ids, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def augment(
    stamps: torch.Tensor, phi_deg: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random element of the dihedral group on ``(N, H, W)`` stamps, with the matching phi."""
    n = stamps.shape[0]
    fx = torch.rand(n, generator=gen) < 0.5
    fy = torch.rand(n, generator=gen) < 0.5
    tr = torch.rand(n, generator=gen) < 0.5
    x = stamps.clone()
    p = phi_deg.clone()
    # flips about the central pixel (index size // 2, the stamp convention): j -> size - j,
    # i.e. a flip and a roll by one; the pixel that wraps is the stamp's outer edge
    x[fx] = torch.roll(torch.flip(x[fx], dims=(-1,)), 1, dims=-1)
    p[fx] = 180.0 - p[fx]
    x[fy] = torch.roll(torch.flip(x[fy], dims=(-2,)), 1, dims=-2)
    p[fy] = -p[fy]
    x[tr] = x[tr].transpose(-1, -2)
    p[tr] = 90.0 - p[tr]
    return x, torch.remainder(p, 360.0)


def _dist() -> tuple[int, int, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, world > 1


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _model_meta(cfg, state, tr_idx, va_idx, groups, metadata) -> dict:
    meta = {
        "train_config": asdict(cfg),
        "package_version": __version__,
        "validation": {"loss": state["best_val"], "rmse_um": state["best_rmse_um"]},
        "epochs_run": state["epoch"],
        "train_samples": int(len(tr_idx)),
        "val_samples": int(len(va_idx)),
        "val_groups_held_out": int(len(np.unique(groups[va_idx]))),
    }
    meta.update(metadata or {})
    return meta


def pretrain(
    dataset: Dataset,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    model_config: FocusNetConfig | None = None,
    device: str = "cpu",
    metadata: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train a FocusNet on ``dataset``; write checkpoints, logs and the final model to ``out_dir``.

    Resumes from ``out_dir/checkpoint.pt`` when present (same configs required).

    Returns:
        summary dict (best validation loss and RMSE in um, epochs run, wall time in s).
    """
    cfg = config or TrainConfig()
    mcfg = model_config or FocusNetConfig()
    out = Path(out_dir)
    rank, world, distributed = _dist()
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
    if device.startswith("cuda") and distributed:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)

    groups = np.asarray(dataset.group_ids)
    tr_idx, va_idx = split_by_group(groups, cfg.val_fraction, cfg.seed)
    if cfg.max_val_samples and len(va_idx) > cfg.max_val_samples:
        pick = np.random.default_rng(cfg.seed).choice(len(va_idx), cfg.max_val_samples, False)
        va_idx = np.sort(va_idx[pick])
    model = FocusNet(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(tr_idx) / (cfg.batch_size * world))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = max(1, steps_per_epoch * cfg.epochs)
    warm = max(1, int(cfg.warmup_fraction * total))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    state = {"epoch": 0, "best_val": float("inf"), "best_rmse_um": float("nan"), "bad_epochs": 0}
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        # on the CPU: the RNG states must stay CPU byte tensors, and load_state_dict copies
        # the weights and the optimiser's moments to the model's device anyway
        c = torch.load(ckpt, map_location="cpu", weights_only=False)
        if c.get("train_config") != asdict(cfg) or c.get("model_config") != mcfg.to_dict():
            raise ValueError(
                f"{ckpt}: checkpoint was made with other settings; use another --out or delete it"
            )
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["optimizer"])
        sched.load_state_dict(c["scheduler"])
        state = c["state"]
        torch.set_rng_state(c["torch_rng"])
        if device.startswith("cuda") and c.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(c["cuda_rng"], device)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )

    train_sampler = None
    if distributed:
        train_sampler = torch.utils.data.distributed.DistributedSampler(
            Subset(dataset, tr_idx), num_replicas=world, rank=rank, seed=cfg.seed
        )
    log_path = out / "log.csv"
    tb = None
    if rank == 0:
        try:  # optional
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            tb = None
    use_amp = device.startswith("cuda")
    t_start = time.time()
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        # per-epoch seeds: a resumed run draws exactly what an uninterrupted one would
        gen = torch.Generator().manual_seed(cfg.seed + 1000 * epoch + rank)
        net.train()
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
            loader = DataLoader(
                Subset(dataset, tr_idx),
                batch_size=cfg.batch_size,
                sampler=train_sampler,
                num_workers=cfg.num_workers,
                drop_last=True,
            )
        elif hasattr(dataset, "block_ids"):  # stored in chunks: stream chunk by chunk
            sampler = BlockShuffleSampler(np.asarray(dataset.block_ids)[tr_idx], cfg.seed)
            sampler.set_epoch(epoch)
            loader = DataLoader(
                Subset(dataset, tr_idx),
                batch_size=cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.num_workers,
                drop_last=len(tr_idx) > cfg.batch_size,
            )
        else:
            loader = DataLoader(
                Subset(dataset, tr_idx),
                batch_size=cfg.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(cfg.seed + epoch),
                num_workers=cfg.num_workers,
                drop_last=len(tr_idx) > cfg.batch_size,
            )
        it = loader
        if progress and rank == 0:
            from tqdm import tqdm

            it = tqdm(loader, total=min(len(loader), steps_per_epoch), desc=f"epoch {epoch + 1}")
        tr_loss, n_seen = 0.0, 0
        for step, (stamp, theta, phi, target) in enumerate(it):
            if step >= steps_per_epoch:
                break
            if cfg.augment:
                stamp, phi = augment(stamp, phi, gen)
            img, sc = prepare_inputs(stamp, theta, phi, mcfg.crop)
            img, sc, target = img.to(device), sc.to(device), target.to(device).float()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                out_t = net(img, sc)
            loss, _ = FocusNet.loss(out_t.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            tr_loss += float(loss.detach()) * len(target)
            n_seen += len(target)
        if distributed:
            # DDP keeps parameters equal; BatchNorm running statistics are each rank's own:
            # take rank 0's so that every rank validates and ends with the same model
            for buf in model.buffers():
                torch.distributed.broadcast(buf, 0)
        val_loss, val_rmse = evaluate(model, Subset(dataset, va_idx), cfg.batch_size, device)
        state["epoch"] = epoch + 1
        if val_loss < state["best_val"] - 1e-4:
            state.update(best_val=val_loss, best_rmse_um=val_rmse, bad_epochs=0)
            if rank == 0:
                _atomic_save(model.state_dict(), out / "best.pt")
                # a usable model directory at every improvement: nothing lost on a crash
                save_model(model, out, _model_meta(cfg, state, tr_idx, va_idx, groups, metadata))
        else:
            state["bad_epochs"] += 1
        if rank == 0:
            row = {
                "epoch": epoch + 1,
                "train_loss": tr_loss / max(1, n_seen),
                "val_loss": val_loss,
                "val_rmse_um": val_rmse,
                "lr": sched.get_last_lr()[0],
                "elapsed_s": time.time() - t_start,
            }
            new = not log_path.exists()
            with open(log_path, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            if tb is not None:
                for k, v in row.items():
                    tb.add_scalar(k, v, epoch + 1)
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "state": state,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device)
                    if device.startswith("cuda")
                    else None,
                    "train_config": asdict(cfg),
                    "model_config": mcfg.to_dict(),
                },
                ckpt,
            )
            if progress:
                print(
                    f"epoch {epoch + 1}: train {row['train_loss']:.4f}  val {val_loss:.4f}  "
                    f"val RMSE {val_rmse:.2f} um",
                    flush=True,
                )
    if distributed:
        torch.distributed.barrier()
    best = out / "best.pt"  # every rank ends on the best weights (OUT on a shared filesystem)
    if best.exists():
        model.load_state_dict(torch.load(best, map_location=device, weights_only=True))
    if rank == 0:
        meta = _model_meta(cfg, state, tr_idx, va_idx, groups, metadata)
        save_model(model, out, meta)
        (out / "summary.json").write_text(json.dumps(meta, indent=2))
    return {
        "best_val_loss": state["best_val"],
        "best_val_rmse_um": state["best_rmse_um"],
        "epochs": state["epoch"],
        "wall_s": time.time() - t_start,
        "rank": rank,
        "weights_sha256": weights_digest(model),
    }


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (equal weights <=> equal digests)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def evaluate(
    model: FocusNet, dataset: Dataset, batch_size: int, device: str
) -> tuple[float, float]:
    """Mean loss and RMSE (um) of ``model`` on ``dataset``."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    tot, se, n = 0.0, 0.0, 0
    for stamp, theta, phi, target in loader:
        img, sc = prepare_inputs(stamp, theta, phi, model.config.crop)
        out = model(img.to(device), sc.to(device))
        target = target.to(device).float()
        loss, _ = FocusNet.loss(out, target)
        mu, _, _ = FocusNet.split(out)
        tot += float(loss) * len(target)
        se += float(((mu - target) ** 2).sum())
        n += len(target)
    model.train()
    return tot / max(1, n), math.sqrt(se / max(1, n))


def pretrain_from_dataset(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    model_config: FocusNetConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Pretrain on a dataset folder made by ``plato-sim generate`` (the ``pretrain`` command).

    Besides the weights, the model directory records the dataset manifest's hash and the EEF
    template of the nominal optical design (:func:`plato_cnn.fit.make_eef_template`), which
    the BFT fit uses to find the maximum of the field-averaged EEF.
    """
    from plato_cnn.fit import DEFAULT_S_PRIOR_UM_PER_DEGC, make_eef_template
    from plato_cnn.nn.data import ShardFocusDataset

    ds = ShardFocusDataset(data_dir)
    out = Path(out_dir)
    tpl_path = out / "eef_template.json"
    rank, _, _ = _dist()
    if tpl_path.exists():
        template = json.loads(tpl_path.read_text())
    else:
        tpl = make_eef_template()
        template = {"delta_um": list(tpl.delta_um), "eef": list(tpl.eef)}
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            tpl_path.write_text(json.dumps(template))
    meta = {
        "dataset": str(Path(data_dir).resolve()),
        "dataset_manifest_sha256": ds.manifest_sha256,
        "dataset_samples": len(ds),
        "target_label": "dz_from_best_um",
        "eef_template": template,
        "s_prior_um_per_degC": list(DEFAULT_S_PRIOR_UM_PER_DEGC),
        "device": device,
    }
    return pretrain(ds, out, config, model_config, device, meta, progress)
