"""Memory of streaming (issue 7): benchmarks/memory.py's process-tree sampler, and what a
shard dataset keeps per sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
from dataset_builder import write_tiny_dataset

from plato_cnn.nn.data import ShardFocusDataset
from plato_sim.scenes.sampling import label_dtype

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the benchmarks/ folder is not an installed package
    sys.path.insert(0, str(ROOT))
from benchmarks.memory import TreeMemory  # noqa: E402

ALLOC_BYTES = 200_000_000


def test_tree_memory_counts_descendants():
    """A grandchild (shell -> python) holding 200 MB shows in the tree of this process."""
    code = (
        f"import sys; b = bytearray(b'x') * {ALLOC_BYTES}; "  # written, so resident
        "print('ready', flush=True); sys.stdin.read()"
    )
    shell = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -c "{code}"'],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert shell.stdout.readline().strip() == "ready"
        me = TreeMemory(period_s=1.0)
        mine = psutil.Process().memory_info().rss
        me.sample()
        assert me.max_processes >= 3  # this process, the shell, the allocating python
        assert me.peak_rss >= mine + ALLOC_BYTES
        assert me.largest_rss >= ALLOC_BYTES and "python" in me.largest_name
        sub = TreeMemory(shell.pid)
        sub.sample()
        assert sub.max_processes == 2 and ALLOC_BYTES <= sub.peak_rss < me.peak_rss
        assert 0 < sub.peak_pss <= sub.peak_rss  # PSS splits shared pages: never above RSS
    finally:
        shell.stdin.close()
        shell.wait(timeout=30)
    peak = sub.peak_rss
    sub.sample()  # the tree has exited: measured as nothing, without an error
    assert sub.peak_rss == peak


def test_shard_dataset_keeps_label_columns_not_the_label_table(tmp_path):
    """Per sample, ShardFocusDataset holds a few index and label columns (~50 bytes), not the
    whole label row (~250 bytes: 250 MB per million samples, in every loader worker too)."""
    ds = ShardFocusDataset(write_tiny_dataset(tmp_path / "ds", n_shards=3, n_per_shard=64))
    held = sum(v.nbytes for v in vars(ds).values() if isinstance(v, np.ndarray))
    assert len(ds) == 3 * 64
    assert held / len(ds) < label_dtype().itemsize / 4
    lab = ds.store.labels()[ds.index]  # the columns are those of the label table
    assert np.array_equal(ds.group_ids, lab["camera_id"])
    assert np.array_equal(ds.delta_um, lab["dz_from_best_um"].astype(np.float32))
    assert np.array_equal(ds.phi_deg, lab["phi_deg"].astype(np.float32))
