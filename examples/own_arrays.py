"""Every estimator on your own stamps, from plain arrays: no campaign folder needed.

A test house that keeps its frames in its own layout does not have to write format v1 to use
the estimators: :meth:`plato_cnn.reader.CampaignFrames.from_arrays` builds the frames from

* ``stamps``: ``(N, S, S)`` background-subtracted star stamps, **electrons**, the pixel nearest
  the star's centroid at ``(S // 2, S // 2)``, in the CCD's pixel axes (``plato_sim.stamps``
  cuts them so from a window: :func:`plato_sim.stamps.extract_stamp`);
* ``temperatures_degC``: ``(N,)`` TRP1 at each frame (degC);
* ``theta_deg``, ``phi_deg``: ``(N,)`` field position of each frame (deg, ``docs/facts.md``);
* optionally ``timestamps`` (s), ``obsids`` (one per plateau), ``ccd``, ``row``, ``col``.

Here the arrays come from an emulated campaign, read and then handed over as plain numpy
arrays, standing in for a test house's own export. Then the test houses' cubic, the improved
classical fit, the CNN and the forward-model fit run on them, and each writes the project's
JSON report. To write your data as a campaign folder (for ``plato-cnn bft``), follow
``docs/campaign-format.md``; ``plato_sim.io.campaign_format`` has the writers.

    python examples/own_arrays.py [--out out/own_arrays] [--skip-forward]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from plato_cnn.classical import estimate_bft
from plato_cnn.forward import forward_bft
from plato_cnn.predict import cnn_bft
from plato_cnn.reader import CampaignFrames, read_campaign
from plato_cnn.report import cnn_result, eef_result, write_json
from plato_sim.scenes.ground_test import emulate_or_load


def your_arrays(out: Path) -> tuple[dict, float]:
    """A stand-in for a test house's own export: plain arrays (and the true T_BF, degC)."""
    truth = emulate_or_load(
        out / "stand_in_campaign", camera_name="mycam", bft_degC=-79.2, seed=11,
        n_fields=8, n_dithers=3, frames_per_dither=1, window_px=48,
    )  # fmt: skip
    fr = read_campaign(out / "stand_in_campaign")
    fr = fr.select(fr.usable)
    arrays = {
        "stamps": np.asarray(fr.stamps),
        "temperatures_degC": np.asarray(fr.temperature_degC),
        "theta_deg": np.asarray(fr.field_theta_deg),
        "phi_deg": np.asarray(fr.field_phi_deg),
        "timestamps": np.asarray(fr.time_s),
        "ccd": np.asarray(fr.ccd),
    }
    return arrays, float(truth["bft_degC"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/own_arrays", help="output folder")
    ap.add_argument("--skip-forward", action="store_true", help="leave out the forward fit")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    arrays, t_true = your_arrays(out)
    frames = CampaignFrames.from_arrays(
        arrays["stamps"], arrays["temperatures_degC"], arrays["theta_deg"], arrays["phi_deg"],
        timestamps=arrays["timestamps"], ccd=arrays["ccd"], camera="mycam",
    )  # fmt: skip
    results = {
        "cubic": eef_result(estimate_bft(frames, "cubic")),
        "gauss": eef_result(estimate_bft(frames, "gauss", n_boot=100)),
    }
    fit, info = cnn_bft(frames, n_boot=100)
    results["cnn"] = cnn_result(fit, info, frames.obsid.tolist(), None)
    if not args.skip_forward:
        fw = forward_bft(frames, n_wavelengths=5, n_wavelengths_jacobian=3, n_sub=4, max_iter=8)
        results["forward"] = {k: v for k, v in fw.items() if not k.startswith("_")}
    print(f"true T_BF {t_true:.2f} degC")
    for name, r in results.items():
        write_json(out / f"{name}.json", r)
        err = r["bft_degC"] - t_true
        print(f"{name:8s} {r['bft_degC']:8.2f} +- {r['sigma_degC']:.2f} degC  error {err:+.2f}")
    (out / "truth.json").write_text(json.dumps({"bft_degC": t_true}) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
