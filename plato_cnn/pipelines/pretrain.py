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
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from plato_cnn.nn.card import save_model
from plato_cnn.nn.data import BlockShuffleSampler
from plato_cnn.nn.model import FocusNet, FocusNetConfig, prepare_inputs
from plato_sim._version import __version__
from plato_sim.errors import DataError, ParameterError

log = logging.getLogger(__name__)

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
        raise ParameterError(
            f"group_ids hold {len(groups)} camera perturbation(s); need at least 2 to hold one "
            "out for validation"
        )
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


@dataclass
class _Run:
    """One pretraining run: its settings, data split, model, optimiser and progress.

    Attributes:
        cfg, mcfg: training and model settings; ``out`` the output folder; ``device`` the
            torch device (``cuda:<LOCAL_RANK>`` under DDP on CUDA).
        rank, world, distributed: the process group (rank 0 alone writes).
        dataset, groups, tr_idx, va_idx: the data, each sample's camera id, the split.
        model: the FocusNet; ``net`` the module trained (``model`` or its DDP wrapper).
        opt, sched, steps_per_epoch: AdamW, its warm-up + cosine schedule, steps per epoch.
        state: ``epoch``, ``best_val``, ``best_rmse_um``, ``bad_epochs`` (checkpointed).
        metadata: extra entries for the model description; ``progress`` show progress.
        train_sampler: the DDP sampler (None on one process); ``tb`` a TensorBoard writer.
    """

    cfg: TrainConfig
    mcfg: FocusNetConfig
    out: Path
    device: str
    rank: int
    world: int
    distributed: bool
    dataset: Dataset
    groups: np.ndarray
    tr_idx: np.ndarray
    va_idx: np.ndarray
    model: FocusNet
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    metadata: dict | None
    progress: bool
    state: dict = field(
        default_factory=lambda: {
            "epoch": 0,
            "best_val": float("inf"),
            "best_rmse_um": float("nan"),
            "bad_epochs": 0,
        }
    )
    net: nn.Module | None = None
    train_sampler: Any = None
    tb: Any = None
    t_start: float = 0.0

    @property
    def checkpoint(self) -> Path:
        """The resumable checkpoint file."""
        return self.out / "checkpoint.pt"

    def meta(self) -> dict:
        """The model description's training entries (:func:`_model_meta`)."""
        return _model_meta(
            self.cfg, self.state, self.tr_idx, self.va_idx, self.groups, self.metadata
        )


def _setup_distributed(device: str, out: Path) -> tuple[int, int, bool, str]:
    """``(rank, world, distributed, device)``; joins the process group under ``torchrun``.

    Under DDP on CUDA each process takes the GPU of its ``LOCAL_RANK``; rank 0 makes ``out``.
    """
    rank, world, distributed = _dist()
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
    if device.startswith("cuda") and distributed:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    return rank, world, distributed, device


