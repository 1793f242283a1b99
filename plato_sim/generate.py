"""Generate a synthetic dataset at scale: local cores or a Dask cluster, resumable.

``generate(out, ...)`` makes the camera pool (one task per camera), then the shards (one task
per shard), writing each shard from the worker that made it (a remote cluster therefore needs
``out`` on a file system its workers share).  Execution:

* ``workers == 1`` and no scheduler: one fresh single-threaded child process, no Dask;
* otherwise, ``scheduler`` given: ``dask.distributed.Client(scheduler)``;
* otherwise an embedded ``LocalCluster`` of ``workers`` single-threaded worker processes
  (default: one per CPU core).

Shard ``k`` depends only on (config, seed, k) (:mod:`plato_sim.scenes.dataset`), so the files
are bit-identical whatever the number of workers (same CPU library versions).  Rerunning the
same command resumes: valid shards (checksum) are skipped, missing, truncated or corrupt
ones are regenerated.  A different config, seed or ``n`` in an existing folder is an error.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from plato_sim._version import __version__
from plato_sim.errors import ParameterError
from plato_sim.io.store import (
    CAMERAS_NAME,
    MANIFEST_NAME,
    read_manifest,
    read_sidecar,
    sha256_file,
    shard_is_valid,
    shard_name,
    write_bytes_atomic,
    write_json_atomic,
    write_shard,
)
from plato_sim.scenes import dataset, inorbit
from plato_sim.scenes.sampling import (
    CameraEntry,
    build_camera,
    canonical_config,
    config_json,
    load_config,
    resolve_camera_pool,
    validate_config,
)

__all__ = [
    "generate",
    "make_shard",
    "shard_plan",
    "describe",
    "write_gallery",
    "MANIFEST_FORMAT",
    "SCENES",
]

MANIFEST_FORMAT = "plato-focus-dataset/1"


def shard_plan(n: int, samples_per_shard: int) -> list[int]:
    """Sample counts of the shards of an ``n``-sample dataset (the last one may be smaller)."""
    if n < 1:
        raise ParameterError(f"--n must be >= 1, got {n}")
    k = math.ceil(n / samples_per_shard)
    return [samples_per_shard] * (k - 1) + [n - samples_per_shard * (k - 1)]


def _library_versions() -> dict:
    import h5py
    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }


#: The scenes a dataset config can make (one shard contract: ``(stamps, labels)``); a config
#: with an ``imagettes`` section makes in-orbit imagettes, any other the ground-test stamps.
SCENES = {"stamps": dataset.make_shard, "imagettes": inorbit.make_imagette_shard}


def scene_of(cfg: dict) -> str:
    """The scene (key of :data:`SCENES`) that ``cfg`` describes."""
    return "imagettes" if "imagettes" in cfg else "stamps"


def make_shard(cfg: dict, seed: int, k: int, n: int, cameras: list[CameraEntry]):
    """Shard ``k`` (``n`` samples) of the scene that ``cfg`` describes."""
    return SCENES[scene_of(cfg)](cfg, seed, k, n, cameras)


# ----------------------------------------------------------------------------- tasks
def _camera_task(cfg: dict, seed: int, index: int) -> tuple[dict, float]:
    c = time.process_time()
    return build_camera(cfg, seed, index).to_dict(), time.process_time() - c


def _shard_task(
    out: str, cfg: dict, seed: int, k: int, n: int, cameras: list[dict]
) -> tuple[int, int, str, float]:
    c = time.process_time()  # CPU time of this task: its cost without other processes' load
    cams = [CameraEntry.from_dict(c) for c in cameras]
    stamps, labels = make_shard(cfg, seed, k, n, cams)
    meta = {"seed": seed, "shard": k, "n": n, "version": __version__}
    digest = write_shard(Path(out) / shard_name(k), stamps, labels, meta)
    return k, n, digest, time.process_time() - c


# ----------------------------------------------------------------------------- executors
_ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _call(fn: Callable, args: tuple):
    return fn(*args)


class _Serial:
    """Runs tasks one at a time in one fresh, single-threaded child process, in order.

    Why a child and not this process: the FFT library keeps plans made with the thread count
    of their first use, so a long-lived process that already ran multi-threaded FFTs of the
    same sizes (a notebook, a test session) could produce other last bits than a fresh worker.
    A fresh process started with one thread is exactly what every Dask worker is.
    """

    def __init__(self) -> None:
        import multiprocessing as mp

        saved = {k: os.environ.get(k) for k in _ONE_THREAD_ENV}
        os.environ.update(_ONE_THREAD_ENV)  # inherited by the child at its start
        try:
            self.pool = mp.get_context("spawn").Pool(1)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def map_unordered(self, fn: Callable, args: Iterable[tuple]) -> Iterable:
        for a in args:
            yield self.pool.apply(_call, (fn, a))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class _Dask:
    """A dask.distributed client (given scheduler or embedded LocalCluster)."""

    def __init__(self, workers: int, scheduler: str | None) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:
            self.client = Client(scheduler)
        else:
            import dask

            # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which turns off
            # glibc's dynamic mmap threshold: every freed temporary array is unmapped, and the
            # page faults tripled the CPU time of a shard (measured).  Keep glibc's default.
            pre = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
            pre.pop("MALLOC_TRIM_THRESHOLD_", None)
            with dask.config.set({"distributed.nanny.pre-spawn-environ": pre}):
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: never clash with another cluster
                    env={
                        "OPENBLAS_NUM_THREADS": "1",
                        "OMP_NUM_THREADS": "1",
                        "MKL_NUM_THREADS": "1",
                    },
                )
            self.client = Client(self.cluster)

    def map_unordered(self, fn: Callable, args: Iterable[tuple]) -> Iterable:
        from distributed import as_completed

        pending = as_completed([self.client.submit(fn, *a, pure=False) for a in args])
        for fut in pending:
            result = fut.result()
            # drop the result from the cluster: a worker lost later must not redo a done task
            fut.release()
            yield result

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ----------------------------------------------------------------------------- main
# Long because: resumable generation: manifest identity, camera pool, the shard
# loop over local or Dask workers and the atomic manifest updates must stay in one
# transaction-like sequence.
def generate(
    out: str | Path,
    config: str | Path | dict | None = None,
    n: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    camera_pool: int | None = None,
) -> dict:
    """Generate (or resume) a dataset in folder ``out``; returns the manifest.

    Args:
        out: dataset folder (created).
        config: YAML path, a config dict (already merged), or None for the built-in default.
        n: number of samples (default: one shard of the config's ``samples_per_shard``).
        seed: dataset seed (0 <= seed < 2**63).
        workers: local worker processes (default: CPU cores); 1 runs in this process.
        scheduler: address of a running Dask scheduler (overrides ``workers``).
        progress: show a tqdm progress bar (samples).
        camera_pool: cameras in the pool, overriding ``cameras.n_pool`` (whose ``auto`` follows
            ``n``: :func:`plato_sim.scenes.sampling.camera_pool_size`).
    """
    from tqdm import tqdm

    cfg = config if isinstance(config, dict) else load_config(config)
    if isinstance(config, dict):
        validate_config(cfg)
    per_shard = int(cfg["shards"]["samples_per_shard"])
    n = per_shard if n is None else int(n)
    if not 0 <= int(seed) < 2**63:
        raise ParameterError(f"--seed must lie in [0, 2**63), got {seed}")
    seed = int(seed)
    workers = int(workers or os.cpu_count() or 1)
    if workers < 1:
        raise ParameterError(f"--workers must be >= 1, got {workers}")
    plan = shard_plan(n, per_shard)
    cfg = resolve_camera_pool(cfg, n, camera_pool)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)

    manifest_path = out / MANIFEST_NAME
    identity = {"config": json.loads(config_json(cfg)), "seed": seed, "n_samples": n}
    if manifest_path.exists():
        try:
            old = read_manifest(out)
        except ValueError as exc:  # corrupt: which dataset the folder holds is unknown
            raise ParameterError(f"{exc}; choose a new --out or delete the folder") from exc
        if isinstance(old.get("config"), dict):  # written by an earlier version: old key names
            old["config"] = canonical_config(old["config"], str(manifest_path))
            # and keys added since, at the value that reproduces what it wrote
            if isinstance(old["config"].get("spectrum"), dict):
                old["config"]["spectrum"].setdefault("rule", "midpoint")
        mismatch = [k for k, v in identity.items() if old.get(k) != v]
        if mismatch:
            raise ParameterError(
                f"{out}: holds a dataset with another {', '.join(mismatch)}; "
                "choose a new --out or delete the folder"
            )
    t_start = time.perf_counter()
    manifest = {
        "format": MANIFEST_FORMAT,
        "status": "incomplete",
        **identity,
        "package_version": __version__,
        "libraries": _library_versions(),
        "seed_scheme": "np.random.SeedSequence(seed, spawn_key=(0, camera) | (1, shard) | "
        "(1, shard, 2) per-state diffusion)",
        "samples_per_optical_state": int(cfg["shards"]["samples_per_optical_state"]),
        "cameras": {"file": CAMERAS_NAME, "n": int(cfg["cameras"]["n_pool"]), "sha256": None},
        "shards": [
            {"file": shard_name(k), "n": c, "spawn_key": [1, k], "sha256": None}
            for k, c in enumerate(plan)
        ],
    }
    write_json_atomic(manifest_path, manifest)

    ex = _Serial() if (workers == 1 and not scheduler) else _Dask(workers, scheduler)
    try:
        cameras, cam_s, cam_cpu = _camera_pool(out, cfg, seed, ex, progress)
        manifest["cameras"]["sha256"] = read_sidecar(out / CAMERAS_NAME)
        todo, done_n = [], 0
        for k, c in enumerate(plan):
            entry = manifest["shards"][k]
            if shard_is_valid(out / entry["file"]):
                entry["sha256"] = read_sidecar(out / entry["file"])
                done_n += c
            else:
                todo.append((str(out), cfg, seed, k, c, cameras))
        bar = tqdm(
            total=n, initial=done_n, unit="sample", disable=not progress, desc="shards", smoothing=0
        )
        shard_s = 0.0
        t_shards = time.perf_counter()
        for k, c, digest, secs in ex.map_unordered(_shard_task, todo):
            manifest["shards"][k]["sha256"] = digest
            shard_s += secs
            bar.update(c)
            write_json_atomic(manifest_path, manifest)
        bar.close()
        shard_wall = time.perf_counter() - t_shards
    finally:
        ex.close()
    manifest["status"] = "complete"
    manifest["timing"] = {
        "wall_s_this_run": time.perf_counter() - t_start,
        "camera_phase_wall_s": cam_s,
        "shard_phase_wall_s": shard_wall,
        "camera_task_cpu_s_sum": cam_cpu,
        "shard_task_cpu_s_sum": shard_s,
        "shards_made_this_run": len(todo),
        "workers": 1 if isinstance(ex, _Serial) else (workers if not scheduler else None),
    }
    write_json_atomic(manifest_path, manifest)
    return manifest


def _camera_pool(out: Path, cfg: dict, seed: int, ex, progress: bool) -> tuple[list, float, float]:
    """Load the camera pool if valid, else build it (one task per camera)."""
    from tqdm import tqdm

    path = out / CAMERAS_NAME
    n_pool = int(cfg["cameras"]["n_pool"])
    if path.is_file() and read_sidecar(path) == sha256_file(path):
        cams = json.loads(path.read_text(encoding="utf-8"))
        if len(cams) == n_pool:
            return cams, 0.0, 0.0
    t = time.perf_counter()
    cpu = 0.0
    cams: list = [None] * n_pool
    with tqdm(total=n_pool, unit="camera", disable=not progress, desc="cameras") as bar:
        for c, secs in ex.map_unordered(_camera_task, [(cfg, seed, i) for i in range(n_pool)]):
            cams[c["index"]] = c
            cpu += secs
            bar.update(1)
    data = (json.dumps(cams, sort_keys=True) + "\n").encode()
    write_bytes_atomic(str(path) + ".sha256", (_sha256_bytes(data) + "\n").encode())
    write_bytes_atomic(path, data)
    return cams, time.perf_counter() - t, cpu


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporaries left by a killed run (``.<name>.tmp-<pid>``)."""
    for p in out.glob(".*.tmp-*"):
        try:
            p.unlink()
        except OSError:
            pass


# ----------------------------------------------------------------------------- inspection
#: Labels summarised by :func:`describe` (name, unit).
SUMMARY_LABELS = (
    ("dz_from_best_um", "um"),
    ("dz_th_um", "um"),
    ("temperature_degC", "degC"),
    ("bft_degC", "degC"),
    ("theta_deg", "deg"),
    ("flux_e", "e-"),
    ("background_e_per_px", "e-/px"),
    ("gain_e_per_adu", "e-/ADU"),
    ("read_noise_e", "e-"),
    ("eef_true", ""),
    ("offset_x_px", "px"),
    ("offset_y_px", "px"),
)


def describe(root: str | Path, verify: bool = False) -> dict:
    """Counts and label distributions of a dataset folder (reads labels only).

    With ``verify``, every shard's checksum is checked too (reads every byte).
    """
    from plato_sim.io.store import ShardedDataset

    ds = ShardedDataset(root, require_complete=False)
    m = ds.manifest
    present = [f.is_file() for f in ds.files]
    info: dict = {
        "root": str(root),
        "status": m.get("status"),
        "n_samples_planned": m.get("n_samples"),
        "n_shards": len(ds.files),
        "n_shards_present": int(sum(present)),
        "seed": m.get("seed"),
        "package_version": m.get("package_version"),
        "samples_per_optical_state": m.get("samples_per_optical_state"),
    }
    if verify:
        bad = [
            str(f.name)
            for f, s in zip(ds.files, m["shards"], strict=True)
            if not shard_is_valid(f, s.get("sha256"))
        ]
        info["invalid_shards"] = bad
    if not all(present):
        return info
    lab = ds.labels()
    info["n_samples"] = int(lab.size)
    info["n_cameras"] = int(np.unique(lab["camera_id"]).size)
    info["n_saturated"] = int(lab["saturated"].sum())
    info["n_stamps_touching_window_edge"] = int(np.count_nonzero(lab["n_outside_px"]))
    info["ccd_counts"] = {int(c): int(np.count_nonzero(lab["ccd"] == c)) for c in (1, 2, 3, 4)}
    dist = {}
    for name, unit in SUMMARY_LABELS:
        v = lab[name].astype(float)
        q = np.percentile(v, [0, 5, 50, 95, 100])
        dist[name] = {"unit": unit, "mean": float(v.mean()), "std": float(v.std())} | {
            k: float(x) for k, x in zip(("min", "p5", "median", "p95", "max"), q, strict=True)
        }
    info["labels"] = dist
    ds.close()
    return info


def write_gallery(root: str | Path, png: str | Path, n: int = 24) -> Path:
    """A PNG of ``n`` stamps spanning the focus range, titled with their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plato_sim.io.store import ShardedDataset

    ds = ShardedDataset(root)
    dz = ds.label_column("dz_from_best_um")
    order = np.argsort(dz, kind="stable")
    pick = order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)]
    cols = 6
    rows = math.ceil(len(pick) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), pick, strict=False):
        stamp, lab = ds[int(i)]
        ax.imshow(np.arcsinh(stamp / max(1.0, float(np.std(stamp[:4])) + 1.0)), origin="lower")
        ax.set_title(
            f"dz {float(lab['dz_from_best_um']):+.0f} um\n"
            f"th {float(lab['theta_deg']):.1f} F {float(lab['flux_e']):.1e}",
            fontsize=7,
        )
    fig.suptitle(f"{Path(root).name}: {len(ds)} samples (asinh stretch, e-)", fontsize=9)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    ds.close()
    return png
