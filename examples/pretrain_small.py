"""Pretrain a small FocusNet on a small synthetic dataset (a few minutes on 2 CPU cores).

Runs from a fresh install with no arguments and writes under ``out/examples/pretrain_small/``:

* ``dataset/``: synthetic stamps with their labels in HDF5 shards
  (:func:`plato_sim.generate.generate`; ``--samples`` samples of ``--cameras`` random cameras);
* ``model/``: the trained model directory (``model.json``, ``model.safetensors``, ``log.csv``),
  usable as ``plato-cnn bft CAMPAIGN --method cnn --model out/examples/pretrain_small/model``;
* ``loss.png``: training and validation loss and the validation RMSE of the focal offset per
  epoch; ``summary.json``: sizes, timings and the final validation figures.

The network is smaller than the shipped one (channels ``--channels``, default 8,16,32) and sees
far fewer samples (8,192 against 65,536), so expect a validation RMSE of several tens of um,
not the shipped model's 19 um: this shows the procedure, the shipped model is the product.
The EEF template a model directory carries (the nominal design's field-averaged EEF against
focus offset, used by the BFT fit) is copied from the shipped model, which was made from the
same nominal design, to save its ~1 min computation.

Options: ``--out DIR``, ``--samples N``, ``--cameras N``, ``--epochs N``, ``--channels C1,C2,C3``,
``--workers N``, ``--seed S``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def _copy_shipped_template(model_dir: Path) -> None:
    """Seed ``model_dir/eef_template.json`` (read by pretraining) from the shipped model."""
    from plato_cnn.nn.card import default_model_dir

    desc = json.loads((default_model_dir() / "model.json").read_text(encoding="utf-8"))
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "eef_template.json").write_text(json.dumps(desc["eef_template"]))


def plot_losses(log_csv: Path, png: Path) -> Path:
    """Training / validation loss and validation RMSE (um) per epoch from a ``log.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    log = np.genfromtxt(log_csv, delimiter=",", names=True)
    log = np.atleast_1d(log)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.plot(log["epoch"], log["train_loss"], "o-", label="training")
    a1.plot(log["epoch"], log["val_loss"], "s-", label="validation (held-out cameras)")
    a1.set_xlabel("epoch")
    a1.set_ylabel("Gaussian NLL loss")
    a1.legend()
    a2.plot(log["epoch"], log["val_rmse_um"], "s-", color="C1")
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation RMSE of the focal offset (um)")
    fig.suptitle(f"pretraining a small FocusNet ({log_csv.parent})", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    """Generate the dataset, pretrain, plot; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/examples/pretrain_small", help="output folder")
    ap.add_argument("--samples", type=int, default=8192, help="synthetic samples")
    ap.add_argument("--cameras", type=int, default=6, help="random cameras of the dataset")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--channels", default="8,16,32", help="channels of the 3 network stages")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=None, help="generation workers (all cores)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)

    from plato_cnn.nn.model import FocusNetConfig
    from plato_cnn.pipelines.pretrain import TrainConfig, pretrain_from_dataset
    from plato_sim.generate import generate
    from plato_sim.scenes.sampling import load_config

    out = Path(args.out)
    data, model_dir = out / "dataset", out / "model"
    for d in (data, model_dir):  # a fresh run every time (generation and training resume)
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.time()
    per_shard = min(4096, args.samples)
    cfg = load_config(
        overrides={
            "cameras": {"n_pool": args.cameras},
            "shards": {"samples_per_shard": per_shard},
        }
    )
    print(
        f"[1/3] generating {args.samples} synthetic stamps of {args.cameras} random cameras "
        f"-> {data}",
        flush=True,
    )
    man = generate(data, cfg, n=args.samples, seed=args.seed, workers=args.workers)
    t_gen = time.time() - t0
    print(f"      done in {t_gen:.0f} s", flush=True)

    channels = tuple(int(c) for c in args.channels.split(","))
    tcfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, patience=args.epochs
    )
    print(
        f"[2/3] pretraining FocusNet (channels {channels}) for {args.epochs} epochs -> {model_dir}",
        flush=True,
    )
    _copy_shipped_template(model_dir)
    t1 = time.time()
    summary = pretrain_from_dataset(
        data, model_dir, tcfg, FocusNetConfig(channels=channels), device="cpu", progress=True
    )
    t_train = time.time() - t1

    print("[3/3] plotting the loss curves", flush=True)
    png = plot_losses(model_dir / "log.csv", out / "loss.png")
    report = dict(
        samples=args.samples,
        cameras=args.cameras,
        dataset_bytes=sum((data / s["file"]).stat().st_size for s in man["shards"]),
        generation_s=t_gen,
        training_s=t_train,
        channels=list(channels),
        train_config=dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed),
        pretrain_summary=summary,
    )
    (out / "summary.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    rmse = summary["best_val_rmse_um"]
    print(
        f"\nvalidation RMSE of the focal offset: {rmse:.1f} um; generation {t_gen:.0f} s, "
        f"training {t_train:.0f} s"
    )
    print(f"model: {model_dir}; figure: {png}; summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
