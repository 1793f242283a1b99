"""Reports: what every estimate returns, as JSON and as plots, in one place.

JSON.  :func:`campaign_report` wraps a method's result (:func:`eef_result`, :func:`cnn_result`
or the forward fit's) in the envelope every method shares: camera, campaign, method, frame
counts and drops, warnings, and the provenance (package version, command line, UTC time,
schema version).  :func:`write_json` writes it atomically and never writes ``NaN`` or
``Infinity`` (not JSON): a non-finite number becomes ``null`` and its key is listed under
``null_reasons`` with why.

Plots.  Every plot function draws into ``ax`` when given one (a :class:`matplotlib.axes.Axes`)
and otherwise makes its own :class:`matplotlib.figure.Figure` without pyplot, so the caller's
backend is never switched; it returns the figure.  :func:`save_figure` writes it atomically.
The plots share one style (:func:`_style`): TRP1 in degC on x, the camera name in the title,
the estimate as a red line with its 1-sigma band, and a caveat when the fit had no degree of
freedom left.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np

from plato_sim._version import __version__
from plato_sim.errors import ParameterError
from plato_sim.io.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_PATH",
    "report_schema",
    "eef_result",
    "cnn_result",
    "campaign_report",
    "provenance",
    "input_checksum",
    "jsonable",
    "write_json",
    "check_output_path",
    "plot_eef_bft",
    "plot_cnn_bft",
    "plot_forward_bft",
    "save_figure",
]

#: version of the JSON report's layout (bumped when a key changes meaning or goes away)
SCHEMA_VERSION = "1"
#: the JSON Schema of the report, shipped with the package
SCHEMA_PATH = Path(__file__).parent / "data" / "report.schema.json"


# ----------------------------------------------------------------------------- JSON
def eef_result(r) -> dict:
    """The method part of a report from a classical :class:`plato_cnn.classical.BFTResult`."""
    return {
        "fit": r.fit,
        "eef_variant": r.variant,
        "bft_degC": r.bft_degC,
        "sigma_degC": r.sigma_degC,
        "obsids": r.obsids,
        "frames_used": r.frames_used,
        "plateaux_degC": r.temperatures_degC,
        "mean_eef": r.mean_eef,
        "std_eef": r.std_eef,
        "n_fields": r.n_fields,
        "at_edge": r.at_edge,
        "warnings": list(r.warnings),
        "details": r.extra,
    }


def cnn_result(fit, info: dict, obsids: list[int], s_prior: tuple[float, float] | None) -> dict:
    """The method part of a report from :func:`plato_cnn.predict.cnn_bft`'s ``(fit, info)``."""
    return {
        "fit": "thermal-model",
        "bft_degC": fit.bft_degC,
        "sigma_degC": fit.sigma_degC,
        "obsids": sorted({int(o) for o in obsids}),
        "frames_used": info["frames_used"],
        "sign_ambiguous": fit.sign_ambiguous,
        "s_um_per_degC": fit.s_um_per_degC,
        "s_sigma_um_per_degC": fit.s_sigma_um_per_degC,
        "s_measured": fit.s_measured,
        "s_prior_um_per_degC": list(s_prior) if s_prior else None,
        "plateau_head_correction_um": info["plateau_head_correction_um"],
        "offset_correction": info.get("offset_correction"),
        "recheck": info.get("recheck"),
        "n_plateaux": fit.n_plateaux,
        "template_shift_degC": fit.template_shift_degC,
        "p_behind_mean": fit.p_behind_mean,
        "model": info["model"],
        "model_version": info["model_version"],
        "thermal_residual": info["thermal_residual"],
        # the thermal-model fit's residual check, or the re-check's low sensitivity
        "outside_model": bool(
            info["thermal_residual"]["outside"] or (info.get("recheck") or {}).get("outside_model")
        ),
        "warnings": list(fit.warnings),
    }


def campaign_report(frames, campaign_dir: str | Path, method: str, result: dict) -> dict:
    """The shared envelope around one method's ``result`` for one campaign."""
    drops = dict(frames.drops.frames)
    for k, v in frames.excluded_counts().items():
        drops[k] = drops.get(k, 0) + v
    return {
        "schema_version": SCHEMA_VERSION,
        "camera": frames.camera,
        "site": frames.site,
        "campaign": str(Path(campaign_dir).resolve()),
        "method": method,
        **result,
        "frames_read": len(frames),
        "frames_dropped": int(sum(drops.values())),
        "drops": drops,
        "warnings": frames.drops.warnings + result.get("warnings", []),
        "unstable_obsids": [o.obsid for o in frames.observations if o.unstable],
        "provenance": {**provenance(), "input_checksum": input_checksum(campaign_dir)},
    }


