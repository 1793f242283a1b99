"""Run every benchmark, write ``results/*.json`` and ``results/summary.md``.

    python -m benchmarks [--quick] [--only NAME ...] [--results DIR] [--update-readme]

Each benchmark of :data:`REGISTRY` runs in its own subprocess
(``python -m benchmarks.<name> [args] --json DIR/tmp/<name>.json``), so one failure does not
stop the others.  A benchmark that succeeds has its JSON moved to ``DIR/<name>.json`` with a
``run`` record added (exact command, date, wall time, exit status); one that fails gets a
``DIR/<name>.json`` holding only the ``run`` record and the tail of its stderr.  Its stdout and
stderr are kept in ``DIR/tmp/<name>.log`` / ``.err`` (git-ignored); ``DIR/runner.json`` records
the last complete run of the runner itself (``DIR/runner_only.json`` the last ``--only``
run).  A benchmark whose module does not exist (yet) is listed as not available.

The summary is rebuilt from every ``DIR/<name>.json`` present, so ``--only`` updates one
section and keeps the others (each section names the command and date that made it).  It
starts with the accuracy table, classical vs CNN vs the Cramer-Rao bound, assembled from the
``cnn_bft``, ``classical_bft`` and ``limits`` results.  Each section's tables come from the
benchmark module's ``markdown(result) -> str`` when it has one, otherwise from a generic
rendering of the JSON's ``rows`` (list of dicts) or of its top-level numbers.

``--quick`` writes under ``results/quick`` unless ``--results`` is given; ``--update-readme``
replaces the part of README.md between ``<!-- results:begin -->`` and ``<!-- results:end -->``
with the summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/__main__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import (  # noqa: E402
    REPO_ROOT,
    machine_info,
    machine_line,
    markdown_table,
    percent,
    repo_relative,
    write_json,
)

README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
#: wall-time budgets of the whole run, seconds
BUDGET_S = {True: 15 * 60, False: 2 * 3600}


@dataclass(frozen=True)
class Benchmark:
    """One entry of the runner: ``python -m <module> <args> --json OUT``."""

    name: str
    title: str
    quick_args: tuple[str, ...] = ("--quick",)
    full_args: tuple[str, ...] = ()
    #: expected wall time on the project's 2-core machine (s), quick and full: the measured
    #: times of clean-clone runs (results/quick/runner.json, results/runner.json),
    #: rounded up
    expected_quick_s: float = 60.0
    expected_full_s: float = 600.0
    notes: str = ""
    #: run without ``--only`` (False: only when named, e.g. the GPU check)
    in_default: bool = True
    #: the module under ``benchmarks/`` when it is not ``name`` (one module run twice, e.g.
    #: in and out of family with other arguments)
    module_name: str = ""

    @property
    def module(self) -> str:
        return f"benchmarks.{self.module_name or self.name}"

    def available(self) -> bool:
        """Whether the benchmark's module exists (without importing it)."""
        return importlib.util.find_spec(self.module) is not None

    def command(self, quick: bool, json_path: str) -> list[str]:
        args = self.quick_args if quick else self.full_args
        return [sys.executable, "-m", self.module, *args, "--json", json_path]


