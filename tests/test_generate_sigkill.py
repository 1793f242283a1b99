"""Dataset generation killed with SIGKILL at random points resumes to the clean result (issue 7).

``test_generate.py`` kills one run once, midway.  Here one ``plato-sim generate`` command is
killed (SIGKILL to its whole process group, the pool child included) four times at
seeded-random points, rerun after each kill, and finally completed; every shard, the camera
pool and the manifest's checksums must equal those of a clean run of the same command.

Kill points: the first a random 0-1.5 s after the run has written its manifest (the camera
pool, or the first shards on a fast machine); the others a random 0-100 ms after the run has
made a random number of new shards, so that they fall inside the shard phase (often in the
middle of writing a shard) however fast or loaded the machine is.  The seed fixes them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from plato_sim.generate import generate
from plato_sim.io.store import (
    CAMERAS_NAME,
    MANIFEST_NAME,
    ShardedDataset,
    shard_is_valid,
    shard_name,
)

#: A tiny dataset: 10 shards of 32 samples, 2 cameras with a coarse best-focus grid.
TINY = {
    "shards": {"samples_per_shard": 32, "samples_per_optical_state": 8},
    "spectrum": {"n_wavelengths": 2},
    "cameras": {"n_pool": 2},
    "best_focus": {"rings_h": [0.6, 1.0], "azimuths": 8, "n_wavelengths": 2, "n_sub": 2},
}
N_SAMPLES = 320
N_SHARDS = 10
SEED = 11
KILL_SEED = 20260107


def _command(out: Path, config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "plato_sim.cli",
        "generate",
        "--out",
        str(out),
        "--config",
        str(config),
        "--n",
        str(N_SAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--no-progress",
    ]


def _start(out: Path, config: Path) -> subprocess.Popen:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen(
        _command(out, config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group: the kill reaches the pool child too
    )


def _valid_shards(out: Path) -> int:
    return sum(shard_is_valid(out / shard_name(k)) for k in range(N_SHARDS))


def _visible_shards(out: Path) -> int:
    return sum((out / shard_name(k)).is_file() for k in range(N_SHARDS))


def _wait_and_kill(proc: subprocess.Popen, ready, delay_s: float, timeout_s: float = 120.0):
    """SIGKILL the process group ``delay_s`` after ``ready()`` is true (or it exits)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay_s)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=60)


def test_sigkill_at_random_points_resumes_to_the_clean_dataset(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    clean_dir, killed = tmp_path / "clean", tmp_path / "killed"
    clean = _start(clean_dir, config)  # the reference runs meanwhile, untouched

    rng = np.random.default_rng(KILL_SEED)
    states = []  # (return code, valid shards after the kill, manifest status)
    for i in range(4):
        proc = _start(killed, config)
        if i == 0:  # somewhere in the camera phase (or the first shards on a fast machine)
            manifest = killed / MANIFEST_NAME
            rc = _wait_and_kill(proc, manifest.is_file, float(rng.uniform(0.0, 1.5)))
        else:
            target = min(_visible_shards(killed) + int(rng.integers(1, 4)), N_SHARDS - 3)
            rc = _wait_and_kill(
                proc, lambda t=target: _visible_shards(killed) >= t, float(rng.uniform(0, 0.1))
            )
        status = None
        if (killed / MANIFEST_NAME).is_file():
            status = json.loads((killed / MANIFEST_NAME).read_text())["status"]
        states.append((rc, _valid_shards(killed), status))

    # every run was killed before it finished, and no kill lost finished shards
    print("kills (return code, valid shards, manifest status):", states)
    assert all(rc == -signal.SIGKILL for rc, _, _ in states), states
    assert all(status != "complete" for _, _, status in states), states
    counts = [n for _, n, _ in states]
    assert counts == sorted(counts) and counts[-1] < N_SHARDS, states
    assert counts[-1] >= 3, states  # the later kills did land in the shard phase

    resumed = generate(killed, config, n=N_SAMPLES, seed=SEED, workers=1, progress=False)
    assert clean.wait(timeout=300) == 0
    reference = json.loads((clean_dir / MANIFEST_NAME).read_text())
    assert resumed["status"] == reference["status"] == "complete"
    assert resumed["timing"]["shards_made_this_run"] == N_SHARDS - counts[-1]
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in reference["shards"]]
    assert resumed["cameras"]["sha256"] == reference["cameras"]["sha256"]
    for name in [shard_name(k) for k in range(N_SHARDS)] + [CAMERAS_NAME]:
        assert (killed / name).read_bytes() == (clean_dir / name).read_bytes(), name
    assert not list(killed.glob(".*.tmp-*"))  # a killed writer's temporaries were removed
    ds = ShardedDataset(killed)
    assert len(ds) == N_SAMPLES
    np.testing.assert_array_equal(np.unique(ds.label_column("shard")), np.arange(N_SHARDS))
    ds.close()