def report_schema() -> dict:
    """The JSON Schema every report follows (shipped as ``plato_cnn/data/report.schema.json``)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def provenance() -> dict:
    """Package version, command line and UTC time of the run that made a report."""
    return {
        "package_version": __version__,
        "command_line": list(sys.argv),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def input_checksum(folder: str | Path) -> dict:
    """What identifies an input folder: its regular files, their bytes and one SHA-256.

    The digest covers every regular file below ``folder`` (relative path and contents, in
    sorted order), so two reports of the same bytes carry the same digest whatever the folder
    is called or where it lies.  Links and special files are not followed.
    """
    root = Path(folder)
    h = hashlib.sha256()
    n_files = n_bytes = 0
    for p in sorted(root.rglob("*")):
        try:
            st = p.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
        n_files += 1
        n_bytes += st.st_size
    return {"sha256": h.hexdigest(), "files": n_files, "bytes": n_bytes}


def jsonable(obj: Any, path: str = "", nulls: dict | None = None) -> Any:
    """``obj`` with numpy types made plain and non-finite numbers made ``None``.

    Each replaced number's key path is recorded in ``nulls`` (path -> reason).
    """
    if isinstance(obj, dict):
        return {
            str(k): jsonable(v, f"{path}.{k}" if path else str(k), nulls) for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [jsonable(v, f"{path}[{i}]", nulls) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), path, nulls)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        x = float(obj)
        if not math.isfinite(x):
            if nulls is not None:
                nulls[path] = f"not a finite number ({x})"
            return None
        return x
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_output_path(path: str | Path, inputs: list[str | Path] = ()) -> Path:
    """Refuse an output path that is a folder, lies in a missing folder or inside an input."""
    p = Path(path)
    if p.is_dir():
        raise ParameterError(f"{p}: is a folder; give a file name for the output")
    if not p.parent.is_dir():
        raise ParameterError(f"{p}: its folder {p.parent} does not exist")
    refuse_inside_inputs(p, inputs)
    return p


def refuse_inside_inputs(path: str | Path, inputs: list[str | Path] = ()) -> None:
    """Refuse an output (file or folder) that is, or lies inside, one of ``inputs``."""
    rp = Path(path).resolve()
    for i in inputs:
        ri = Path(i).resolve()
        if rp == ri or ri in rp.parents:
            raise ParameterError(f"{path}: lies inside the input {i}; outputs never go into inputs")


def write_json(path: str | Path, report: dict) -> Path:
    """Write ``report`` as JSON atomically, ``null`` (with ``null_reasons``) for non-finite."""
    nulls: dict[str, str] = {}
    clean = jsonable(report, nulls=nulls)
    if nulls:
        clean["null_reasons"] = {**clean.get("null_reasons", {}), **nulls}
    text = json.dumps(clean, indent=1, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


# ----------------------------------------------------------------------------- plots
def _axes(ax, figsize=(7.0, 4.5)):
    """``(figure, axes)``: the caller's axes, or a new pyplot-free figure."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def _style(ax, camera: str, what: str, bft: float, sigma: float, caveat: str | None) -> None:
    """The look every BFT plot shares: the estimate, its band, labels, title, caveat."""
    ax.axvline(bft, color="tab:red", label=f"T_BF = {bft:.2f} ± {sigma:.2f} °C (1 σ)")
    if math.isfinite(sigma):
        ax.axvspan(bft - sigma, bft + sigma, color="tab:red", alpha=0.15)
    ax.set_xlabel("TRP1 temperature (°C)")
    ax.set_title(f"{camera}: best-focus temperature, {what}", fontsize=10)
    if caveat:
        ax.text(0.01, 0.01, caveat, transform=ax.transAxes, fontsize=7, color="tab:red")
    ax.legend(fontsize=7, loc="best")


def plot_eef_bft(frames, eef_values: np.ndarray, result, ax=None):
    """EEF against TRP1 per field position (thin lines), the field mean, the fit and the BFT.

    Error bars: standard error of the field mean (std over field positions / sqrt(n)).
    """
    from plato_cnn.classical import eef_table, min_plateaux

    fig, ax = _axes(ax)
    reducer = result.extra.get("reducer", "max")
    keep = np.isin(frames.obsid, result.obsids)
    table = eef_table(frames.select(keep), eef_values[keep], reducer)
    order = np.argsort(table.temperature_degC)
    for f in range(table.values.shape[1]):
        ax.plot(table.temperature_degC[order], table.values[order, f], "-", color="0.75", lw=0.6)
    ax.errorbar(
        result.temperatures_degC,
        result.mean_eef,
        yerr=np.asarray(result.std_eef) / np.sqrt(np.maximum(result.n_fields, 1)),
        fmt="o",
        color="k",
        label=f"{reducer} EEF over frames, mean over {max(result.n_fields)} fields (± s.e.)",
    )
    ax.plot(result.curve_t_degC, result.curve_eef, "-", color="C0", label=f"{result.fit} fit")
    ax.set_ylabel(f"EEF ({result.variant})")
    dof = len(result.temperatures_degC) - min_plateaux(result.fit)
    caveat = "fit has no degree of freedom left: sigma is not measured" if dof <= 0 else None
    _style(ax, frames.camera, f"EEF ({result.fit})", result.bft_degC, result.sigma_degC, caveat)
    return fig


