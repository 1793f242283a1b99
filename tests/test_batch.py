"""Batch mode: several campaigns in one ``plato-cnn bft`` call, one report each, a summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from campaign_builder import make_campaign

from plato_cnn.cli import main


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    a = make_campaign(root / "cama", seed=1)
    b = make_campaign(root / "camb", seed=2)
    bad = root / "not_a_campaign"
    bad.mkdir()
    return a, b, bad


def test_batch_writes_one_report_per_campaign_and_a_summary(campaigns, tmp_path, capsys):
    a, b, bad = campaigns
    out = tmp_path / "out"
    rc = main(["bft", str(a), str(b), str(bad), "--out-dir", str(out), "--fit", "gauss"])
    assert rc == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["campaign"] for r in rows] == [str(p.resolve()) for p in (a, b, bad)]
    for r, p in zip(rows[:2], (a, b), strict=True):
        rep = json.loads(Path(r["report"]).read_text())
        assert r["error"] == "" and float(r["bft_degC"]) == pytest.approx(rep["bft_degC"])
        assert rep["campaign"] == str(p.resolve())
    assert rows[2]["error"] and rows[2]["bft_degC"] == ""
    assert sorted(x.name for x in out.iterdir()) == ["camp-2.json", "camp.json", "summary.csv"]
    err = capsys.readouterr().err
    assert f"{bad.resolve()}: failed:" in err


def test_batch_results_equal_single_runs(campaigns, tmp_path):
    a, b, _ = campaigns
    assert main(["bft", str(a), "--fit", "gauss", "--json", str(tmp_path / "a.json")]) == 0
    assert main(["bft", str(a), str(b), "--out-dir", str(tmp_path / "o"), "--fit", "gauss"]) == 0
    single = json.loads((tmp_path / "a.json").read_text())
    batch = json.loads((tmp_path / "o" / "camp.json").read_text())
    assert batch["bft_degC"] == single["bft_degC"] and batch["sigma_degC"] == single["sigma_degC"]


@pytest.mark.parametrize(
    "extra, says",
    [
        ([], "several campaigns need --out-dir"),
        (["--out-dir", "{o}", "--json", "{o}/x.json"], "--json and --plot name one file"),
    ],
)
def test_batch_refuses_ambiguous_outputs(campaigns, tmp_path, capsys, extra, says):
    a, b, _ = campaigns
    argv = ["bft", str(a), str(b)] + [x.format(o=tmp_path) for x in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]


def test_out_dir_never_inside_an_input(campaigns, capsys):
    a, b, _ = campaigns
    assert main(["bft", str(a), str(b), "--out-dir", str(a / "reports")]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert not (a / "reports").exists()
