"""GPU check: fast-engine stamps/s and one short FocusNet epoch, CUDA against CPU.

On every device available (``cpu``, and ``cuda`` when torch sees one):

1. **PSF engine** (:class:`plato_sim.psf.FastEngine`, float32, ``fov_px`` 16): polychromatic
   (10-wavelength OGSE spectrum) 32x32 stamps, ``--offsets`` sub-pixel offsets per optical
   state (the dataset generator's regime: one OTF, many dithers), ``--states`` random states
   (field position, thermal focal shift); best of ``--repeats`` runs after a warm-up.  Stamps
   per second and optical states per second.  On CUDA the stamps of the first states are also
   compared with the CPU's (largest pixel difference, as a fraction of the stamp's flux).
2. **Training** (:func:`plato_cnn.pipelines.pretrain.pretrain`): one epoch of ``--steps`` steps of
   ``--batch`` samples (AdamW, augmentation, bf16 autocast on CUDA, as ``plato-cnn pretrain``)
   on stamps made by the engine, after a 2-step warm-up run; the epoch's wall time includes
   the validation pass and the checkpoint.  Training samples per second.

Then the CUDA / CPU ratios.  Without CUDA it says so and still measures the CPU (the ratios
are then absent).  Torch uses its default number of CPU threads unless ``--cpu-threads`` says
otherwise (on a machine shared with other jobs, 1 thread can be several times faster than
2: OpenMP threads wait for each other); the number is recorded with the CPU rows.

    python benchmarks/gpu_check.py [--quick] [--json OUT]      # or: benchmarks/gpu_check.sh
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: python benchmarks/gpu_check.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    parse_with_quick,
    report,
)
from plato_cnn.nn.data import ArrayFocusDataset  # noqa: E402
from plato_cnn.pipelines.pretrain import TrainConfig, pretrain  # noqa: E402
from plato_sim.optics.model import OpticalModel  # noqa: E402
from plato_sim.optics.spectra import ogse_spectrum  # noqa: E402
from plato_sim.psf import FastEngine  # noqa: E402

STAMP_PX = 32
#: Optical states per FFT batch: the CPU default (cache-friendly); a GPU wants large batches.
CHUNK = {"cpu": 4, "cuda": 256}
QUICK = {"states": 16, "offsets": 4, "repeats": 1, "steps": 3, "batch": 32}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_requests(n_states: int, n_offsets: int, seed: int):
    """Zernikes ``(B, 10, J)`` of random states, their spectrum, offsets ``(B, K, 2)`` and dz."""
    optics = OpticalModel()
    sp = ogse_spectrum(optics.camera, 10)
    rng = np.random.default_rng(seed)
    theta = optics.camera.field_radius_deg * np.sqrt(rng.uniform(size=n_states))
    phi = rng.uniform(0.0, 360.0, n_states)
    dz_um = rng.uniform(-150.0, 150.0, n_states)
    z = optics.zernikes_nm(theta, phi, dz_um, sp.wavelengths_array_nm)
    offsets = rng.uniform(-0.5, 0.5, size=(n_states, n_offsets, 2))
    return z, sp, offsets, theta, phi, dz_um


def render(engine: FastEngine, z, sp, offsets) -> torch.Tensor:
    """All stamps ``(B, K, S, S)`` on the engine's device, ``chunk`` states per batch."""
    out = []
    with torch.no_grad():
        for s in range(0, z.shape[0], engine.chunk):
            e = slice(s, s + engine.chunk)
            out.append(engine.stamps_from_otf(engine.otf(z[e], sp), sp, offsets[e], STAMP_PX))
    return torch.cat(out)


def time_engine(device: str, z, sp, offsets, repeats: int) -> tuple[dict, np.ndarray]:
    """Stamps/s of the fast engine on ``device``; also returns the stamps (numpy)."""
    engine = FastEngine(device=device, chunk=CHUNK[device.split(":")[0]])
    render(engine, z[: engine.chunk], sp, offsets[: engine.chunk])  # grids, plans, kernels
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        stamps = render(engine, z, sp, offsets)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    n_states, n_off = offsets.shape[:2]
    row = {
        "device": device,
        "cpu_threads": torch.get_num_threads() if device == "cpu" else None,
        "states": n_states,
        "offsets_per_state": n_off,
        "chunk": engine.chunk,
        "best_s": best,
        "stamps_per_s": n_states * n_off / best,
        "states_per_s": n_states / best,
    }
    return row, stamps.cpu().numpy()


def training_data(stamps: np.ndarray, theta, phi, dz_um, n: int) -> ArrayFocusDataset:
    """``n`` samples from the engine's stamps (tiled if needed); 8 groups for the split.

    Stamps are scaled to 1e5 e- (the network normalises each by its sum anyway).
    """
    b, k = stamps.shape[:2]
    flat = stamps.reshape(b * k, STAMP_PX, STAMP_PX).astype(np.float32) * 1e5
    idx = np.arange(n) % (b * k)
    state = idx // k
    return ArrayFocusDataset(flat[idx], theta[state], phi[state], dz_um[state], idx % 8)


