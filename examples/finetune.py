"""Fine-tune the shipped CNN on campaigns of cameras unlike its training set; compare before/after.

Runs from a fresh install with no arguments (about 5 minutes on 2 CPU cores) and writes under
``out/examples/finetune/``:

* ``campaigns/``: small emulated ground-test campaigns (format v1, 5 plateaux) of
  ``--train-cameras + --test-cameras`` cameras, each with its ``.truth.json`` beside it (reused
  when the example is run again with the same sizes);
* ``replay/``: a small synthetic dataset (nominal population, true labels) replayed in every
  fine-tuning epoch, the library's guard against self-training drift (in our runs without it
  the thermal slopes the network implies shrank epoch after epoch; ``--replay-samples 0``);
* ``model/``: the fine-tuned model directory (``finetune.json``: per-epoch loss, and per
  training camera the fitted thermal slope and the offset of the network's field temperatures
  from the EEF-anchored ones, before and after);
* ``errors.png``: T_BF error of each held-out camera for the test houses' cubic, the shipped
  CNN and the fine-tuned CNN; ``finetune.png``: the fine-tuning loss and the network-vs-EEF
  field-temperature offsets; ``results.json``: every number of both figures.

The cameras differ from the pretraining population on purpose (the situation of a real
camera, whose as-built optics are not the model's): the design residuals are changed
(:data:`SHIFTED_DESIGN`: 20 % more astigmatism, 30 % more coma, 20 % less spherical aberration,
50 % more chromatic focal shift than :class:`plato_sim.optics.wavefront.FieldAberrations`), and the
detector has another gain, more read noise and diffuse light (:data:`SHIFTED_DETECTOR`).
Fine-tuning uses only the training cameras' images and TRP1 temperatures (no truth); the
held-out cameras are never seen.  With 3 + 3 small campaigns the before/after difference is
an illustration of the procedure, not a measurement of it (the statistics of a few cameras
are too thin): ``python -m benchmarks.domain_shift`` measures it.

Options: ``--out DIR``, ``--train-cameras N``, ``--test-cameras N``, ``--fields N``,
``--dithers N``, ``--epochs N``, ``--model DIR`` (default: the shipped model),
``--replay-samples N`` or ``--synthetic DIR`` (an existing dataset to replay instead),
``--workers N``, ``--seed S``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from plato_cnn.pipelines.calibrate import TRUTH_RANGE_DEGC
from plato_sim.detector import DetectorModel
from plato_sim.optics.wavefront import FieldAberrations
from plato_sim.truth.bestfocus import TRUTH_N_SUB
from plato_sim.workers import pin_one_thread

#: ASSUMED "as-built" design residuals unlike the pretraining model's (see the docstring).
_NOMINAL = FieldAberrations()
SHIFTED_DESIGN = FieldAberrations(
    astig_nm=1.2 * _NOMINAL.astig_nm,
    coma_nm=1.3 * _NOMINAL.coma_nm,
    spherical0_nm=0.8 * _NOMINAL.spherical0_nm,
    chrom_quad_um=1.5 * _NOMINAL.chrom_quad_um,
)
#: ASSUMED detector settings unlike the nominal CCD270 chain (gain, read noise, diffuse light).
SHIFTED_DETECTOR = DetectorModel(
    gain_e_per_adu=20.0,
    read_noise_ccd_e=1.3 * DetectorModel().read_noise_ccd_e,
    background_e_per_px_s=500.0,
)


def _emulate(job: dict) -> dict:
    """Emulate one campaign (or read back its truth when it already exists)."""
    pin_one_thread()
    from plato_sim.optics.model import CameraModel
    from plato_sim.scenes.ground_test import emulate_or_load

    rng = np.random.default_rng(job["seed"])
    camera = CameraModel.random(rng, job["seed"], strength=1.0, design=SHIFTED_DESIGN)
    return emulate_or_load(
        job["dir"],
        camera_name=job["name"],
        bft_degC=job["bft"],
        n_fields=job["fields"],
        n_dithers=job["dithers"],
        window_px=48,
        seed=job["seed"],
        camera_model=camera,
        detector=SHIFTED_DETECTOR,
        n_sub_truth=TRUTH_N_SUB,
    )


def emulate_all(jobs: list[dict], workers: int) -> list[dict]:
    """Truths of every job's campaign, emulating the missing ones on ``workers`` processes."""
    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    out: list[dict | None] = [None] * len(jobs)
    with ctx.Pool(max(1, workers)) as pool:
        it = pool.imap(_emulate, jobs, chunksize=1)
        for k, tr in enumerate(tqdm(it, total=len(jobs), desc="campaigns", unit="camera")):
            out[k] = tr
    return out  # type: ignore[return-value]


