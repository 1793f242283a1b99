"""Many campaigns in one call: one report each, a summary table, local processes or Dask.

A test house with 26 cameras runs ``plato-cnn bft DIR1 DIR2 ... --out-dir OUT``: each
campaign gets ``OUT/<folder>.json`` (the same report as a single run) and a line of
``OUT/summary.csv``.  A campaign that fails (unreadable, too few plateaux, ...) does not stop
the others: its line says why and its report is not written.  Campaigns run in ``workers``
local processes (``spawn``, one thread each) or on a Dask cluster (``scheduler`` address).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from plato_sim.errors import ParameterError
from plato_sim.io.atomic import atomic_write_text
from plato_sim.workers import map_jobs

log = logging.getLogger(__name__)

__all__ = ["SUMMARY_COLUMNS", "report_names", "run_campaigns", "write_summary"]

#: columns of ``summary.csv`` (temperatures in degC)
SUMMARY_COLUMNS = (
    "campaign",
    "camera",
    "method",
    "bft_degC",
    "sigma_degC",
    "n_plateaux",
    "frames_used",
    "frames_dropped",
    "warnings",
    "report",
    "error",
)


def report_names(campaign_dirs: Sequence[str | Path]) -> list[str]:
    """Report file names in the output folder: each campaign folder's name + ``.json``.

    Folders of the same name (``a/camp``, ``b/camp``) get ``camp.json``, ``camp-2.json``, ...
    in the order given, so that no report overwrites another.
    """
    seen: dict[str, int] = {}
    out = []
    for d in campaign_dirs:
        stem = Path(d).resolve().name
        seen[stem] = seen.get(stem, 0) + 1
        out.append(f"{stem}.json" if seen[stem] == 1 else f"{stem}-{seen[stem]}.json")
    return out


def run_campaigns(
    func: Callable[[Any], dict],
    jobs: Sequence[Any],
    workers: int = 1,
    scheduler: str | None = None,
) -> list[dict]:
    """``[func(job) for job in jobs]`` over local processes or a Dask cluster, in order.

    ``func`` must be a module-level function returning a summary row (a dict with the keys
    of :data:`SUMMARY_COLUMNS`) and must catch the project's errors itself, so that one bad
    campaign does not stop the others.
    """
    if workers < 1:
        raise ParameterError(f"workers must be >= 1, got {workers}")
    if scheduler is None:
        return map_jobs(func, jobs, workers, desc="bft: campaigns")
    from distributed import Client

    log.info("sending %d campaigns to the Dask scheduler %s", len(jobs), scheduler)
    with Client(scheduler, timeout="30s") as client:
        return client.gather(client.map(func, list(jobs), pure=False))


def write_summary(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write the summary table (CSV, one line per campaign) atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SUMMARY_COLUMNS})
    return atomic_write_text(path, buf.getvalue())