def time_training(device: str, data: ArrayFocusDataset, steps: int, batch: int) -> dict:
    """Wall time of one ``steps``-step epoch of :func:`plato_cnn.pipelines.pretrain.pretrain`."""
    with tempfile.TemporaryDirectory() as tmp:
        warm = TrainConfig(epochs=1, batch_size=batch, max_steps_per_epoch=2, max_val_samples=batch)
        pretrain(data, Path(tmp) / "warm", warm, device=device, progress=False)
        cfg = TrainConfig(
            epochs=1, batch_size=batch, max_steps_per_epoch=steps, max_val_samples=4 * batch
        )
        _sync(device)
        t0 = time.perf_counter()
        summary = pretrain(data, Path(tmp) / "run", cfg, device=device, progress=False)
        _sync(device)
        wall = time.perf_counter() - t0
    return {
        "device": device,
        "cpu_threads": torch.get_num_threads() if device == "cpu" else None,
        "steps": steps,
        "batch": batch,
        "epoch_wall_s": wall,
        "samples_per_s": steps * batch / wall,
        "val_loss": summary["best_val_loss"],
    }


def run(args: argparse.Namespace, log) -> dict:
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    cuda = torch.cuda.is_available()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    result: dict = {
        "quick": args.quick,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "engine": [],
        "training": [],
    }
    log(f"CUDA: {result['gpu']}" if cuda else "CUDA: not available (CPU figures only)")
    z, sp, offsets, theta, phi, dz_um = engine_requests(args.states, args.offsets, args.seed)
    stamps = {}
    for dev in devices:
        row, stamps[dev] = time_engine(dev, z, sp, offsets, args.repeats)
        result["engine"].append(row)
        log(f"engine {dev}: {row['stamps_per_s']:.0f} stamps/s")
    if cuda:
        flux = stamps["cpu"].sum(axis=(-1, -2), keepdims=True)
        diff = np.abs(stamps["cuda"] - stamps["cpu"]) / flux
        result["engine_cuda_vs_cpu_max_pixel_frac"] = float(diff.max())
    n_train = max(args.steps * args.batch * 2, 8 * args.batch)  # train + held-out groups
    data = training_data(stamps["cpu"], theta, phi, dz_um, n_train)
    for dev in devices:
        row = time_training(dev, data, args.steps, args.batch)
        result["training"].append(row)
        log(f"training {dev}: {row['samples_per_s']:.0f} samples/s")
    if cuda:
        e = {r["device"]: r for r in result["engine"]}
        t = {r["device"]: r for r in result["training"]}
        result["ratios_cuda_over_cpu"] = {
            "engine_stamps_per_s": e["cuda"]["stamps_per_s"] / e["cpu"]["stamps_per_s"],
            "training_samples_per_s": t["cuda"]["samples_per_s"] / t["cpu"]["samples_per_s"],
        }
    return result


def markdown(result: dict) -> str:
    """The engine and training tables, and the ratios."""
    eng = markdown_table(
        result["engine"],
        [
            ("device", "device", ""),
            ("cpu_threads", "CPU threads", "d"),
            ("states", "optical states", "d"),
            ("offsets_per_state", "offsets / state", "d"),
            ("chunk", "states / batch", "d"),
            ("stamps_per_s", "stamps/s", ",.0f"),
            ("states_per_s", "states/s", ",.1f"),
        ],
    )
    tr = markdown_table(
        result["training"],
        [
            ("device", "device", ""),
            ("cpu_threads", "CPU threads", "d"),
            ("steps", "steps", "d"),
            ("batch", "batch", "d"),
            ("epoch_wall_s", "epoch wall (s)", ".2f"),
            ("samples_per_s", "samples/s", ",.0f"),
        ],
    )
    lines = [
        "Fast PSF engine, 10-wavelength 32x32 stamps (float32, fov 16 px):",
        "",
        eng,
        "",
        "FocusNet, one short epoch (plato_cnn.pipelines.pretrain.pretrain, validation included):",
        "",
        tr,
        "",
    ]
    r = result.get("ratios_cuda_over_cpu")
    if r:
        lines.append(
            f"CUDA / CPU: engine {r['engine_stamps_per_s']:.1f}x, "
            f"training {r['training_samples_per_s']:.1f}x; CUDA stamps differ from the CPU's "
            f"by at most {result['engine_cuda_vs_cpu_max_pixel_frac']:.1e} of the flux "
            f"({result['gpu']})."
        )
    else:
        lines.append("CUDA / CPU: no CUDA device on this machine, no ratio.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the check, print the tables and the machine, optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (~30 s CPU)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--states", type=int, default=512, help="optical states (engine)")
    ap.add_argument("--offsets", type=int, default=16, help="sub-pixel offsets per state")
    ap.add_argument("--repeats", type=int, default=3, help="engine runs, the best counts")
    ap.add_argument("--steps", type=int, default=32, help="training steps in the epoch")
    ap.add_argument("--batch", type=int, default=256, help="training batch size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parse_with_quick(ap, argv, QUICK)
    t0 = time.perf_counter()
    result = run(args, lambda m: print(m, flush=True))
    result["wall_s"] = time.perf_counter() - t0
    result["machine"] = machine_info()
    print()
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
