"""map_jobs: results in the jobs' order over a plain loop or a spawned pool, progress logged."""

from __future__ import annotations

import logging

from plato_sim.workers import map_jobs


def test_map_jobs_keeps_order_and_logs_progress(caplog):
    jobs = [-3, 1, -2, 5]
    with caplog.at_level(logging.INFO, logger="plato_sim.workers"):
        assert map_jobs(abs, jobs, 1, desc="demo") == [3, 1, 2, 5]
        assert map_jobs(abs, jobs, 2, desc="demo pool") == [3, 1, 2, 5]
    msgs = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in msgs if m.startswith("demo: ")] == [
        f"demo: {k}/4 done" for k in range(1, 5)
    ]
    assert sum(m.startswith("demo pool: ") for m in msgs) == 4
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="plato_sim.workers"):
        assert map_jobs(abs, [], 2) == [] and map_jobs(abs, jobs, 1) == [3, 1, 2, 5]
    assert not caplog.records  # no description: silent
