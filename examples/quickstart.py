"""Quickstart: emulate one camera's ground-test campaign, then estimate its best-focus
temperature with the test houses' classical method and with the shipped CNN.

Runs from a fresh install with no arguments (about 2-4 minutes on 2 CPU cores) and writes
under ``out/quickstart/``:

* ``campaign/``: the emulated campaign in the test houses' format (format v1), and
  ``campaign.truth.json`` beside it (the true T_BF; readers never see it);
* ``classical.json``, ``classical.png``: the weighted cubic fit of the field-mean EEF;
* ``cnn.json``, ``cnn.png``: the CNN offsets and the thermal-model fit;
* ``report.json``: truth, both estimates and their errors.

Options: ``--out DIR``, ``--bft-degC T``, ``--seed S``, ``--fields N``, ``--dithers N``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from plato_cnn.cli import main as plato_cnn_main
from plato_sim.scenes.ground_test import emulate_campaign


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/quickstart", help="output folder")
    ap.add_argument("--bft-degC", type=float, default=-78.6, help="true best-focus temperature")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fields", type=int, default=40)
    ap.add_argument("--dithers", type=int, default=10)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    camp = out / "campaign"
    print(
        f"[1/3] emulating a campaign: {args.fields} field positions x {args.dithers} dithers "
        f"x 5 plateaux, true T_BF = {args.bft_degC} degC -> {camp}",
        flush=True,
    )
    truth = emulate_campaign(
        camp,
        camera_name="quickstart",
        bft_degC=args.bft_degC,
        n_fields=args.fields,
        n_dithers=args.dithers,
        seed=args.seed,
        overwrite=True,
    )
    print(f"      done in {time.time() - t0:.0f} s", flush=True)

    print("[2/3] classical estimate (test houses' weighted cubic)", flush=True)
    rc = plato_cnn_main(
        [
            "bft",
            str(camp),
            "--method",
            "eef",
            "--fit",
            "cubic",
            "--json",
            str(out / "classical.json"),
            "--plot",
            str(out / "classical.png"),
        ]
    )
    if rc:
        return rc
    print("[3/3] CNN estimate (shipped model, thermal-model fit)", flush=True)
    rc = plato_cnn_main(
        [
            "bft",
            str(camp),
            "--method",
            "cnn",
            "--json",
            str(out / "cnn.json"),
            "--plot",
            str(out / "cnn.png"),
        ]
    )
    if rc:
        return rc

    cl = json.loads((out / "classical.json").read_text())
    cn = json.loads((out / "cnn.json").read_text())
    t_true = float(truth["bft_degC"])
    report = {
        "true_bft_degC": t_true,
        "classical": {
            "bft_degC": cl["bft_degC"],
            "sigma_degC": cl["sigma_degC"],
            "error_degC": cl["bft_degC"] - t_true,
        },
        "cnn": {
            "bft_degC": cn["bft_degC"],
            "sigma_degC": cn["sigma_degC"],
            "error_degC": cn["bft_degC"] - t_true,
        },
        "wall_s": time.time() - t0,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"\ntrue T_BF {t_true:.2f} degC | classical {cl['bft_degC']:.2f} +- {cl['sigma_degC']:.2f}"
        f" | CNN {cn['bft_degC']:.2f} +- {cn['sigma_degC']:.2f}  ({report['wall_s']:.0f} s)"
    )
    print(f"report: {out / 'report.json'}; figures: {out / 'classical.png'}, {out / 'cnn.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
