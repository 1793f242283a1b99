"""Tiny synthetic-dataset folders for tests that need the storage layout, not the physics.

:func:`write_tiny_dataset` writes shards with :func:`plato_sim.io.store.write_shard` (random
labels of the real label dtype, random stamps) and a complete manifest, in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plato_sim.generate import MANIFEST_FORMAT
from plato_sim.io.store import MANIFEST_NAME, shard_name, write_json_atomic, write_shard
from plato_sim.scenes.sampling import label_dtype


def write_tiny_dataset(
    root: Path,
    n_shards: int = 2,
    n_per_shard: int = 8,
    size_px: int = 8,
    seed: int = 7,
    damage: str | None = None,
) -> Path:
    """A complete dataset folder; every label an integer in 1..4 (camera ids among them).

    ``damage``: ``"nan_label"`` (one target label NaN) or ``"nan_stamp"`` (one stamp pixel
    NaN), written with valid checksums, as a buggy generator would.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shards = []
    for k in range(n_shards):
        lab = np.zeros(n_per_shard, label_dtype())
        for name in lab.dtype.names:
            lab[name] = rng.integers(1, 5, n_per_shard)
        lab["saturated"] = 0
        stamps = rng.normal(0.0, 1.0, (n_per_shard, size_px, size_px)).astype(np.float32)
        if k == n_shards - 1 and damage == "nan_label":
            lab["dz_from_best_um"][0] = np.nan
        if k == n_shards - 1 and damage == "nan_stamp":
            stamps[0, 1, 1] = np.nan
        digest = write_shard(root / shard_name(k), stamps, lab, {"shard": k})
        shards.append({"file": shard_name(k), "n": n_per_shard, "sha256": digest})
    manifest = {
        "format": MANIFEST_FORMAT,
        "status": "complete",
        "n_samples": n_shards * n_per_shard,
        "shards": shards,
    }
    write_json_atomic(root / MANIFEST_NAME, manifest)
    return root