#: In run order: cnn_bft reuses the campaigns classical_bft emulated (same seed, same cache).
REGISTRY: tuple[Benchmark, ...] = (
    Benchmark(
        "psf_engines",
        "PSF engines: agreement, speed, memory",
        expected_quick_s=90,
        expected_full_s=300,
    ),
    Benchmark(
        "generate",
        "Synthetic dataset generation: speed, size, memory, label accuracy",
        expected_quick_s=60,
        expected_full_s=180,
    ),
    Benchmark(
        "classical_bft",
        "Classical best-focus estimators on emulated cameras",
        expected_quick_s=60,
        expected_full_s=600,
        notes="emulated campaigns are cached in out/classical_bft_cache (reused when present)",
    ),
    Benchmark(
        "cnn_bft",
        "CNN best-focus estimate against the classical one, same cameras",
        expected_quick_s=30,
        expected_full_s=240,
        notes="runs on classical_bft's cached campaigns (same seed and sizes)",
    ),
    Benchmark(
        "forward_bft",
        "Forward-model fit: accuracy with 5/3/2/1 plateaux, 10,000-frame timing",
        quick_args=("--quick", "--skip-timing", "--subsets", "5"),
        expected_quick_s=300,
        expected_full_s=9000,
        notes="runs on classical_bft's cached campaigns (same seed and sizes); the full run "
        "(50 cameras x 4 plateau subsets, ~2 CPU-hours, and the 10,000-frame timing) is longer "
        "than the runner's budget on 2 cores",
    ),
    Benchmark(
        "out_of_family",
        "Every estimator in family and out of family (nodal cameras, random test designs)",
        quick_args=("--quick", "--skip-forward"),
        expected_quick_s=600,
        expected_full_s=7200,
        notes="out-of-family cameras cached in out/out_of_family_cache; the quick run leaves the "
        "forward method out (4 + 4 cameras with it took 70 min on the loaded 2-core machine); "
        "the full run includes it",
    ),
    Benchmark(
        "finetune_transfer",
        "CNN fine-tuned with physics labels on 4 cameras of an unseen family, scored on others",
        expected_quick_s=900,
        expected_full_s=3600,
        notes="nodal cameras cached in out/out_of_family_cache (the out_of_family ones are the "
        "scored ones); forward fits of the fine-tuning cameras kept next to them",
    ),
    Benchmark(
        "field_head_transfer",
        "Field head fine-tuned on cameras like 4 forward-fitted ones of an unseen family",
        expected_quick_s=120,
        expected_full_s=1000,
        notes="nodal cameras cached in out/out_of_family_cache (the out_of_family ones are the "
        "scored ones); the variants' campaigns and the tuned head kept under "
        "out/field_head_transfer",
    ),
    Benchmark(
        "field_head_ceiling",
        "Field head fine-tuned on 4-48 true cameras of an unseen family (a diagnostic)",
        expected_quick_s=90,
        expected_full_s=900,
        notes="the fine-tuning cameras' through-focus campaigns and the tuned heads kept under "
        "out/field_head_ceiling; scored on the out_of_family bench's nodal cameras",
    ),
    Benchmark(
        "recheck",
        "Re-check of a known camera: offset correction from its first campaign, later campaign",
        expected_quick_s=600,
        expected_full_s=2400,
        notes="nodal cameras cached in out/out_of_family_cache with their later campaigns; "
        "fine-tuned models and results kept under out/recheck (a rerun resumes); the forward "
        "comparison rows (--forward-plateaux 1,2) take ~20 min more",
    ),
    Benchmark(
        "truth_convergence",
        "T_BF against the sub-pixel grid of its definition (4x4 .. 24x24)",
        quick_args=("--quick", "--workers", "1"),
        expected_quick_s=120,
        expected_full_s=900,
        notes="runs on classical_bft's cached campaigns (their truth sidecars)",
    ),
    Benchmark(
        "read_memory",
        "Peak memory of reading a large campaign cube",
        expected_quick_s=60,
        expected_full_s=400,
    ),
    Benchmark(
        "domain_shift",
        "CNN on cameras unlike its training set, before and after fine-tuning",
        expected_quick_s=60,
        expected_full_s=600,
    ),
    Benchmark(
        "limits",
        "Cramer-Rao bound on T_BF",
        expected_quick_s=90,
        expected_full_s=900,
    ),
    Benchmark(
        "inorbit",
        "In-orbit focus check",
        expected_quick_s=40,
        expected_full_s=300,
    ),
    Benchmark(
        "inorbit_highorder",
        "In-orbit focus check out of family (high-order cameras the network never saw)",
        quick_args=("--quick", "--family", "highorder"),
        full_args=("--family", "highorder"),
        expected_quick_s=60,
        expected_full_s=300,
        module_name="inorbit",
    ),
    Benchmark(
        "inorbit_ground",
        "In-orbit focus check corrected by each camera's own ground test (design cameras)",
        expected_quick_s=150,
        expected_full_s=1200,
        notes="the ground campaigns and their forward reports kept under out/inorbit_ground "
        "(a rerun reads them: ~5 min)",
    ),
    Benchmark(
        "inorbit_ground_highorder",
        "In-orbit focus check corrected by each camera's own ground test (high-order cameras)",
        quick_args=("--quick", "--family", "highorder"),
        full_args=("--family", "highorder"),
        expected_quick_s=600,
        expected_full_s=3000,
        module_name="inorbit_ground",
        notes="the ground campaigns and their forward reports kept under out/inorbit_ground "
        "(a rerun reads them: ~5 min)",
    ),
    Benchmark(
        "inorbit_ground_nodal",
        "In-orbit focus check corrected by each camera's own ground test (nodal cameras, "
        "seen by no training or calibration)",
        quick_args=("--quick", "--family", "nodal"),
        full_args=("--family", "nodal"),
        expected_quick_s=200,
        expected_full_s=900,
        module_name="inorbit_ground",
        notes="the ground campaigns and their forward reports kept under out/inorbit_ground "
        "(a rerun reads them: ~2 min)",
    ),
    Benchmark(
        "inorbit_ground_calibration_highorder_mild",
        "Outside-model term of the ground-corrected check (mild high-order calibration cameras)",
        quick_args=("--quick", "--family", "highorder-mild", "--calibrate"),
        full_args=("--family", "highorder-mild", "--calibrate"),
        expected_quick_s=200,
        expected_full_s=1200,
        module_name="inorbit_ground",
        notes="seeds 1000-1007; prints GROUND_OUTSIDE_MODEL_UM (ground fits kept under "
        "out/inorbit_ground)",
    ),
    Benchmark(
        "memory",
        "Peak memory of generating and pretraining on a dataset streamed from disk",
        expected_quick_s=60,
        expected_full_s=900,
    ),
    Benchmark(
        "gpu_check",
        "GPU check: fast engine and a FocusNet epoch, CUDA against CPU",
        expected_quick_s=60,
        expected_full_s=300,
        notes="not part of the default run: `python -m benchmarks --only gpu_check` on a GPU",
        in_default=False,
    ),
)
BY_NAME = {b.name: b for b in REGISTRY}