def _split(dataset: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(groups, train indices, validation indices)``: whole cameras held out, capped."""
    groups = np.asarray(dataset.group_ids)
    tr_idx, va_idx = split_by_group(groups, cfg.val_fraction, cfg.seed)
    if cfg.max_val_samples and len(va_idx) > cfg.max_val_samples:
        pick = np.random.default_rng(cfg.seed).choice(len(va_idx), cfg.max_val_samples, False)
        va_idx = np.sort(va_idx[pick])
    return groups, tr_idx, va_idx


def _schedule(
    opt: torch.optim.Optimizer, cfg: TrainConfig, n_train: int, world: int
) -> tuple[torch.optim.lr_scheduler.LambdaLR, int]:
    """Linear warm-up then cosine decay over the whole run; and the steps per epoch."""
    steps_per_epoch = math.ceil(n_train / (cfg.batch_size * world))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = max(1, steps_per_epoch * cfg.epochs)
    warm = max(1, int(cfg.warmup_fraction * total))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at), steps_per_epoch


def _new_run(
    dataset: Dataset,
    out: Path,
    cfg: TrainConfig,
    mcfg: FocusNetConfig,
    device: str,
    metadata: dict | None,
    progress: bool,
) -> _Run:
    """Process group, seeds, split, model, optimiser and schedule (in this order: the RNG)."""
    rank, world, distributed, device = _setup_distributed(device, out)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    groups, tr_idx, va_idx = _split(dataset, cfg)
    model = FocusNet(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched, steps_per_epoch = _schedule(opt, cfg, len(tr_idx), world)
    return _Run(
        cfg, mcfg, out, device, rank, world, distributed, dataset, groups, tr_idx, va_idx,
        model, opt, sched, steps_per_epoch, metadata, progress,
    )  # fmt: skip


def _resume(run: _Run) -> None:
    """Load ``out/checkpoint.pt`` when present (made with the same settings, else an error)."""
    ckpt = run.checkpoint
    if not ckpt.exists():
        return
    # on the CPU: the RNG states must stay CPU byte tensors, and load_state_dict copies
    # the weights and the optimiser's moments to the model's device anyway
    c = torch.load(ckpt, map_location="cpu", weights_only=False)
    if c.get("train_config") != asdict(run.cfg) or c.get("model_config") != run.mcfg.to_dict():
        raise ParameterError(
            f"{ckpt}: checkpoint was made with other settings; use another --out or delete it"
        )
    run.model.load_state_dict(c["model"])
    run.opt.load_state_dict(c["optimizer"])
    run.sched.load_state_dict(c["scheduler"])
    run.state = c["state"]
    torch.set_rng_state(c["torch_rng"])
    if run.device.startswith("cuda") and c.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(c["cuda_rng"], run.device)


def _prepare_training(run: _Run) -> None:
    """DDP wrapper and sampler when distributed; TensorBoard (optional) on rank 0."""
    run.net = run.model
    if run.distributed:
        cuda = run.device.startswith("cuda")
        run.net = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[torch.device(run.device).index] if cuda else None
        )
        run.train_sampler = torch.utils.data.distributed.DistributedSampler(
            Subset(run.dataset, run.tr_idx),
            num_replicas=run.world,
            rank=run.rank,
            seed=run.cfg.seed,
        )
    if run.rank == 0:
        try:  # optional
            from torch.utils.tensorboard import SummaryWriter

            run.tb = SummaryWriter(str(run.out / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            run.tb = None


def _epoch_loader(run: _Run, epoch: int) -> DataLoader:
    """The epoch's training batches: DDP sampler, chunk-by-chunk shuffle, or plain shuffle."""
    cfg, tr_idx = run.cfg, run.tr_idx
    train = Subset(run.dataset, tr_idx)
    if run.train_sampler is not None:
        run.train_sampler.set_epoch(epoch)
        return DataLoader(
            train,
            batch_size=cfg.batch_size,
            sampler=run.train_sampler,
            num_workers=cfg.num_workers,
            drop_last=True,
        )
    if hasattr(run.dataset, "block_ids"):  # stored in chunks: stream chunk by chunk
        sampler = BlockShuffleSampler(np.asarray(run.dataset.block_ids)[tr_idx], cfg.seed)
        sampler.set_epoch(epoch)
        return DataLoader(
            train,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            drop_last=len(tr_idx) > cfg.batch_size,
        )
    return DataLoader(
        train,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed + epoch),
        num_workers=cfg.num_workers,
        drop_last=len(tr_idx) > cfg.batch_size,
    )


def _train_epoch(run: _Run, epoch: int) -> tuple[float, int]:
    """One epoch of (at most ``steps_per_epoch``) optimiser steps: ``(loss sum, samples)``."""
    cfg, net, device = run.cfg, run.net, run.device
    # per-epoch seeds: a resumed run draws exactly what an uninterrupted one would
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * epoch + run.rank)
    net.train()
    loader = _epoch_loader(run, epoch)
    it = loader
    if run.progress and run.rank == 0:
        from tqdm import tqdm

        n = min(len(loader), run.steps_per_epoch)
        it = tqdm(loader, total=n, desc=f"epoch {epoch + 1}")
    use_amp = device.startswith("cuda")
    tr_loss, n_seen = 0.0, 0
    for step, (stamp, theta, phi, target) in enumerate(it):
        if step >= run.steps_per_epoch:
            break
        if cfg.augment:
            stamp, phi = augment(stamp, phi, gen)
        if not (torch.isfinite(stamp).all() and torch.isfinite(target).all()):
            raise DataError(
                f"epoch {epoch + 1}, step {step}: a training batch holds non-finite stamps or "
                "targets (NaN or inf); the dataset is damaged"
            )
        img, sc = prepare_inputs(stamp, theta, phi, run.mcfg.crop)
        img, sc, target = img.to(device), sc.to(device), target.to(device).float()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            out_t = net(img, sc)
        loss, _ = FocusNet.loss(out_t.float(), target)
        if not torch.isfinite(loss):
            raise DataError(f"epoch {epoch + 1}, step {step}: the loss is not finite; stopped")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        run.opt.step()
        run.sched.step()
        tr_loss += float(loss.detach()) * len(target)
        n_seen += len(target)
    return tr_loss, n_seen


def _validate(run: _Run) -> tuple[float, float]:
    """Validation loss and RMSE (um), every rank on rank 0's BatchNorm statistics."""
    if run.distributed:
        # DDP keeps parameters equal; BatchNorm running statistics are each rank's own:
        # take rank 0's so that every rank validates and ends with the same model
        for buf in run.model.buffers():
            torch.distributed.broadcast(buf, 0)
    # looked up at call time: tests replace ``evaluate`` to interrupt a run
    return evaluate(run.model, Subset(run.dataset, run.va_idx), run.cfg.batch_size, run.device)


