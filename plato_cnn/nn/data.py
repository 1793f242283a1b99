"""Torch datasets for FocusNet: in-memory arrays, synthetic shards and campaign frames.

Every dataset yields ``(stamp (H, W) float32, theta_deg, phi_deg, delta_um)`` and exposes
``group_ids`` (one id per sample: the camera perturbation, or the camera) so that training
can hold out whole cameras.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from plato_sim.errors import DataError
from plato_sim.names import DEPRECATED_NAMES, canonical_name

__all__ = ["ArrayFocusDataset", "ShardFocusDataset", "BlockShuffleSampler"]


class ArrayFocusDataset(Dataset):
    """Samples held in numpy arrays.

    Args:
        stamps: ``(N, H, W)`` background-subtracted stamps.
        theta_deg, phi_deg: ``(N,)`` field positions.
        delta_um: ``(N,)`` targets (offset from the field's EEF-optimal focus, um).
        group_ids: ``(N,)`` camera / perturbation ids.
    """

    def __init__(
        self,
        stamps: np.ndarray,
        theta_deg: np.ndarray,
        phi_deg: np.ndarray,
        delta_um: np.ndarray,
        group_ids: np.ndarray,
    ) -> None:
        n = len(stamps)
        for name, a in (("theta_deg", theta_deg), ("phi_deg", phi_deg), ("delta_um", delta_um)):
            if len(a) != n:
                raise DataError(f"{name} has {len(a)} entries for {n} stamps")
        self.stamps = np.ascontiguousarray(stamps, dtype=np.float32)
        self.theta_deg = np.asarray(theta_deg, dtype=np.float32)
        self.phi_deg = np.asarray(phi_deg, dtype=np.float32)
        self.delta_um = np.asarray(delta_um, dtype=np.float32)
        self.group_ids = np.asarray(group_ids)

    def __len__(self) -> int:
        return len(self.stamps)

    def __getitem__(self, i: int):
        return (
            torch.from_numpy(self.stamps[i]),
            float(self.theta_deg[i]),
            float(self.phi_deg[i]),
            float(self.delta_um[i]),
        )


class ShardFocusDataset(Dataset):
    """A synthetic dataset folder (``plato-sim generate``) as FocusNet samples.

    Reads lazily: the label columns it uses once (~30 bytes a sample), stamps per HDF5 chunk
    on demand with a small per-process cache, so a dataset never has to fit in memory and the
    instance can be handed to DataLoader worker processes.  Stamps are stored in electrons
    above the closed-shutter level, the campaign reader's unit.  Saturated samples are left
    out, as the reader flags and drops saturated frames.

    Args:
        root: dataset folder.
        target: label used as ``delta_um`` (default: offset from the field's EEF-optimal focus).
        drop_saturated: leave out samples with a saturated pixel.
        cache_blocks: decoded stamp chunks kept per process.
    """

    def __init__(
        self,
        root: str | Path,
        target: str = "dz_from_best_um",
        drop_saturated: bool = True,
        cache_blocks: int = 16,
    ) -> None:
        from plato_sim.io.store import ShardedDataset

        self.store = ShardedDataset(root)
        # canonical names on both sides: a deprecated target name, or a shard written under
        # the old label names, is the same label
        target = canonical_name(target, "target", stacklevel=2)
        stored = self.store._file(0)["labels"].dtype.names
        names = tuple(DEPRECATED_NAMES.get(n, n) for n in stored)
        if target not in names:
            raise DataError(f"{root}: no label {target!r} (labels: {names})")
        # the label columns used, one at a time: the whole label table (~250 bytes a sample,
        # 250 MB per million) would stay in this process and in every forked loader worker
        col = self.store.label_column
        keep = col("saturated") == 0 if drop_saturated else np.ones(len(self.store), bool)
        self.index = np.flatnonzero(keep)
        self.group_ids = col("camera_id")[keep].astype(np.int64)
        self.theta_deg = col("theta_deg")[keep].astype(np.float32)
        self.phi_deg = col("phi_deg")[keep].astype(np.float32)
        self.delta_um = col(target)[keep].astype(np.float32)
        shard = np.searchsorted(self.store.offsets, self.index, side="right") - 1
        self._shard = shard
        self._row = self.index - self.store.offsets[shard]
        self._chunk = self._chunk_len()
        #: block id of every sample (shard, chunk): for block-shuffled sampling
        self.block_ids = shard.astype(np.int64) * 1_000_000 + self._row // self._chunk
        self._cache: OrderedDict = OrderedDict()
        self._cache_blocks = int(cache_blocks)
        self._pid = os.getpid()
        self.manifest_sha256 = hashlib.sha256(
            json.dumps(self.store.manifest, sort_keys=True, default=str).encode()
        ).hexdigest()

    def _chunk_len(self) -> int:
        if len(self.store.files) == 0:
            return 1
        ch = self.store._file(0)["stamps"].chunks
        return int(ch[0]) if ch else 1

    def __len__(self) -> int:
        return len(self.index)

    def _block(self, shard: int, block: int) -> np.ndarray:
        if os.getpid() != self._pid:
            self._cache = OrderedDict()
            self._pid = os.getpid()
        key = (shard, block)
        b = self._cache.get(key)
        if b is None:
            ds = self.store._file(shard)["stamps"]
            b = ds[block * self._chunk : (block + 1) * self._chunk]
            self._cache[key] = b
            if len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return b

    def __getitem__(self, i: int):
        k, r = int(self._shard[i]), int(self._row[i])
        stamp = self._block(k, r // self._chunk)[r % self._chunk]
        return (
            torch.from_numpy(np.ascontiguousarray(stamp, dtype=np.float32)),
            float(self.theta_deg[i]),
            float(self.phi_deg[i]),
            float(self.delta_um[i]),
        )


class BlockShuffleSampler(torch.utils.data.Sampler):
    """Shuffles blocks of samples stored together, then samples within a window of blocks.

    Reading an HDF5 chunk once per epoch instead of once per sample keeps streaming from disk
    fast; mixing ``window`` blocks keeps batches diverse.  The order depends only on
    ``(seed, epoch)``.
    """

    def __init__(self, block_ids: np.ndarray, seed: int = 0, window: int = 8) -> None:
        self.block_ids = np.asarray(block_ids)
        self.seed = int(seed)
        self.window = int(window)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the order of an epoch is reproducible)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.block_ids)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks, inv = np.unique(self.block_ids, return_inverse=True)
        members = [np.flatnonzero(inv == b) for b in range(len(blocks))]
        order = rng.permutation(len(blocks))
        for s in range(0, len(order), self.window):
            idx = np.concatenate([members[b] for b in order[s : s + self.window]])
            yield from rng.permutation(idx).tolist()