# ---------------------------------------------------------------- running
def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(path: Path, n_lines: int = 25) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n_lines:])


def _shown_path(p: Path) -> str:
    """``p`` relative to the repository root when it lies inside it (:func:`repo_relative`)."""
    return repo_relative(Path(p).resolve())


def _shown_command(cmd: list[str]) -> str:
    """The command as a user would type it from the repository root."""
    shown = ["python", *cmd[1:]]
    return shlex.join(shown)


def run_one(b: Benchmark, quick: bool, results: Path, log=print) -> dict:
    """Run one benchmark in a subprocess; write ``results/<name>.json``; return its run record."""
    tmp = results / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tmp_json = tmp / f"{b.name}.json"
    tmp_json.unlink(missing_ok=True)
    final = results / f"{b.name}.json"
    cmd = b.command(quick, str(tmp_json))
    shown = _shown_command(b.command(quick, _shown_path(final)))
    run: dict[str, Any] = dict(
        name=b.name,
        command=shown,
        quick=quick,
        started_utc=_utc_now(),
        expected_s=b.expected_quick_s if quick else b.expected_full_s,
    )
    out_log, err_log = tmp / f"{b.name}.log", tmp / f"{b.name}.err"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(out_log, "w", encoding="utf-8") as fo, open(err_log, "w", encoding="utf-8") as fe:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=fo, stderr=fe, env=env)
    run["wall_s"] = time.perf_counter() - t0
    run["returncode"] = proc.returncode
    run["log"] = _shown_path(out_log)
    result: dict[str, Any] | None = None
    if proc.returncode == 0:
        try:
            result = json.loads(tmp_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            run["error"] = f"exit 0 but no readable JSON ({type(exc).__name__}: {exc})"
    else:
        run["error"] = f"exit status {proc.returncode}"
    run["ok"] = result is not None
    if not run["ok"]:
        run["stderr_tail"] = _tail(err_log) or _tail(out_log)
        result = {}
    result["run"] = run
    write_json(final, result)
    tmp_json.unlink(missing_ok=True)
    return run


# ---------------------------------------------------------------- summary
def _generic_markdown(result: dict) -> str:
    rows = result.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        keys: list[str] = []
        for r in rows:
            for k, v in r.items():
                if k not in keys and (v is None or isinstance(v, (int, float, str, bool))):
                    keys.append(k)
        return markdown_table(rows, [(k, k, _num) for k in keys])
    scalars = [
        dict(q=k, v=v)
        for k, v in result.items()
        if k != "run" and isinstance(v, (int, float, str, bool)) and not isinstance(v, dict)
    ]
    return markdown_table(scalars, [("q", "quantity", ""), ("v", "value", _num)])


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def result_markdown(name: str, result: dict) -> str:
    """A result's tables: the module's ``markdown(result)``, else the generic rendering."""
    try:
        mod = importlib.import_module(f"benchmarks.{name}")
        render = getattr(mod, "markdown", None)
        if callable(render):
            return render(result)
    except Exception as exc:  # a module that cannot be imported any more: generic tables
        return f"({name}: module not importable, {type(exc).__name__}: {exc})\n\n" + (
            _generic_markdown(result)
        )
    return _generic_markdown(result)


def _bound_key(row: dict) -> str | None:
    """The bound column of a ``limits`` row: a number whose key has 'bound' and ends _degC."""
    keys = [
        k
        for k, v in row.items()
        if "bound" in k and k.endswith("_degC") and isinstance(v, (int, float))
    ]
    for pref in ("rms", "median", ""):
        for k in keys:
            if pref in k:
                return k
    return None


def bounds_by_plateaux(limits: dict | None) -> dict[int, float]:
    """T_BF bound (degC) per number of plateaux from a ``limits`` result's ``rows``."""
    out: dict[int, float] = {}
    for row in (limits or {}).get("rows", []) or []:
        if not isinstance(row, dict) or "plateaux" not in row:
            continue
        k = _bound_key(row)
        if k is not None and int(row["plateaux"]) not in out:
            out[int(row["plateaux"])] = float(row[k])
    return out


def accuracy_table(results: dict[str, dict]) -> str | None:
    """Classical vs CNN vs bound for 5/3/2/1 plateaux, from the stored results (or None)."""
    cnn = results.get("cnn_bft") or {}
    cla = results.get("classical_bft") or {}
    src = cnn if cnn.get("rows") else cla
    if not src.get("rows"):
        return None
    bounds = bounds_by_plateaux(results.get("limits"))
    rows = []
    for r in src["rows"]:
        n = int(r.get("plateaux", -1))
        if n not in (5, 3, 2, 1, 0):
            continue
        row = dict(r)
        b = bounds.get(n)
        row["bound_degC"] = b
        rms = r.get("rms_error_degC")
        row["ratio"] = rms / b if (b and rms is not None) else None
        rows.append(row)
    rows.sort(key=lambda r: (-int(r["plateaux"]),))
    cols = [
        ("plateaux", "plateaux", "d"),
        ("estimator", "estimator", ""),
        ("rms_error_degC", "RMS error (degC)", ".2f"),
        ("bias_degC", "bias (degC)", "+.2f"),
        ("frac_within_sigma", "|error| <= sigma", percent),
    ]
    if bounds:
        cols += [("bound_degC", "Cramer-Rao bound (degC)", ".2g")]
        cols += [("ratio", "error / bound", lambda v: f"{v:.2f}" if v < 10 else f"{v:,.0f}")]
    which = "cnn_bft" if src is cnn else "classical_bft"
    cfg = src.get("config", {})
    text = (
        f"From `{which}` ({len(src.get('per_camera', []))} emulated cameras, "
        f"{cfg.get('fields')} fields x {cfg.get('dithers')} dithers x {cfg.get('frames')} "
        f"frames)"
    )
    if bounds:
        text += (
            " and `limits` (bound on T_BF for the same campaign design). An error / bound "
            "ratio below 1 means the estimator leans on its prior (on the thermal slope, the "
            "aberrations of the camera population or T_BF itself), not on the images alone"
        )
    else:
        text += "; no `limits` result yet, so no bound column"
    return text + ".\n\n" + markdown_table(rows, cols)


def load_results(results: Path) -> dict[str, dict]:
    """Every ``results/<name>.json`` of a registered benchmark."""
    out = {}
    for b in REGISTRY:
        p = results / f"{b.name}.json"
        if p.is_file():
            try:
                out[b.name] = json.loads(p.read_text(encoding="utf-8"))
            except ValueError as exc:
                out[b.name] = {"run": {"ok": False, "error": f"unreadable {p}: {exc}"}}
    return out


def _budget(runner: dict) -> str:
    budget = BUDGET_S[bool(runner["quick"])]
    met = "met" if runner["wall_s"] <= budget else "NOT met"
    return f" in all (budget {budget / 60:.0f} min: {met})"


def render_summary(
    results: Path, level: int = 1, runner: dict | None = None, title: bool = True
) -> str:
    """The Markdown summary of the results folder: a ``level`` title, sections one below."""
    h = "#" * level
    res = load_results(results)
    lines = [f"{h} Benchmark results", ""] if title else []
    if runner:
        lines += [
            f"Last run: `{runner['command']}` on {runner['finished_utc']}, "
            f"{runner['wall_s'] / 60:.1f} min"
            + ("" if runner.get("only") else _budget(runner))
            + f"; machine: {machine_line(runner['machine'])}.",
            "",
        ]
    lines += [
        f"Every table below is generated from `{_shown_path(results)}/*.json` by "
        "`python -m benchmarks` (`--quick` for small sizes); each section names the command "
        "and the machine that made it. The development machine is shared with other jobs: "
        "timings carry the load average they ran under.",
        "",
    ]
    acc = accuracy_table(res)
    if acc:
        lines += [f"{h}# Accuracy: classical vs CNN vs bound", "", acc, ""]
    for b in REGISTRY:
        r = res.get(b.name)
        if r is None and not b.in_default:
            continue
        lines += [f"{h}# `{b.name}`: {b.title}", ""]
        if r is None:
            if b.available():
                lines += [f"Not run yet (`python -m benchmarks --only {b.name}`).", ""]
            else:
                lines += [f"Not available (module `{b.module}` not present).", ""]
            continue
        run = r.get("run", {})
        if not run.get("ok", True):
            lines += [
                f"**Failed** (`{run.get('command', '?')}`, {run.get('started_utc', '?')}): "
                f"{run.get('error', '')}. Last lines of its output:",
                "",
                "```text",
                run.get("stderr_tail", ""),
                "```",
                "",
            ]
            continue
        mach = r.get("machine")
        meta = [f"`{run['command']}`" if run.get("command") else "command not recorded"]
        if run.get("started_utc"):
            meta.append(f"{run['started_utc']}")
        if run.get("wall_s") is not None:
            meta.append(f"{run['wall_s']:.0f} s")
        lines += [", ".join(meta) + ("." if not mach else f"; {machine_line(mach)}."), ""]
        if b.notes:
            lines += [f"Note: {b.notes}.", ""]
        lines += [result_markdown(b.module_name or b.name, r), ""]
    return "\n".join(lines).rstrip() + "\n"


def update_readme(readme: Path, body: str) -> None:
    """Replace the README part between the results markers with ``body``."""
    text = readme.read_text(encoding="utf-8")
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        raise SystemExit(f"{readme}: markers {README_BEGIN} ... {README_END} not found")
    new = text[: i + len(README_BEGIN)] + "\n" + body.rstrip() + "\n" + text[j:]
    readme.write_text(new, encoding="utf-8")


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, write the results and the summary; 1 if one failed."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 15 min on 2 cores)")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=list(BY_NAME), default=None)
    ap.add_argument("--results", default=None, help="results folder (results or results/quick)")
    ap.add_argument("--update-readme", action="store_true", help="put the summary into README.md")
    ap.add_argument("--summary-only", action="store_true", help="rebuild the summary, run nothing")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)

    if args.list:
        for b in REGISTRY:
            state = "available" if b.available() else "not available"
            state += "" if b.in_default else " (--only)"
            print(
                f"{b.name:14s} {state:24s} ~{b.expected_quick_s / 60:.0f} min quick, "
                f"~{b.expected_full_s / 60:.0f} min full  {b.title}"
            )
        return 0
    default_dir = REPO_ROOT / ("results/quick" if args.quick else "results")
    results = Path(args.results).resolve() if args.results else default_dir
    results.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"machine: {machine_line(machine)}", flush=True)

    runner: dict | None = None
    failures = 0
    if not args.summary_only:
        default = [b for b in REGISTRY if b.in_default]
        chosen = [BY_NAME[n] for n in args.only] if args.only else default
        t0 = time.perf_counter()
        for k, b in enumerate(chosen, 1):
            head = f"[{k}/{len(chosen)}] {b.name}"
            if not b.available():
                print(f"{head}: not available (no module {b.module})", flush=True)
                continue
            exp = b.expected_quick_s if args.quick else b.expected_full_s
            print(f"{head}: running (expected ~{exp / 60:.0f} min) ...", flush=True)
            run = run_one(b, args.quick, results)
            if run["ok"]:
                print(f"{head}: done in {run['wall_s']:.0f} s", flush=True)
            else:
                failures += 1
                print(f"{head}: FAILED ({run['error']}); stderr tail:", flush=True)
                print(run.get("stderr_tail", ""), flush=True)
        shown = ["python -m benchmarks"]
        shown += ["--quick"] if args.quick else []
        shown += ["--only", *args.only] if args.only else []
        runner = dict(
            command=" ".join(shown),
            quick=args.quick,
            only=args.only,
            finished_utc=_utc_now(),
            wall_s=time.perf_counter() - t0,
            machine=machine,
        )
        # runner.json describes the last complete run (the budgets apply to it); a partial
        # run is recorded apart, and each benchmark's JSON carries its own command and time
        write_json(results / ("runner_only.json" if args.only else "runner.json"), runner)
        if args.only and (results / "runner.json").is_file():
            runner = json.loads((results / "runner.json").read_text(encoding="utf-8"))
    elif (results / "runner.json").is_file():
        runner = json.loads((results / "runner.json").read_text(encoding="utf-8"))

    summary = render_summary(results, level=1, runner=runner)
    (results / "summary.md").write_text(summary, encoding="utf-8")
    print(f"wrote {results / 'summary.md'}")
    if args.update_readme:
        update_readme(REPO_ROOT / "README.md", render_summary(results, 2, runner, title=False))
        print("updated README.md (results section)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
