"""Pieces every benchmark shares: the machine it ran on, error statistics, Markdown, JSON.

Each benchmark is runnable as ``python -m benchmarks.<name>`` and as
``python benchmarks/<name>.py``; the second form puts ``benchmarks/`` (not the repository root)
on ``sys.path``, so each benchmark puts the repository root there first::

    if __package__ in (None, ""):  # run as a script
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks._common import machine_info
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> tuple[float | None, float | None]:
    """Total and available RAM in GB (None where unknown)."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return vm.total / 1e9, vm.available / 1e9
    except ImportError:
        pass
    vals: dict[str, float] = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                key, rest = line.split(":", 1)
                vals[key] = float(rest.split()[0]) * 1024  # kB -> bytes
    except (OSError, ValueError):
        return None, None
    tot, avail = vals.get("MemTotal"), vals.get("MemAvailable")
    return (tot / 1e9 if tot else None), (avail / 1e9 if avail else None)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_commit() -> str | None:
    """Short commit hash of the repository, ``+dirty`` if tracked files are modified."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info(**extra: Any) -> dict:
    """The machine a benchmark ran on: CPU model, cores, load, RAM, versions, commit, CUDA.

    ``extra`` entries (e.g. library versions only one benchmark uses) are added as given.
    """
    import torch

    total_gb, avail_gb = _ram_gb()
    cuda = bool(torch.cuda.is_available())
    info = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "ram_total_GB": None if total_gb is None else round(total_gb, 1),
        "ram_available_GB": None if avail_gb is None else round(avail_gb, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "cuda": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }
    info.update(extra)
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One human line for a :func:`machine_info` dict."""
    load = info.get("load_avg_1_5_15") or info.get("loadavg_before") or []
    versions = ", ".join(
        f"{k} {info[k]}" for k in ("torch", "numpy", "python") if info.get(k) is not None
    )
    cores = info.get("cpu_count") or info.get("cpus")
    parts = [
        info.get("cpu_model"),
        f"{cores} cores" if cores else None,
        f"load {'/'.join(f'{x:.1f}' for x in load)}" if load else None,
        f"{info['ram_total_GB']:.0f} GB RAM" if info.get("ram_total_GB") else None,
        (f"CUDA: {info.get('cuda_device')}" if info["cuda"] else "no CUDA")
        if "cuda" in info
        else None,
        versions or None,
        f"commit {info.get('git_commit')}" if info.get("git_commit") else None,
    ]
    return "; ".join(p for p in parts if p)


# ---------------------------------------------------------------- statistics
#: resamples and seed of :func:`rms_spread` (fixed: a result is the same on every run)
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 2000, 0


def rms_spread(err: np.ndarray) -> float | None:
    """Standard deviation of the RMS of ``err`` over resamplings of its cameras (bootstrap,
    :data:`BOOTSTRAP_RESAMPLES` draws with replacement, seeded): how much the RMS of a row
    would move with another set of as many cameras of the same population.  ``None`` for
    fewer than 2 cameras.  Units of ``err``."""
    e = np.asarray(err, dtype=float)
    if e.size < 2:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, e.size, (BOOTSTRAP_RESAMPLES, e.size))
    return float(np.std(np.sqrt(np.mean(e[idx] ** 2, axis=1))))


def error_stats(
    estimate: Sequence[float] | np.ndarray,
    sigma: Sequence[float] | np.ndarray,
    truth: Sequence[float] | np.ndarray,
) -> dict:
    """Statistics of one estimator over cameras; non-finite estimates are failures.

    Returns ``n_cameras`` (finite estimates), ``rms_error_degC``, ``rms_error_sd_degC`` (the
    spread of that RMS over cameras: :func:`rms_spread`), ``bias_degC`` (mean of estimate -
    truth), ``max_abs_error_degC``, ``median_sigma_degC``, ``frac_within_sigma`` (fraction
    with |error| <= sigma: the coverage of the 1-sigma claim) and ``frac_within_sigma_sd``
    (its binomial standard deviation, ``sqrt(f (1 - f) / n)``: with 50 cameras a coverage is
    known to about 6-7 points); ``None`` where no estimate is finite.  Units are those of the
    inputs (degC for the BFT benchmarks).
    """
    est = np.asarray(estimate, dtype=float)
    sig = np.asarray(sigma, dtype=float)
    tru = np.asarray(truth, dtype=float)
    if not est.shape == sig.shape == tru.shape:
        raise ValueError(f"shapes differ: {est.shape}, {sig.shape}, {tru.shape}")
    ok = np.isfinite(est)
    err = est[ok] - tru[ok]
    if not err.size:
        return dict(
            n_cameras=0,
            rms_error_degC=None,
            rms_error_sd_degC=None,
            bias_degC=None,
            max_abs_error_degC=None,
            median_sigma_degC=None,
            frac_within_sigma=None,
            frac_within_sigma_sd=None,
        )
    cover = float(np.mean(np.abs(err) <= sig[ok]))
    return dict(
        n_cameras=int(ok.sum()),
        rms_error_degC=float(np.sqrt(np.mean(err**2))),
        rms_error_sd_degC=rms_spread(err),
        bias_degC=float(np.mean(err)),
        max_abs_error_degC=float(np.max(np.abs(err))),
        median_sigma_degC=float(np.median(sig[ok])),
        frac_within_sigma=cover,
        frac_within_sigma_sd=float(np.sqrt(cover * (1.0 - cover) / err.size)),
    )


