"""examples/walkthrough.ipynb runs from top to bottom (its code cells, in order, in one
namespace, with the non-interactive matplotlib backend) and makes its figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_runs(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    namespace: dict = {"__name__": "__main__"}
    for k, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"{NOTEBOOK.name}[code cell {k}]", "exec"), namespace)
    out = tmp_path / "out" / "walkthrough"
    for name in ("classical.png", "cnn.png", "forward.png"):
        assert (out / name).stat().st_size > 1000, name
    truth = namespace["truth"]["bft_degC"]
    for name, t, _sigma in namespace["rows"][1:]:
        assert abs(t - truth) < 5.0, (name, t, truth)
    assert os.path.isdir(out / "democam")