def evaluate(jobs: list[dict], models: dict[str, str | None]) -> list[dict]:
    """Per held-out camera: the test houses' cubic and each model's CNN estimate (degC)."""
    from tqdm import tqdm

    from plato_cnn.classical import estimate_bft
    from plato_cnn.metrics import frame_eef
    from plato_cnn.predict import cnn_bft
    from plato_cnn.reader import read_campaign

    rows = []
    for job in tqdm(jobs, desc="held-out cameras", unit="camera"):
        fr = read_campaign(job["dir"])
        fr = fr.select(fr.usable)
        row = {"camera": job["name"], "truth_degC": job["truth"]}
        r = estimate_bft(fr, "cubic", "2x2", frame_eef(fr.stamps, "2x2"), seed=job["i"])
        row["classical cubic"] = {"bft_degC": r.bft_degC, "sigma_degC": r.sigma_degC}
        for label, model_dir in models.items():
            fit, _ = cnn_bft(fr, model_dir, n_boot=100, seed=job["i"])
            row[label] = {"bft_degC": fit.bft_degC, "sigma_degC": fit.sigma_degC}
        rows.append(row)
    return rows


def rms_errors(rows: list[dict], labels: list[str]) -> dict[str, dict]:
    """RMS error, bias and |error| <= sigma fraction of each estimator over the rows (degC)."""
    out = {}
    for lab in labels:
        err = np.asarray([r[lab]["bft_degC"] - r["truth_degC"] for r in rows])
        sig = np.asarray([r[lab]["sigma_degC"] for r in rows])
        out[lab] = {
            "rms_error_degC": float(np.sqrt(np.mean(err**2))),
            "bias_degC": float(np.mean(err)),
            "frac_within_sigma": float(np.mean(np.abs(err) <= sig)),
        }
    return out


