"""Peak memory of generating and pretraining on a large dataset streamed from disk.

Requirement: "Generating and pretraining on 1 million samples stream from disk: peak RSS stays
under 4 GB (measured and reported)."  Two phases, each the command a user runs, in its own
process:

1. ``plato-sim generate --n N --workers 2`` into ``--out``.  An existing folder of the same
   dataset is resumed (only missing or invalid shards are made; a complete one is only
   verified, and the row says so); ``--fresh`` deletes it first.
2. ``plato-cnn pretrain`` on that folder: one epoch capped at ``--train-steps`` steps of
   ``--batch-size`` samples, with ``--loader-workers`` DataLoader worker processes, then the
   validation pass (``--max-val-samples`` held-out samples).  This is a **bounded run, not a
   full epoch** over N samples: it measures what streaming costs (labels in memory, lazily
   opened shard files, the per-process cache of decoded HDF5 chunks, the block-shuffled
   sampler), which does not grow with the number of steps once the sampler has visited most
   shards; the table gives how many shards and chunks the run touched.

Memory: every ``--period-s`` seconds a thread sums the RSS of the command's process and all
its descendants (Dask scheduler, nannies and workers; DataLoader workers) and keeps the
peak.  Summed RSS counts every shared page (the torch libraries, copy-on-write memory a
forked worker inherits) once per process, so it is an upper bound of what the tree holds;
the summed PSS (shared pages split between the processes sharing them) is given beside it.
The benchmark process itself is not counted.

    python -m benchmarks.memory [--quick] [--n 1000000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

if __package__ in (None, ""):  # run as a script: python benchmarks/memory.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    REPO_ROOT,
    machine_info,
    markdown_table,
    parse_with_quick,
    report,
    script_argv,
)

#: the project's limit on the peak memory of either phase (GB = 1e9 bytes)
LIMIT_GB = 4.0
#: ``--quick``: a small dataset and camera pool, a few training steps (a few minutes)
QUICK = dict(
    n=20_000, n_cameras=4, train_steps=40, out=str(REPO_ROOT / "out" / "memory_bench" / "quick")
)


class TreeMemory:
    """Peak summed RSS (and PSS) of a process and all its descendants, sampled in a thread.

    Args:
        root_pid: the process whose tree is measured (default: this process).
        period_s: sampling period (s).

    Attributes (bytes unless named otherwise): ``peak_rss``, ``peak_pss`` (peak of the summed
    PSS; 0 where the system does not report it), ``processes_at_peak`` (processes in the
    tree at the RSS peak), ``max_processes``, ``largest_rss`` and ``largest_name`` (the
    biggest single process seen), ``n_samples`` (sampling ticks).
    """

    def __init__(self, root_pid: int | None = None, period_s: float = 0.2) -> None:
        self.root = psutil.Process(root_pid)
        self.period_s = float(period_s)
        self.peak_rss = self.peak_pss = self.largest_rss = 0
        self.processes_at_peak = self.max_processes = self.n_samples = 0
        self.largest_name = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """One measurement of the tree (the thread calls it every ``period_s``)."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:  # the root has exited
            return
        rss = pss = n = 0
        for p in procs:
            try:
                m = p.memory_full_info()  # Linux: /proc/PID/smaps_rollup, cheap
            except psutil.AccessDenied:
                try:
                    m = p.memory_info()
                except psutil.Error:
                    continue
            except psutil.Error:  # exited between the listing and the read
                continue
            n += 1
            rss += m.rss
            pss += getattr(m, "pss", 0)
            if m.rss > self.largest_rss:
                self.largest_rss = m.rss
                try:
                    self.largest_name = " ".join(p.cmdline()[:4])[:80]
                except psutil.Error:
                    self.largest_name = "?"
        self.n_samples += 1
        self.max_processes = max(self.max_processes, n)
        self.peak_pss = max(self.peak_pss, pss)
        if rss > self.peak_rss:
            self.peak_rss, self.processes_at_peak = rss, n

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict:
        """The figures in GB (1e9 bytes), for the JSON record."""
        return {
            "peak_rss_GB": self.peak_rss / 1e9,
            "peak_pss_GB": self.peak_pss / 1e9 if self.peak_pss else None,
            "processes_at_peak": self.processes_at_peak,
            "max_processes": self.max_processes,
            "largest_process_rss_GB": self.largest_rss / 1e9,
            "largest_process": self.largest_name,
            "rss_samples": self.n_samples,
            "period_s": self.period_s,
        }