def row_stats(results: Sequence[Mapping[str, Any]], truth: Sequence[float]) -> dict:
    """:func:`error_stats` of one benchmark row (per camera a result with ``bft`` and
    ``sigma``, or ``error`` when it failed) plus ``failures`` and ``first_failure``."""
    fails = [r["error"] for r in results if "error" in r]
    st = error_stats([r.get("bft", np.nan) for r in results],
                     [r.get("sigma", np.nan) for r in results], truth)  # fmt: skip
    return st | dict(failures=len(fails), first_failure=fails[0] if fails else None)


# ---------------------------------------------------------------- Markdown
Column = tuple[str, str, "str | Callable[[Any], str]"]


def fmt_value(v: Any, spec: str | Callable[[Any], str] = "") -> str:
    """A table cell: ``-`` for None/NaN, else ``format(v, spec)`` or ``spec(v)``."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if callable(spec):
        return spec(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x, spec) for x in v)
    s = format(v, spec) if spec else str(v)
    return s.replace("|", "\\|")


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A Markdown table; ``columns`` are ``(key, header, format spec or function)``."""
    head = "| " + " | ".join(h.replace("|", "\\|") for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(fmt_value(r.get(k), f) for k, _, f in columns) + " |")
    return "\n".join(lines)


def percent(v: float) -> str:
    """A fraction as a whole percentage."""
    return f"{100.0 * v:.0f} %"


# ---------------------------------------------------------------- JSON, options
def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def repo_relative(obj: Any) -> Any:
    """``obj`` with every string that is an absolute path inside the repository (a command
    line's script, a default input, a head's folder) made relative to the repository's root,
    at any depth of dicts, lists and tuples: a result records where its inputs lie in the
    repository, not on the machine that measured it."""
    if isinstance(obj, dict):
        return {k: repo_relative(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [repo_relative(v) for v in obj]
    if isinstance(obj, (str, Path)) and os.path.isabs(obj):
        try:
            return Path(obj).relative_to(REPO_ROOT).as_posix()
        except ValueError:  # outside the repository: kept as given
            return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy scalars and arrays converted, paths inside the
    repository made relative to it: :func:`repo_relative`); make the folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(repo_relative(obj), indent=1, default=_jsonable)
    p.write_text(text + "\n", encoding="utf-8")
    return p


def parse_with_quick(
    ap: argparse.ArgumentParser, argv: list[str] | None, quick: Mapping[str, Any]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, ``quick`` replaces the defaults (explicit options win).

    Adds the ``--quick`` flag to ``ap`` if it has none.
    """
    if not any("--quick" in a.option_strings for a in ap._actions):
        ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    args = ap.parse_args(argv)
    if args.quick:
        unknown = set(quick) - set(vars(args))
        if unknown:
            raise ValueError(f"quick defaults for unknown options: {sorted(unknown)}")
        ap.set_defaults(**quick)
        args = ap.parse_args(argv)
    return args


def report(result: Mapping[str, Any], table_md: str, json_path: str | None) -> None:
    """Print a benchmark's Markdown table and machine; write ``result`` to ``json_path``."""
    print(table_md)
    print(f"machine: {machine_line(result['machine'])}")
    if json_path:
        write_json(json_path, result)
        print(f"wrote {json_path}")


def script_argv() -> list[str]:
    """The command line as run, for the JSON record."""
    return [Path(sys.executable).name, *sys.argv]