def _update_best(run: _Run, epoch: int, val_loss: float, val_rmse: float) -> None:
    """Advance the epoch; on an improvement keep the weights (``best.pt``, model directory)."""
    state = run.state
    state["epoch"] = epoch + 1
    if val_loss < state["best_val"] - 1e-4:
        state.update(best_val=val_loss, best_rmse_um=val_rmse, bad_epochs=0)
        if run.rank == 0:
            _atomic_save(run.model.state_dict(), run.out / "best.pt")
            # a usable model directory at every improvement: nothing lost on a crash
            save_model(run.model, run.out, run.meta())
    else:
        state["bad_epochs"] += 1


def _log_epoch(run: _Run, row: dict) -> None:
    """Append the epoch's row to ``log.csv`` (and TensorBoard); show it when ``progress``."""
    log_path = run.out / "log.csv"
    new = not log_path.exists()
    with open(log_path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    if run.tb is not None:
        for k, v in row.items():
            run.tb.add_scalar(k, v, row["epoch"])
    if run.progress:
        log.info(
            "epoch %d: train %.4f  val %.4f  val RMSE %.2f um",
            row["epoch"], row["train_loss"], row["val_loss"], row["val_rmse_um"],
        )  # fmt: skip


def _save_checkpoint(run: _Run) -> None:
    """Everything needed to resume (weights, optimiser, schedule, state, RNG), atomically."""
    cuda = run.device.startswith("cuda")
    _atomic_save(
        {
            "model": run.model.state_dict(),
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "state": run.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(run.device) if cuda else None,
            "train_config": asdict(run.cfg),
            "model_config": run.mcfg.to_dict(),
        },
        run.checkpoint,
    )


def _finish(run: _Run) -> dict:
    """Every rank on the best weights; rank 0 writes the model directory and summary."""
    if run.distributed:
        torch.distributed.barrier()
    best = run.out / "best.pt"  # every rank ends on the best weights (OUT on a shared filesystem)
    if best.exists():
        run.model.load_state_dict(torch.load(best, map_location=run.device, weights_only=True))
    if run.rank == 0:
        meta = run.meta()
        save_model(run.model, run.out, meta)
        (run.out / "summary.json").write_text(json.dumps(meta, indent=2))
    state = run.state
    return {
        "best_val_loss": state["best_val"],
        "best_val_rmse_um": state["best_rmse_um"],
        "epochs": state["epoch"],
        "wall_s": time.time() - run.t_start,
        "rank": run.rank,
        "weights_sha256": weights_digest(run.model),
    }


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
    run = _new_run(dataset, Path(out_dir), cfg, mcfg, device, metadata, progress)
    _resume(run)
    _prepare_training(run)
    run.t_start = time.time()
    while run.state["epoch"] < cfg.epochs and run.state["bad_epochs"] < cfg.patience:
        epoch = run.state["epoch"]
        tr_loss, n_seen = _train_epoch(run, epoch)
        val_loss, val_rmse = _validate(run)
        _update_best(run, epoch, val_loss, val_rmse)
        if run.rank == 0:
            row = {
                "epoch": epoch + 1,
                "train_loss": tr_loss / max(1, n_seen),
                "val_loss": val_loss,
                "val_rmse_um": val_rmse,
                "lr": run.sched.get_last_lr()[0],
                "elapsed_s": time.time() - run.t_start,
            }
            _log_epoch(run, row)
            _save_checkpoint(run)
    return _finish(run)


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


def check_dataset(data_dir: str | Path) -> None:
    """Refuse a dataset before training on it: a shard whose checksum does not match the
    manifest, or labels that are not finite (the stamps are checked batch by batch)."""
    from plato_sim.generate import describe
    from plato_sim.io.store import ShardedDataset, shard_is_valid

    store = ShardedDataset(data_dir, require_complete=False)
    status = store.manifest.get("status")
    if status != "complete":
        raise DataError(f"{data_dir}: dataset is not complete (status {status!r})")
    invalid = [
        f.name
        for f, s in zip(store.files, store.manifest["shards"], strict=True)
        if not shard_is_valid(f, s.get("sha256"))
    ]
    if invalid:
        raise DataError(
            f"{data_dir}: shards {invalid} do not match their checksums in the manifest; "
            "rerun plato-sim generate to regenerate them"
        )
    info = describe(data_dir)
    bad = [k for k, d in info.get("labels", {}).items() if not all(
        math.isfinite(float(d[s])) for s in ("mean", "min", "max")
    )]  # fmt: skip
    if bad:
        raise DataError(f"{data_dir}: labels {bad} hold non-finite values (NaN or inf)")


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

    check_dataset(data_dir)
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