def plot_errors(rows: list[dict], labels: list[str], png: Path) -> Path:
    """T_BF error (estimate - truth, degC) with 1-sigma bars, per camera and estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(rows))
    width = 0.8 / len(labels)
    for k, lab in enumerate(labels):
        err = [r[lab]["bft_degC"] - r["truth_degC"] for r in rows]
        sig = [r[lab]["sigma_degC"] for r in rows]
        ax.errorbar(
            x + (k - (len(labels) - 1) / 2) * width, err, yerr=sig, fmt="o", capsize=3, label=lab
        )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x, [r["camera"] for r in rows])
    ax.set_ylabel("T_BF error (degC), 1-sigma bars")
    ax.set_title("held-out cameras (shifted design and detector)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_finetune(summary: dict, png: Path) -> Path:
    """Fine-tuning loss per epoch, and per camera the network's disagreement with its labels
    before and after (physics labels: RMS in um; EEF labels: mean field offset in degC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    hist = summary["history"]
    a1.plot([h["epoch"] for h in hist], [h["loss"] for h in hist], "o-")
    a1.set_xlabel("epoch")
    a1.set_ylabel("fine-tuning loss (NLL + L2-SP)")
    cams = summary["cameras"]
    x = np.arange(len(cams))
    physics = "net_minus_label_um_rms" in summary["before"][0]
    key_v = "net_minus_label_um_rms" if physics else "net_minus_eef_degC_mean"
    for k, (key, lab) in enumerate((("before", "before"), ("after", "after"))):
        v = [c[key_v] for c in summary[key]]
        a2.bar(x + (k - 0.5) * 0.4, v, 0.4, label=lab)
    a2.axhline(0.0, color="k", lw=0.8)
    a2.set_xticks(x, cams)
    a2.set_ylabel(
        "network - physics label, RMS (um)" if physics else "network - EEF field temperature (degC)"
    )
    a2.legend(fontsize=8)
    fig.suptitle("fine-tuning on the training cameras (temperatures only, no truth)", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def replay_set(args: argparse.Namespace, folder: Path):
    """The synthetic dataset replayed while fine-tuning: ``--synthetic``, or a small new one."""
    from plato_cnn.nn.data import ShardFocusDataset

    if args.synthetic:
        return ShardFocusDataset(args.synthetic)
    if args.replay_samples <= 0:
        return None
    from plato_sim.generate import generate
    from plato_sim.scenes.sampling import load_config

    n_cams = 4
    cfg = load_config(
        overrides={
            "cameras": {"n_pool": n_cams},
            "shards": {"samples_per_shard": min(4096, args.replay_samples)},
        }
    )
    print(
        f"      replay set: {args.replay_samples} synthetic stamps of {n_cams} nominal-population "
        f"cameras -> {folder}",
        flush=True,
    )
    generate(folder, cfg, n=args.replay_samples, seed=args.seed, workers=args.workers)
    return ShardFocusDataset(folder)


def main(argv: list[str] | None = None) -> int:
    """Emulate, fine-tune, evaluate, plot; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/examples/finetune", help="output folder")
    ap.add_argument("--train-cameras", type=int, default=3)
    ap.add_argument("--test-cameras", type=int, default=3)
    ap.add_argument("--fields", type=int, default=20, help="field positions per campaign")
    ap.add_argument("--dithers", type=int, default=3, help="dithers per field position")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    ap.add_argument(
        "--labels", choices=("forward", "eef"), default="forward", help="fine-tuning labels"
    )
    ap.add_argument("--model", default=None, help="base model directory (default: shipped)")
    ap.add_argument("--replay-samples", type=int, default=4096, help="synthetic replay set")
    ap.add_argument("--synthetic", default=None, help="existing dataset to replay instead")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args(argv)
    if args.train_cameras < 1 or args.test_cameras < 1:
        ap.error("--train-cameras and --test-cameras must be >= 1")

    from plato_cnn.nn.card import default_model_dir
    from plato_cnn.pipelines.finetune import FinetuneConfig, finetune
    from plato_cnn.reader import read_campaign

    out = Path(args.out)
    t0 = time.time()
    n = args.train_cameras + args.test_cameras
    bfts = np.random.default_rng(args.seed).uniform(*TRUTH_RANGE_DEGC, n)
    jobs = [
        dict(
            i=i,
            name=f"ft{i:02d}",
            dir=str(out / "campaigns" / f"ft{i:02d}_f{args.fields}_d{args.dithers}_t{TRUTH_N_SUB}"),
            bft=float(bfts[i]),
            seed=args.seed * 100 + i,
            fields=args.fields,
            dithers=args.dithers,
        )
        for i in range(n)
    ]
    print(
        f"[1/4] emulating {n} campaigns ({args.fields} field positions x {args.dithers} "
        f"dithers x 5 plateaux; shifted design and detector) -> {out / 'campaigns'}",
        flush=True,
    )
    for job, tr in zip(jobs, emulate_all(jobs, args.workers), strict=True):
        job["truth"] = float(tr["bft_degC"])
    train, test = jobs[: args.train_cameras], jobs[args.train_cameras :]

    base = str(Path(args.model) if args.model else default_model_dir())
    tuned = out / "model"
    print(
        f"[2/4] fine-tuning {base} on {len(train)} cameras ({args.epochs} epochs) -> {tuned}",
        flush=True,
    )
    frames = []
    for job in train:
        fr = read_campaign(job["dir"])
        frames.append(fr.select(fr.usable))
    synthetic = replay_set(args, out / "replay")
    cfg = FinetuneConfig(epochs=args.epochs, seed=args.seed, labels=args.labels)
    summary = finetune(frames, tuned, base, cfg, synthetic, progress=True)

    print(f"[3/4] estimating T_BF of the {len(test)} held-out cameras", flush=True)
    labels = ["classical cubic", "CNN shipped", "CNN fine-tuned"]
    rows = evaluate(test, {"CNN shipped": base, "CNN fine-tuned": str(tuned)})
    stats = rms_errors(rows, labels)

    print("[4/4] plotting", flush=True)
    figs = [
        plot_errors(rows, labels, out / "errors.png"),
        plot_finetune(summary, out / "finetune.png"),
    ]
    results = dict(
        train_cameras=[j["name"] for j in train],
        test_cameras=rows,
        stats=stats,
        design=SHIFTED_DESIGN.to_dict(),
        detector={
            k: getattr(SHIFTED_DETECTOR, k)
            for k in ("gain_e_per_adu", "read_noise_ccd_e", "background_e_per_px_s")
        },
        finetune=summary,
        wall_s=time.time() - t0,
    )
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nheld-out cameras ({len(test)}): RMS error of T_BF (degC)")
    for lab in labels:
        s = stats[lab]
        print(f"  {lab:16s} {s['rms_error_degC']:.2f}  (bias {s['bias_degC']:+.2f})")
    print(f"figures: {', '.join(map(str, figs))}; numbers: {out / 'results.json'}")
    print(f"({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
