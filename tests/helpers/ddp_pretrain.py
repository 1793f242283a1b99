"""Run by tests/test_distributed.py under torchrun: two short DDP epochs on CPU (gloo).

Each rank writes its summary (with the digest of its final weights) to OUT/rank<r>.json.
"""

import json
import sys
from pathlib import Path

import numpy as np

from plato_cnn.nn.data import ArrayFocusDataset
from plato_cnn.nn.model import FocusNetConfig
from plato_cnn.pipelines.pretrain import TrainConfig, pretrain


def main(out: str) -> None:
    rng = np.random.default_rng(0)  # the same data on every rank
    n = 96
    ds = ArrayFocusDataset(
        rng.normal(0, 1, (n, 32, 32)).astype(np.float32) + 5.0,
        rng.uniform(0, 18, n),
        rng.uniform(0, 360, n),
        rng.uniform(-100, 100, n),
        np.repeat(np.arange(4), n // 4),
    )
    cfg = FocusNetConfig(crop=16, channels=(8, 16), blocks_per_stage=1, hidden=16)
    summary = pretrain(ds, out, TrainConfig(epochs=2, batch_size=16, seed=0), cfg, progress=False)
    Path(out, f"rank{summary['rank']}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
