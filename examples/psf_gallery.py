"""PSF gallery: stamps against TRP1 temperature and field angle, and EEF against temperature.

Writes two PNG files (matplotlib, Agg backend) under ``--out`` (default ``out/gallery/``):

* ``stamps_vs_temperature.png``: a grid of polychromatic (OGSE, 10 wavelengths) stamps, rows
  = TRP1 temperatures, columns = field angles, for the nominal camera whose best-focus
  temperature is placed at ``--bft-degC`` (default -80 degC) with ``bestfocus.t0_for_best_focus``;
* ``eef_vs_temperature.png``: the expected EEF (sub-pixel averaged, noise-free) against
  temperature for each field angle, and the field average over the 40-position test table,
  whose maximum is T_BF.

    python examples/psf_gallery.py [--out out/gallery] [--engine fast|poppy|galsim]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from plato_sim.optics.model import CameraModel  # noqa: E402
from plato_sim.optics.spectra import ogse_spectrum  # noqa: E402
from plato_sim.psf import FastEngine, get_engine  # noqa: E402
from plato_sim.psf.render import psf_stamp  # noqa: E402
from plato_sim.scenes.fields import ground_test_fields  # noqa: E402
from plato_sim.truth.bestfocus import expected_eef, t0_for_best_focus  # noqa: E402
from plato_sim.truth.eef import eef  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Render the gallery; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/gallery", help="output folder")
    ap.add_argument("--engine", default="fast", choices=("fast", "poppy", "galsim"))
    ap.add_argument(
        "--bft-degC",
        "--t-bf",  # the older spelling, still accepted
        dest="bft_degC",
        type=float,
        default=-80.0,
        help="best-focus temperature (degC)",
    )
    ap.add_argument("--temps", default="-92,-88,-84,-80,-76,-72,-68", help="rows (degC)")
    ap.add_argument("--fields", default="0,4.5,9,13.5,18", help="columns, theta (deg)")
    ap.add_argument("--phi-deg", type=float, default=45.0, help="field azimuth (deg)")
    ap.add_argument("--size", type=int, default=16, help="stamp side shown (pixels)")
    ap.add_argument("--t-step", type=float, default=1.0, help="EEF curve step (degC)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    temps = [float(v) for v in args.temps.split(",")]
    fields = [float(v) for v in args.fields.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fast = FastEngine()
    model, bf = t0_for_best_focus(CameraModel(), args.bft_degC, engine=fast)
    print(
        f"camera: s = {model.thermal.s_um_per_degC:.1f} um/degC, T0 = "
        f"{model.thermal.t0_degC:.2f} degC, T_BF = {bf.bft_degC:.2f} degC "
        f"(dz_th at best focus {bf.dz_th_um:+.1f} um, field-mean EEF {bf.eef_max:.3f})"
    )
    optics = model.optics
    sp = ogse_spectrum(optics.camera, 10)
    engine = fast if args.engine == "fast" else get_engine(args.engine, camera=optics.camera)

    # ---- stamp grid
    fig, axes = plt.subplots(
        len(temps), len(fields), figsize=(1.9 * len(fields) + 0.6, 1.9 * len(temps) + 0.6)
    )
    axes = np.atleast_2d(axes)
    for i, t in enumerate(temps):
        dz_th = float(model.thermal.focal_shift_um(t))
        for j, th in enumerate(fields):
            st = psf_stamp(engine, optics, th, args.phi_deg, dz_th, (0.0, 0.0), sp, args.size)
            ax = axes[i, j]
            ax.imshow(st, origin="lower", cmap="magma", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(
                0.03, 0.97, f"EEF {eef(st):.2f}", transform=ax.transAxes, color="w",
                fontsize=7, va="top",
            )  # fmt: skip
            if i == 0:
                ax.set_title(f"theta = {th:g} deg", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{t:g} degC\ndz_th {dz_th:+.0f} um", fontsize=8)
    fig.suptitle(
        f"{args.engine} engine, OGSE 10 wavelengths, phi = {args.phi_deg:g} deg, star on a pixel "
        f"centre; T_BF = {bf.bft_degC:.1f} degC",
        fontsize=9,
    )
    fig.tight_layout()
    p1 = out / "stamps_vs_temperature.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)
    print(f"wrote {p1}  ({len(temps)} temperatures x {len(fields)} field angles)")

    # ---- expected EEF against temperature
    t_grid = np.arange(min(temps) - 3.0, max(temps) + 3.0 + 1e-9, args.t_step)
    dz_grid = model.thermal.focal_shift_um(t_grid)
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for th in fields:
        e = expected_eef(optics, th, args.phi_deg, dz_grid, sp, fast)
        ax.plot(t_grid, e, label=f"theta = {th:g} deg")
    ft, fp = ground_test_fields()
    e_all = expected_eef(optics, ft[:, None], fp[:, None], dz_grid[None, :], sp, fast)
    ax.plot(t_grid, e_all.mean(axis=0), "k", lw=2.2, label="mean over the 40 test positions")
    ax.axvline(bf.bft_degC, color="k", ls=":", lw=1)
    ax.axhline(0.77, color="grey", ls="--", lw=0.8, label="PLT-CAM-872: 0.77")
    ax.set_xlabel("TRP1 temperature (degC)")
    ax.set_ylabel("expected EEF (2x2 / 10x10, sub-pixel averaged)")
    ax.set_title(f"EEF vs temperature, phi = {args.phi_deg:g} deg; T_BF = {bf.bft_degC:.2f} degC")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p2 = out / "eef_vs_temperature.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    print(f"wrote {p2}  ({t_grid.size} temperatures, {len(fields)} field angles + field mean)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