def plot_cnn_bft(frames, fit, mu_um: np.ndarray, ax=None):
    """Per-frame CNN offsets against TRP1 (points), the per-field thermal model, T_BF."""
    fig, ax = _axes(ax)
    t = frames.temperature_degC
    ax.plot(t, mu_um, ".", ms=2, color="tab:blue", alpha=0.4, label="frames (CNN offset)")
    grid = np.linspace(t.min() - 1, t.max() + 1, 50)
    for t_f in fit.t_field_degC[np.isfinite(fit.t_field_degC)]:
        ax.plot(grid, fit.s_um_per_degC * (grid - t_f), "-", color="0.7", lw=0.5)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_ylabel("offset from the field's best focus (µm)")
    s = f"s = {fit.s_um_per_degC:.2f} ± {fit.s_sigma_um_per_degC:.2f} µm/°C"
    what = f"CNN, {s}" + ("" if fit.s_measured else " (prior)")
    caveat = None if fit.s_measured else "one plateau: s is the prior's, not measured"
    _style(ax, frames.camera, what, fit.bft_degC, fit.sigma_degC, caveat)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically."""
    path = Path(path)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return atomic_write_bytes(path, buf.getvalue())


def plot_forward_bft(report: dict, frames, ax=None, n_fields_shown: int = 3):
    """EEF against TRP1 (model curve and each plateau's measured mean EEF), and data / model /
    residual stamps of a few fields.  Returns the :class:`matplotlib.figure.Figure`; does not
    change the matplotlib backend (``ax``: draw the EEF panel there, no stamp panels)."""
    from matplotlib.figure import Figure

    from plato_cnn.metrics import frame_eef

    if ax is not None:
        fig = ax.figure
        axes_stamps = None
    else:
        fig = Figure(figsize=(10, 3.2 + 1.9 * n_fields_shown))
        gs = fig.add_gridspec(1 + n_fields_shown, 3, height_ratios=[2.2] + [1] * n_fields_shown)
        ax = fig.add_subplot(gs[0, :])
        axes_stamps = [
            [fig.add_subplot(gs[1 + r, c]) for c in range(3)] for r in range(n_fields_shown)
        ]
    curve = report["eef_curve"]
    order = np.argsort(curve["temperature_degC"])
    tt = np.asarray(curve["temperature_degC"])[order]
    ax.plot(tt, np.asarray(curve["eef"])[order], "-", color="tab:blue",
            label="model: field-mean expected EEF")  # fmt: skip
    use = frames.usable & np.isin(frames.obsid, report["obsids"])
    e = frame_eef(frames.stamps[use])
    for ob in report["obsids"]:
        m = frames.obsid[use] == ob
        if not np.any(m):
            continue
        t = float(np.mean(frames.temperature_degC[use][m]))
        ax.errorbar(t, float(np.nanmean(e[m])), yerr=float(np.nanstd(e[m]) / math.sqrt(m.sum())),
                    fmt="o", color="k", ms=4)  # fmt: skip
    ax.plot([], [], "ok", ms=4, label="plateau mean measured EEF (frames)")
    t_bf, s_bf = report["bft_degC"], report["sigma_degC"]
    ax.axvline(t_bf, color="tab:red", label=f"T_BF = {t_bf:.2f} ± {s_bf:.2f} °C")
    ax.axvspan(t_bf - s_bf, t_bf + s_bf, color="tab:red", alpha=0.15)
    ax.set_xlabel("TRP1 temperature (°C)")
    ax.set_ylabel("EEF")
    chi = report["chi2"]["reduced"]
    ax.set_title(
        f"forward-model fit, χ²_red = {chi:.2f}"
        + (" (outside model!)" if report["outside_model"] else "")
        + (" (beyond calibration)" if report.get("beyond_calibration") else "")
    )
    ax.legend(loc="best", fontsize=8)
    if axes_stamps is not None:
        for r, row in enumerate(axes_stamps):
            if r >= len(report.get("examples", [])):
                for a in row:
                    a.set_axis_off()
                continue
            ex = report["examples"][r]
            d, mdl = np.asarray(ex["data_e"]), np.asarray(ex["model_e"])
            title = f"field {ex['field_id']}, OBSID {ex['obsid']}"
            vmax = float(np.max(d))
            for a, img, lab in zip(
                row, (d, mdl, d - mdl), ("data", "model", "residual"), strict=True
            ):
                if lab == "residual":
                    lim = float(np.max(np.abs(img))) or 1.0
                    im = a.imshow(img, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
                else:
                    im = a.imshow(img, origin="lower", cmap="viridis", vmin=0, vmax=vmax)
                a.set_title(f"{title}: {lab} (e-)", fontsize=7)
                a.set_xticks([])
                a.set_yticks([])
                fig.colorbar(im, ax=a, fraction=0.046)
    fig.tight_layout()
    return fig
