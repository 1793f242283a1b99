"""Dataset generation: worker-count independence, crash safety and resume, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from plato_sim.cli import main as cli_main
from plato_sim.generate import generate
from plato_sim.io.store import ShardedDataset, shard_name

TINY = {
    "shards": {"samples_per_shard": 48, "samples_per_optical_state": 8},
    "spectrum": {"n_wavelengths": 2},
    "cameras": {"n_pool": 2},
    "best_focus": {"rings_h": [0.6, 1.0], "azimuths": 8, "n_wavelengths": 2},
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, config_file) -> dict:
    out = tmp_path_factory.mktemp("clean")
    return generate(out, config_file, n=600, seed=7, workers=1, progress=False)


def _shas(manifest: dict) -> list[str]:
    return [s["sha256"] for s in manifest["shards"]]


def test_clean_run_is_complete_and_readable(clean_run):
    assert clean_run["status"] == "complete"
    assert [s["n"] for s in clean_run["shards"]] == [48] * 12 + [24]
    assert all(_shas(clean_run))
    assert clean_run["samples_per_optical_state"] == 8
    assert clean_run["libraries"]["h5py"]


def test_same_shards_with_one_and_two_workers(tmp_path, config_file):
    one = generate(tmp_path / "w1", config_file, n=96, seed=3, workers=1, progress=False)
    two = generate(tmp_path / "w2", config_file, n=96, seed=3, workers=2, progress=False)
    assert two["timing"]["workers"] == 2
    assert _shas(one) == _shas(two)
    for k in range(2):
        a = (tmp_path / "w1" / shard_name(k)).read_bytes()
        assert a == (tmp_path / "w2" / shard_name(k)).read_bytes()
    assert (tmp_path / "w1" / "cameras.json").read_bytes() == (
        tmp_path / "w2" / "cameras.json"
    ).read_bytes()


def test_external_scheduler_gives_the_same_shards(tmp_path, config_file):
    from distributed import LocalCluster

    one = generate(tmp_path / "w1", config_file, n=60, seed=4, workers=1, progress=False)
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    ) as cluster:
        ext = generate(
            tmp_path / "ext",
            config_file,
            n=60,
            seed=4,
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert _shas(one) == _shas(ext)


def test_killed_run_resumes_to_the_clean_result(tmp_path, config_file, clean_run):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "plato_sim.cli", "generate", "--out", str(out)]
    cmd += ["--config", str(config_file), "--n", "600", "--seed", "7", "--workers", "1"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.glob("shard-*.h5"))) >= 2:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    made = sorted(p.name for p in out.glob("shard-*.h5"))
    assert 2 <= len(made) < 13, "the run was not killed midway"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"
    with pytest.raises(ValueError, match="not complete"):
        ShardedDataset(out)
    # corrupt one finished shard too: its checksum must send it back to the queue
    victim = out / made[0]
    victim.write_bytes(victim.read_bytes()[:-64])
    resumed = generate(out, config_file, n=600, seed=7, workers=1, progress=False)
    assert resumed["status"] == "complete"
    assert _shas(resumed) == _shas(clean_run)
    assert resumed["timing"]["shards_made_this_run"] < 13
    assert not list(out.glob(".*.tmp-*"))
    ds = ShardedDataset(out)
    assert len(ds) == 600
    lab = ds.labels()
    assert np.array_equal(np.unique(lab["shard"]), np.arange(13))


def test_rerun_of_a_finished_dataset_does_nothing(tmp_path, config_file):
    out = tmp_path / "again"
    generate(out, config_file, n=50, seed=1, workers=1, progress=False)
    again = generate(out, config_file, n=50, seed=1, workers=1, progress=False)
    assert again["timing"]["shards_made_this_run"] == 0
    with pytest.raises(ValueError, match="another seed"):
        generate(out, config_file, n=50, seed=2, workers=1, progress=False)


def test_dataset_written_before_the_spectrum_rule_resumes(tmp_path, config_file):
    """A manifest without ``spectrum.rule`` (written before the key existed) is the midpoint
    rule's dataset: the same command finds nothing to do; the Gauss rule is another config."""
    from plato_sim.io.store import MANIFEST_NAME

    out = tmp_path / "old"
    generate(out, config_file, n=50, seed=1, workers=1, progress=False)
    man = json.loads((out / MANIFEST_NAME).read_text())
    del man["config"]["spectrum"]["rule"]
    (out / MANIFEST_NAME).write_text(json.dumps(man))
    again = generate(out, config_file, n=50, seed=1, workers=1, progress=False)
    assert again["timing"]["shards_made_this_run"] == 0
    gauss = tmp_path / "gauss.yaml"
    gauss.write_text(yaml.safe_dump({**TINY, "spectrum": {"n_wavelengths": 2, "rule": "gauss"}}))
    with pytest.raises(ValueError, match="another config"):
        generate(out, gauss, n=50, seed=1, workers=1, progress=False)


def test_cli_generate_and_info(tmp_path, config_file, capsys):
    out = tmp_path / "cli"
    args = ["generate", "--out", str(out), "--config", str(config_file), "--n", "40"]
    assert cli_main(args + ["--seed", "-0", "--workers", "1", "--no-progress"]) == 0
    rc = cli_main(
        ["info", str(out), "--verify", "--json", str(tmp_path / "i.json")]
        + ["--fits", str(tmp_path / "s.fits"), "--indices", "0,39"]
        + ["--gallery", str(tmp_path / "g.png")]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "n_samples: 40" in text and "dz_from_best_um" in text
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["invalid_shards"] == []
    assert info["labels"]["dz_from_best_um"]["min"] >= -200.0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert not (out / "gallery.png").exists()  # nothing written into the dataset
    assert (tmp_path / "s.fits").is_file()
    capsys.readouterr()
    # no output inside the dataset: one line, exit 2, before anything is written
    before = sorted(p.name for p in out.iterdir())
    for flag, name in (("--json", "x.json"), ("--fits", "x.fits"), ("--gallery", "x.png")):
        extra = ["--indices", "0"] if flag == "--fits" else []
        assert cli_main(["info", str(out), flag, str(out / name), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and "inside the dataset" in err[0]
    assert sorted(p.name for p in out.iterdir()) == before
    # a count below 1 is refused by the parser: exit 2, the last line names the flag and range
    with pytest.raises(SystemExit) as exc:
        cli_main(["generate", "--out", str(tmp_path / "x"), "--n", "0", "--workers", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert "argument --n: must be an integer >= 1, got 0" in err.splitlines()[-1]
    assert not (tmp_path / "x").exists()
