"""Pretraining under torchrun with two CPU processes (gloo): the ranks end with equal weights."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_torchrun_two_ranks_hold_the_same_weights(tmp_path):
    script = Path(__file__).parent / "helpers" / "ddp_pretrain.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", str(script), str(tmp_path)]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s0 = json.loads((tmp_path / "rank0.json").read_text())
    s1 = json.loads((tmp_path / "rank1.json").read_text())
    assert s0["epochs"] == s1["epochs"] == 2
    assert s0["weights_sha256"] == s1["weights_sha256"]
    assert (tmp_path / "model.safetensors").is_file()  # rank 0 wrote the model directory