def run_measured(cmd: list[str], log: Path, period_s: float) -> tuple[str, float, dict]:
    """Run ``cmd`` (stderr to ``log``), measuring its process tree; ``(stdout, wall_s, mem)``.

    Raises:
        RuntimeError: the command failed (with the end of its log).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO_ROOT)
        with TreeMemory(proc.pid, period_s) as mem:
            out, _ = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return out.decode(errors="replace"), wall, mem.as_dict()


def _dataset_state(ds: Path, n: int) -> str:
    """``complete``, ``partial`` (same n, generation unfinished) or ``new``."""
    from plato_sim.io.store import read_manifest

    try:
        m = read_manifest(ds)
    except (OSError, ValueError):
        return "new"
    if m.get("n_samples") != n:
        return "new"  # generate reports the mismatch itself
    return "complete" if m.get("status") == "complete" else "partial"


def generation_phase(args: argparse.Namespace, ds: Path) -> dict:
    """Generate (or resume) the dataset; timing, disk size and memory of the command."""
    from plato_sim.io.store import read_manifest

    if args.fresh and ds.exists():
        shutil.rmtree(ds)
    before = _dataset_state(ds, args.n)
    cmd = [sys.executable, "-m", "plato_sim.cli", "generate", "--out", str(ds)]
    cmd += ["--n", str(args.n), "--seed", str(args.seed), "--workers", str(args.workers)]
    cmd += ["--no-progress"]
    if args.n_cameras:
        cfg = ds.parent / f"pool{args.n_cameras}.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(f"cameras:\n  n_pool: {args.n_cameras}\n", encoding="utf-8")
        cmd += ["--config", str(cfg)]
    _, wall, mem = run_measured(cmd, ds.parent / "generate.log", args.period_s)
    m = read_manifest(ds)
    tim = m["timing"]
    made = int(tim["shards_made_this_run"])
    made_n = sum(s["n"] for s in m["shards"]) if made == len(m["shards"]) else None
    disk = sum(f.stat().st_size for f in ds.iterdir() if f.is_file())
    note = f"{made} of {len(m['shards'])} shards made this run"
    if before == "complete":
        note += " (dataset already complete: checksums verified, nothing generated)"
    elif before == "partial":
        note += " (resumed)"
    return {
        "phase": "generate",
        "command": cmd,
        "dataset_before": before,
        "samples": args.n,
        "shards": len(m["shards"]),
        "shards_made_this_run": made,
        "camera_pool": m["cameras"]["n"],
        "workers": args.workers,
        "wall_s": wall,
        "samples_per_s": made_n / wall if made_n else None,
        "shard_phase_samples_per_s": (
            made_n / tim["shard_phase_wall_s"] if made_n and tim["shard_phase_wall_s"] else None
        ),
        "disk_GB": disk / 1e9,
        "note": note,
        **mem,
    }


def training_phase(args: argparse.Namespace, ds: Path) -> dict:
    """A bounded pretraining run streaming from ``ds``; memory and timing of the command."""
    model = Path(args.out) / "model"
    if model.exists():  # pretrain resumes from a checkpoint: start afresh
        shutil.rmtree(model)
    cmd = [sys.executable, "-m", "plato_cnn.cli", "pretrain", "--data", str(ds)]
    cmd += ["--out", str(model), "--epochs", "1", "--max-steps-per-epoch", str(args.train_steps)]
    cmd += ["--batch-size", str(args.batch_size), "--workers", str(args.loader_workers)]
    cmd += ["--max-val-samples", str(args.max_val_samples), "--seed", str(args.seed)]
    out, wall, mem = run_measured(cmd, Path(args.out) / "pretrain.log", args.period_s)
    try:
        summary = json.loads(out[out.index("{") :])
    except ValueError:
        summary = None
    cov = coverage(ds, args.train_steps, args.batch_size, args.max_val_samples, args.seed)
    streamed = cov["train_samples_drawn"] + cov["val_samples"]
    note = (
        f"bounded: {cov['steps']} steps x {args.batch_size} = {cov['train_samples_drawn']} "
        f"samples ({100 * cov['epoch_fraction']:.1f} % of one epoch) + {cov['val_samples']} "
        f"validation; {cov['shards_touched']} of {cov['shards']} shards, "
        f"{cov['chunks_touched']} HDF5 chunks touched; {args.loader_workers} loader workers"
    )
    return {
        "phase": "pretrain",
        "command": cmd,
        "samples": streamed,
        "wall_s": wall,
        "samples_per_s": streamed / wall,
        "loader_workers": args.loader_workers,
        "summary": summary,
        "coverage": cov,
        "note": note,
        **mem,
    }


def coverage(ds: Path, steps: int, batch_size: int, max_val: int, seed: int) -> dict:
    """Which shards and HDF5 chunks the bounded run read (the pretrain split and sampler)."""
    from plato_cnn.nn.data import BlockShuffleSampler, ShardFocusDataset
    from plato_cnn.pipelines.pretrain import TrainConfig, split_by_group

    d = ShardFocusDataset(ds)
    tr, va = split_by_group(d.group_ids, TrainConfig().val_fraction, seed)
    n_steps = min(steps, math.ceil(len(tr) / batch_size))
    sampler = BlockShuffleSampler(d.block_ids[tr], seed)
    sampler.set_epoch(0)
    drawn = []
    for i in sampler:
        drawn.append(i)
        if len(drawn) >= n_steps * batch_size:
            break
    rows = tr[np.asarray(drawn, dtype=np.int64)]
    n_val = min(len(va), max_val) if max_val else len(va)
    out = {
        "usable_samples": len(d),
        "train_split": int(len(tr)),
        "steps": int(n_steps),
        "train_samples_drawn": int(len(rows)),
        "epoch_fraction": len(rows) / max(1, len(tr)),
        "val_samples": int(n_val),
        "shards": len(d.store.files),
        "shards_touched": int(np.unique(d._shard[rows]).size),
        "chunks_touched": int(np.unique(d.block_ids[rows]).size),
        "chunk_samples": int(d._chunk),
    }
    d.store.close()
    return out


def markdown(result: dict) -> str:
    """The phases of a result (as written to ``--json``) as a Markdown table and notes."""
    rows = [
        dict(r, limit_GB=LIMIT_GB, ok="pass" if r["peak_rss_GB"] < LIMIT_GB else "FAIL")
        for r in result["rows"]
    ]
    cols = [
        ("phase", "phase", ""),
        ("samples", "samples", ",d"),
        ("wall_s", "wall s", ".0f"),
        ("samples_per_s", "samples/s", ".0f"),
        ("max_processes", "processes", "d"),
        ("peak_rss_GB", "peak RSS GB (tree sum)", ".2f"),
        ("peak_pss_GB", "peak PSS GB", ".2f"),
        ("limit_GB", "limit GB", ".0f"),
        ("ok", "result", ""),
    ]
    notes = [f"- {r['phase']}: {r['note']}" for r in result["rows"]]
    gen = next((r for r in result["rows"] if r["phase"] == "generate"), None)
    if gen:
        notes.append(f"- dataset on disk: {gen['disk_GB']:.2f} GB")
    return markdown_table(rows, cols) + "\n\n" + "\n".join(notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="samples to generate")
    ap.add_argument("--workers", type=int, default=2, help="generation worker processes")
    ap.add_argument("--n-cameras", type=int, default=0, help="camera pool (0: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        default=str(REPO_ROOT / "out" / "memory_bench" / "full"),
        help="work folder: dataset in OUT/ds (resumed if there), model in OUT/model, logs",
    )
    ap.add_argument("--fresh", action="store_true", help="delete OUT/ds and generate anew")
    ap.add_argument("--train-steps", type=int, default=300, help="training steps (bounded run)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--loader-workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--max-val-samples", type=int, default=8192, help="pretrain's default")
    ap.add_argument("--skip-train", action="store_true", help="measure generation only")
    ap.add_argument(
        "--data", default=None, help="measure pretraining on this existing dataset (no generation)"
    )
    ap.add_argument("--period-s", type=float, default=0.2, help="RSS sampling period (s)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this file")
    args = parse_with_quick(ap, argv, QUICK)

    ds = Path(args.data or Path(args.out) / "ds")
    try:
        rows = [] if args.data else [generation_phase(args, ds)]
        if not args.skip_train:
            rows.append(training_phase(args, ds))
    except RuntimeError as exc:  # a phase's command failed: its log's end is in the message
        print(f"benchmarks.memory: {exc}", file=sys.stderr)
        return 2
    res = {
        "machine": machine_info(),
        "command": script_argv(),
        "quick": bool(args.quick),
        "dataset": str(ds),
        "limit_GB": LIMIT_GB,
        "rows": rows,
        "passed": all(r["peak_rss_GB"] < LIMIT_GB for r in rows),
    }
    report(res, markdown(res), args.json)
    print("(machine shared with other jobs: wall times and rates depend on their load)")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
