"""Worker processes, set up one way: one thread each, a ``spawn`` pool or a plain loop.

Why one thread: several processes each running multi-threaded BLAS or torch would fight over
the cores, and torch's FFTs give the same bits whatever the number of workers only when each
runs single-threaded (the determinism of the synthetic data rests on it).  Why ``spawn``: a
forked child inherits torch's thread pools and locks from the parent, which can deadlock.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ONE_THREAD_ENV", "pin_one_thread", "map_jobs"]

log = logging.getLogger(__name__)

#: environment that keeps the numerical libraries of a worker to one thread
ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def pin_one_thread() -> None:
    """Make the calling worker process single-threaded (BLAS libraries not yet loaded, torch)."""
    for key, value in ONE_THREAD_ENV.items():
        os.environ.setdefault(key, value)
    import torch

    torch.set_num_threads(1)


def _indexed(item: tuple[Callable[[Any], Any], int, Any]) -> tuple[int, Any]:
    func, i, job = item
    return i, func(job)


def map_jobs(
    func: Callable[[Any], Any], jobs: Iterable[Any], workers: int = 1, desc: str | None = None
) -> list:
    """``[func(j) for j in jobs]``, over ``workers`` spawned processes when ``workers > 1``.

    ``func`` must be importable (a module-level function); results keep the jobs' order.
    With ``desc``, each finished job is logged (INFO: ``desc: k/n done, elapsed s``).
    """
    jobs = list(jobs)
    n = len(jobs)
    out: list = [None] * n
    t0 = time.perf_counter()

    def done(k: int) -> None:
        if desc:
            log.info("%s: %d/%d done (%.0f s)", desc, k, n, time.perf_counter() - t0)

    if workers > 1 and n > 1:
        with mp.get_context("spawn").Pool(min(workers, n)) as pool:
            items = [(func, i, j) for i, j in enumerate(jobs)]
            for k, (i, r) in enumerate(pool.imap_unordered(_indexed, items, chunksize=1), 1):
                out[i] = r
                done(k)
        return out
    for i, j in enumerate(jobs):
        out[i] = func(j)
        done(i + 1)
    return out
