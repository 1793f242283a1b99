"""The benchmark runner (``python -m benchmarks``) and the examples' building blocks.

The examples themselves take minutes (camera pools, campaign emulation, training), too long
here: their command lines are checked with ``--help`` and their statistics and figures on
small made-up inputs.  The runner runs for real, on a tiny ``generate`` benchmark and on a
benchmark given a bad option (its failure must be recorded, not stop the run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the benchmarks/ folder is not an installed package
    sys.path.insert(0, str(ROOT))
import benchmarks.__main__ as runner  # noqa: E402
from benchmarks._common import (  # noqa: E402
    error_stats,
    markdown_table,
    parse_with_quick,
    rms_spread,
    write_json,
)


def _example(name: str):
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _is_png(p: Path) -> bool:
    return p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- benchmarks/_common.py
def test_error_stats_counts_failures_and_coverage():
    truth = np.array([-80.0, -78.0, -76.0, -74.0])
    est = np.array([-79.0, -79.0, np.nan, -74.5])  # errors +1, -1, failed, -0.5
    sig = np.array([1.5, 0.5, 1.0, 0.5])
    s = error_stats(est, sig, truth)
    assert s["n_cameras"] == 3
    assert s["rms_error_degC"] == pytest.approx(np.sqrt((1 + 1 + 0.25) / 3))
    assert s["bias_degC"] == pytest.approx(-0.5 / 3)
    assert s["max_abs_error_degC"] == pytest.approx(1.0)
    assert s["frac_within_sigma"] == pytest.approx(2 / 3)  # |+1|<=1.5, |-1|>0.5, |-0.5|<=0.5
    assert s["frac_within_sigma_sd"] == pytest.approx(np.sqrt(2 / 3 * 1 / 3 / 3))
    assert error_stats([np.nan], [1.0], [0.0])["rms_error_degC"] is None
    assert error_stats([1.0], [1.0], [0.0])["rms_error_sd_degC"] is None  # one camera: no spread


def test_rms_spread_is_the_bootstrap_spread_of_the_rms_over_cameras():
    rng = np.random.default_rng(3)
    err = rng.normal(0.0, 0.3, 50)
    sd = rms_spread(err)
    assert sd == rms_spread(err)  # seeded: the same on every run
    # the RMS of n Gaussian errors spreads by sigma / sqrt(2 n); one sample's bootstrap
    # follows its own tails, so compare the mean over samples
    mean_sd = np.mean([rms_spread(rng.normal(0.0, 0.3, 50)) for _ in range(40)])
    assert mean_sd == pytest.approx(0.3 / np.sqrt(100), rel=0.15)
    assert rms_spread(np.full(20, 0.4)) == pytest.approx(0.0, abs=1e-12)  # equal errors
    assert rms_spread(err[:10]) > sd  # fewer cameras, a less certain RMS
    with pytest.raises(ValueError, match="shapes differ"):
        error_stats([1.0, 2.0], [1.0], [0.0])


def test_benchmark_json_records_repository_paths_relative_to_the_repository(tmp_path):
    outside = str(tmp_path / "cache")
    rec = {
        "command": ["python", str(ROOT / "benchmarks" / "out_of_family.py"), "--workers", "2"],
        "settings": {"bounds": str(ROOT / "results" / "limits.json"), "cache": outside},
        "heads": (ROOT / "plato_cnn" / "data" / "default_field_head", "out/h"),
        "value": np.float64(0.5),
    }
    got = json.loads(write_json(tmp_path / "r.json", rec).read_text("utf-8"))
    assert got["command"] == ["python", "benchmarks/out_of_family.py", "--workers", "2"]
    assert got["settings"] == {"bounds": "results/limits.json", "cache": outside}
    assert got["heads"] == ["plato_cnn/data/default_field_head", "out/h"]
    assert got["value"] == 0.5


def test_markdown_table_and_quick_defaults():
    t = markdown_table(
        [dict(a="x|y", b=0.5, c=None)], [("a", "A", ""), ("b", "B", ".2f"), ("c", "C", "d")]
    )
    assert t.splitlines() == ["| A | B | C |", "|---|---|---|", "| x\\|y | 0.50 | - |"]

    def parser():
        ap = argparse.ArgumentParser()
        ap.add_argument("--n", type=int, default=100)
        ap.add_argument("--m", type=int, default=7)
        return ap

    assert parse_with_quick(parser(), [], dict(n=5)).n == 100
    a = parse_with_quick(parser(), ["--quick", "--m", "3"], dict(n=5, m=1))
    assert (a.n, a.m) == (5, 3)  # quick replaces defaults, explicit options win
    with pytest.raises(ValueError, match="unknown options"):
        parse_with_quick(parser(), ["--quick"], dict(nope=1))


# ---------------------------------------------------------------- the runner
def test_accuracy_table_uses_the_bound_per_plateau_count():
    rows = [
        dict(estimator="CNN", plateaux=5, rms_error_degC=0.4, bias_degC=0.1, frac_within_sigma=0.6),
        dict(estimator="CNN", plateaux=1, rms_error_degC=1.0, bias_degC=0.0, frac_within_sigma=0.5),
        dict(
            estimator="cubic", plateaux=4, rms_error_degC=0.6, bias_degC=0.0, frac_within_sigma=0.1
        ),
    ]
    res = {
        "cnn_bft": {"rows": rows, "config": dict(fields=40, dithers=5, frames=2)},
        "limits": {
            "rows": [dict(plateaux=5, rms_bound_degC=0.1), dict(plateaux=1, rms_bound_degC=2.0)]
        },
    }
    text = runner.accuracy_table(res)
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert "error / bound" in lines[0]
    assert lines[1].endswith("| 0.1 | 4.00 |")  # 5 plateaux: 0.4 / 0.1 (bound to 2 digits)
    assert lines[2].endswith("| 2 | 0.50 |")  # 1 plateau: below the bound
    assert len(lines) == 3  # 4 plateaux is not one of the table's subsets
    assert "leans on its prior" in text
    assert "no `limits` result" in runner.accuracy_table({"cnn_bft": res["cnn_bft"]})
    assert runner.accuracy_table({}) is None


def test_runner_runs_records_failures_and_fills_the_readme(tmp_path, monkeypatch):
    tiny = ("--n", "16", "--n-cameras", "1", "--accuracy-cameras", "0", "--workers", "1")
    reg = (
        runner.Benchmark("generate", "tiny generation", quick_args=tiny),
        runner.Benchmark("classical_bft", "bad option", quick_args=("--no-such-option",)),
        runner.Benchmark("no_such_benchmark", "not written yet"),
        # one module run again under another name and other arguments (in / out of family)
        runner.Benchmark(
            "generate_again", "the same module", quick_args=tiny, module_name="generate"
        ),
    )
    monkeypatch.setattr(runner, "REGISTRY", reg)
    monkeypatch.setattr(runner, "BY_NAME", {b.name: b for b in reg})
    res = tmp_path / "res"
    assert runner.main(["--quick", "--results", str(res)]) == 1  # one benchmark failed

    ok = json.loads((res / "generate.json").read_text())
    assert ok["run"]["ok"] and ok["n_samples"] == 16
    assert ok["run"]["command"].startswith("python -m benchmarks.generate --n 16")
    assert ok["machine"]["cpu_count"] >= 1
    bad = json.loads((res / "classical_bft.json").read_text())
    assert not bad["run"]["ok"] and "--no-such-option" in bad["run"]["stderr_tail"]
    assert not (res / "no_such_benchmark.json").exists()
    again = json.loads((res / "generate_again.json").read_text())
    assert again["run"]["ok"]
    assert again["run"]["command"].startswith("python -m benchmarks.generate --n 16")

    summary = (res / "summary.md").read_text()
    assert "| n_samples | 16 |" in summary
    assert "**Failed**" in summary and "unrecognized arguments" in summary
    assert "Not available (module `benchmarks.no_such_benchmark` not present)" in summary
    assert "# `generate_again`: the same module" in summary
    assert summary.count("| n_samples | 16 |") == 2  # rendered by the generate module's tables

    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n\n## Results\n\n{runner.README_BEGIN}\nold\n{runner.README_END}\n\nend\n"
    )
    runner.update_readme(readme, runner.render_summary(res, 2, title=False))
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{runner.README_END}\n\nend\n")
    assert "### `generate`: tiny generation" in text
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        runner.update_readme(readme, "x")


# ---------------------------------------------------------------- the examples
@pytest.mark.parametrize("name", ["quickstart", "pretrain_small", "finetune", "own_arrays"])
def test_examples_have_a_main_with_an_output_folder(name, capsys):
    with pytest.raises(SystemExit) as exc:
        _example(name).main(["--help"])
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_pretrain_small_plots_the_log(tmp_path):
    log = tmp_path / "model" / "log.csv"
    log.parent.mkdir()
    log.write_text(
        "epoch,train_loss,val_loss,val_rmse_um,lr,elapsed_s\n"
        "1,0.9,1.1,80.0,0.002,10\n2,0.2,0.5,50.0,0.001,20\n"
    )
    assert _is_png(_example("pretrain_small").plot_losses(log, tmp_path / "loss.png"))


def test_finetune_statistics_and_figures(tmp_path):
    ft = _example("finetune")
    rows = [
        {"camera": "a", "truth_degC": -78.0, "x": {"bft_degC": -77.0, "sigma_degC": 0.5}},
        {"camera": "b", "truth_degC": -80.0, "x": {"bft_degC": -80.5, "sigma_degC": 0.5}},
    ]
    s = ft.rms_errors(rows, ["x"])["x"]
    assert s["rms_error_degC"] == pytest.approx(np.sqrt((1 + 0.25) / 2))
    assert s["bias_degC"] == pytest.approx(0.25)
    assert s["frac_within_sigma"] == pytest.approx(0.5)
    assert _is_png(ft.plot_errors(rows, ["x"], tmp_path / "errors.png"))
    summary = {
        "history": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}],
        "cameras": ["a", "b"],
        "before": [{"net_minus_eef_degC_mean": 0.3}, {"net_minus_eef_degC_mean": -0.2}],
        "after": [{"net_minus_eef_degC_mean": 0.1}, {"net_minus_eef_degC_mean": 0.0}],
    }
    assert _is_png(ft.plot_finetune(summary, tmp_path / "finetune.png"))
    # the cameras differ from the pretraining population, as the example says
    from plato_sim.optics.wavefront import FieldAberrations

    assert ft.SHIFTED_DESIGN != FieldAberrations()


# ---------------------------------------------------------------- benchmarks/out_of_family.py


def test_out_of_family_reuses_kept_rows_the_current_fit_would_repeat(tmp_path, monkeypatch):
    """A camera's rows kept under an earlier forward procedure are reused, except forward
    fits that ended outside the model (the current procedure fits those differently)."""
    import benchmarks.out_of_family as oof
    from plato_cnn.forward import FIT_VERSION, SAME_WITHIN_MODEL_SINCE

    fwd = [k for k, r in enumerate(oof.ROWS) if r[1] == "forward"][:2]
    other = next(k for k, r in enumerate(oof.ROWS) if r[1] != "forward")
    job = {"dir": str(tmp_path / "cam"), "rows": [other, *fwd], "model": None,
           "truth": -80.0, "i": 0, "family": "nodal"}  # fmt: skip
    kept = {"i": 0, "family": "nodal", "truth": -80.0, "s": 5.0, "results": [
        {"row": other, "bft": -80.3, "sigma": 0.2},
        {"row": fwd[0], "bft": -80.01, "sigma": 0.01, "sigma_stat": 0.01, "outside": False,
         "chi2": 1.02},
        {"row": fwd[1], "bft": -75.0, "sigma": 0.01, "sigma_stat": 0.01, "outside": True,
         "chi2": 40.0},
    ]}  # fmt: skip
    oof._result_cache(job, SAME_WITHIN_MODEL_SINCE).write_text(json.dumps(kept))
    asked = []

    def fake(j):
        asked.append(j["rows"])
        row = {"bft": -80.02, "sigma": 0.02, "sigma_stat": 0.02, "outside": False, "chi2": 1.0}
        return {"results": [{"row": k, **row} for k in j["rows"]], "s": 2.0}

    monkeypatch.setattr(oof, "_evaluate_camera", fake)
    got = oof._evaluate(job)
    assert asked == [[fwd[1]]]
    assert [r["row"] for r in got["results"]] == job["rows"] and got["s"] == 7.0
    assert [r["bft"] for r in got["results"]] == [-80.3, -80.01, -80.02]
    assert FIT_VERSION > SAME_WITHIN_MODEL_SINCE and oof._result_cache(job).is_file()
    asked.clear()
    assert oof._evaluate(job)["results"] == got["results"] and asked == []  # now kept as is


def test_out_of_family_cross_check_rows_widen_a_disagreeing_cnn():
    """The derived rows take the CNN's estimate and widen its sigma to cover the reference
    where they disagree beyond DISAGREE_SIGMAS combined sigmas (flagged), as the CLI does."""
    import benchmarks.out_of_family as oof

    k, (cnn, ref) = next((k, ab) for k, ab in oof.CHECKS.items() if oof.ROWS[k][2] == "forward")
    ev = {"results": [{"row": cnn, "bft": -80.0, "sigma": 0.1},
                      {"row": ref, "bft": -81.0, "sigma": 0.01}]}  # fmt: skip
    got = next(r for r in oof.with_cross_checks(ev)["results"] if r["row"] == k)
    assert (
        got["bft"] == -80.0 and got["outside"] and got["sigma"] == pytest.approx(np.hypot(0.1, 1))
    )
    assert got["disagreement_sigmas"] == pytest.approx(1.0 / np.hypot(0.1, 0.01))
    ev["results"][1]["bft"] = -80.2  # within 3 combined sigmas: unchanged
    again = oof.with_cross_checks(ev)["results"]
    got = next(r for r in again if r["row"] == k)
    assert not got["outside"] and got["sigma"] == 0.1
    assert sum(r["row"] == k for r in again) == 1  # recomputed, not appended twice
    ev["results"][0]["outside"] = True  # flagged by its residual check: one combined sigma
    got = next(r for r in oof.with_cross_checks(ev)["results"] if r["row"] == k)
    assert got["outside"] and got["sigma"] == pytest.approx(np.hypot(0.1, 0.2))


def test_out_of_family_field_rows_add_the_out_of_family_term_where_flagged(tmp_path):
    """The field head's derived rows: its sigma widened by the shipped card's out-of-family
    term where the CNN's residual check flags the camera, as ``--method field`` reports it;
    the fallback row takes the field head's estimate only there.  The rows' key ignores the
    term (kept rows do not depend on it)."""
    import shutil

    import benchmarks.out_of_family as oof
    from plato_cnn.nn.field_head import default_field_head_dir, load_field_head, save_field_head

    card = load_field_head(default_field_head_dir())[1]
    for n in (5, 3):
        fam = next(k for k, r in enumerate(oof.ROWS) if r[0] == oof.FAMILY_LABEL and r[3] == n)
        back = next(k for k, (a, b) in oof.CHECKS.items() if oof.ROWS[b][1] == "field"
                    and oof.ROWS[k][0] != oof.FAMILY_LABEL and oof.ROWS[k][3] == n)  # fmt: skip
        cnn, field = oof.CHECKS[fam]
        for flagged in (False, True):
            ev = {"results": [{"row": cnn, "bft": -80.0, "sigma": 0.1, "outside": flagged},
                              {"row": field, "bft": -80.5, "sigma": 0.2}]}  # fmt: skip
            rows = {r["row"]: r for r in oof.with_cross_checks(ev)["results"]}
            term = card.family_for(n) if flagged else 0.0
            assert term is not None and rows[fam]["bft"] == -80.5
            assert rows[fam]["sigma"] == pytest.approx(np.hypot(0.2, term))
            assert rows[back]["bft"] == (-80.5 if flagged else -80.0)
    d = tmp_path / "head"
    shutil.copytree(default_field_head_dir(), d)
    before = oof._field_head_sha(str(d))
    head, c = load_field_head(d)
    c.family_sigma_degC, c.family_calibration = {}, {}
    save_field_head(head, c, d)
    oof._field_head_sha.cache_clear()
    assert oof._field_head_sha(str(d)) == before
    c.systematic_sigma_degC = {"5": 1.0}
    save_field_head(head, c, d)
    oof._field_head_sha.cache_clear()
    assert oof._field_head_sha(str(d)) != before


def test_out_of_family_recomputes_cnn_rows_kept_without_the_model_description(
    tmp_path, monkeypatch
):
    """Rows kept under a key without the CNN description's hash: the classical ones are
    reused, the CNN's recomputed (its calibrations set its sigma)."""
    import benchmarks.out_of_family as oof
    from plato_cnn.forward import FIT_VERSION

    cnn = oof.ROWS.index(("CNN + thermal-model fit", "cnn", "-", 5))
    job = {"dir": str(tmp_path / "cam"), "rows": [0, cnn], "model": None, "truth": -80.0,
           "i": 0, "family": "nodal"}  # fmt: skip
    kept = {"i": 0, "family": "nodal", "truth": -80.0, "s": 5.0,
            "results": [{"row": 0, "bft": -80.3, "sigma": 0.2},
                        {"row": cnn, "bft": -81.0, "sigma": 0.1}]}  # fmt: skip
    oof._result_cache(job, FIT_VERSION, with_card=False).write_text(json.dumps(kept))
    asked = []

    def fake(j):
        asked.append(j["rows"])
        return {"results": [{"row": k, "bft": -80.1, "sigma": 0.5} for k in j["rows"]], "s": 1.0}

    monkeypatch.setattr(oof, "_evaluate_camera", fake)
    got = oof._evaluate(job)["results"]
    assert asked == [[cnn]] and [r["bft"] for r in got[:2]] == [-80.3, -80.1]


def test_out_of_family_kept_only_scores_complete_cameras_and_computes_nothing(
    tmp_path, monkeypatch
):
    """``--kept-only`` (a stopped run's table): a camera whose rows are all kept is scored,
    one with rows missing or nothing kept is left out (None), and nothing is computed."""
    import benchmarks.out_of_family as oof

    def never(j):
        raise AssertionError("--kept-only must not compute")

    monkeypatch.setattr(oof, "_evaluate_camera", never)
    job = {"dir": str(tmp_path / "cam"), "rows": [0, 1], "model": None, "truth": -80.0,
           "i": 0, "family": "out", "kept_only": True}  # fmt: skip
    assert oof._evaluate(job) is None  # nothing kept
    kept = {"i": 0, "family": "out", "truth": -80.0, "s": 5.0,
            "results": [{"row": 0, "bft": -80.3, "sigma": 0.2}]}  # fmt: skip
    oof._result_cache(job, with_card=False).write_text(json.dumps(kept))
    assert oof._evaluate(job) is None  # row 1 missing
    kept["results"].append({"row": 1, "bft": -80.1, "sigma": 0.3})
    oof._result_cache(job, with_card=False).write_text(json.dumps(kept))
    got = oof._evaluate(job)
    assert [r["bft"] for r in got["results"]] == [-80.3, -80.1]


def test_out_of_family_merges_rows_kept_by_runs_of_other_rows(tmp_path, monkeypatch):
    """A run of some rows only (``--methods forward --plateaux 2``) keeps its own file; a
    later run of every row takes those from it and the others from an earlier procedure's
    file, the newer row where both hold one, and computes nothing."""
    import benchmarks.out_of_family as oof
    from plato_cnn.forward import FIT_VERSION

    def never(j):
        raise AssertionError("every row is kept")

    monkeypatch.setattr(oof, "_evaluate_camera", never)
    two = oof.ROWS.index(("forward method", "forward", "-", 2))
    five = oof.ROWS.index(("forward method", "forward", "-", 5))
    job = {"dir": str(tmp_path / "cam"), "rows": [0, five, two], "model": None,
           "truth": -80.0, "i": 0, "family": "out"}  # fmt: skip
    fit = {"sigma": 0.01, "sigma_stat": 0.01, "outside": False, "chi2": 1.0}
    old = {"i": 0, "family": "out", "truth": -80.0, "s": 5.0,
           "results": [{"row": 0, "bft": -80.3, "sigma": 0.2},
                       {"row": five, "bft": -80.01, **fit},
                       {"row": two, "bft": -80.5, **fit}]}  # fmt: skip
    oof._result_cache(job, FIT_VERSION - 1).write_text(json.dumps(old))
    partial = {**job, "rows": [two]}
    new = {**old, "results": [{"row": two, "bft": -80.02, **fit}]}
    oof._result_cache(partial).write_text(json.dumps(new))
    got = oof._evaluate({**job, "kept_only": True})
    assert [r["bft"] for r in got["results"] if r["row"] in job["rows"]] == [-80.3, -80.01, -80.02]
    assert [r["bft"] for r in oof._evaluate(job)["results"][:3]] == [-80.3, -80.01, -80.02]


def test_out_of_family_keep_dir_scores_kept_cameras_without_emulating(tmp_path, monkeypatch):
    """``--keep-dir``: a camera whose rows are all kept there takes its truth from the file and
    its campaign is not emulated; the others are emulated (the nodal ones by index), and
    with ``--kept-only`` nothing is."""
    import benchmarks.out_of_family as oof
    import plato_sim.scenes.out_of_family as scene

    argv = ["--quick", "--keep-dir", str(tmp_path / "keep"), "--cache", str(tmp_path / "in"),
            "--oof-cache", str(tmp_path / "out"), "--workers", "1", "--methods", "eef"]  # fmt: skip

    def jobs_for(args):
        rows = [k for k, r in enumerate(oof.ROWS) if r[1] in args.methods]
        common = dict(model=None, rows=rows, fresh=False, kept_only=args.kept_only,
                      keep_dir=args.keep_dir)  # fmt: skip
        out = [dict(i=i, dir=str(d), family="out", **common)
               for i, d in enumerate(oof._oof_folders(args))]  # fmt: skip
        return oof.campaign_jobs(args, family="in", **common), out

    args = oof._parse(argv)
    Path(args.keep_dir).mkdir(parents=True)
    jobs, out_jobs = jobs_for(args)
    for j in (jobs[1], out_jobs[2]):
        kept = {"i": j["i"], "family": j["family"], "truth": -77.5, "s": 1.0,
                "results": [{"row": k, "bft": -77.4, "sigma": 0.2} for k in j["rows"]]}  # fmt: skip
        oof._result_cache(j).write_text(json.dumps(kept))
    emulated = []
    monkeypatch.setattr(oof, "_emulate", lambda j: emulated.append(j["i"]) or {"bft_degC": -80.0})

    def fake_oof(out_dir, n, workers=1, only=None, **kw):
        emulated.extend(f"out{i}" for i in only)
        folders = scene.out_of_family_folders(out_dir, n, **kw)
        return [(folders[i], {"bft_degC": -81.0}) for i in only]

    monkeypatch.setattr(scene, "emulate_out_of_family", fake_oof)
    oof._emulate_missing(args, jobs, out_jobs)
    assert emulated == [0, 2, 3, "out0", "out1", "out3"]
    assert jobs[1]["truth"] == out_jobs[2]["truth"] == -77.5 and jobs[0]["truth"] == -80.0
    assert oof._evaluate(jobs[1])["results"][0]["bft"] == -77.4
    args = oof._parse([*argv, "--kept-only"])
    jobs, out_jobs = jobs_for(args)
    emulated.clear()
    oof._emulate_missing(args, jobs, out_jobs)
    assert emulated == [] and [j.get("truth") for j in out_jobs] == [None, None, -77.5, None]


def test_crosscheck_rule_rows_follow_the_residual_check_and_both_rules():
    """benchmarks/crosscheck_rule: an estimate its residual check flags is widened by it, and
    by the forward fit from 1 combined sigma (command-line rule) but not under 3."""
    from types import SimpleNamespace

    import benchmarks.crosscheck_rule as cr

    card = SimpleNamespace(residual_check=SimpleNamespace(entry=lambda n: (5.0, 0.5)))
    # (error, sigma, residual um, s): flagged (8 > 5 um), widened to hypot(0.1, 0.5*8/10)
    cnn = {str(n): (0.8, 0.1, 8.0, 10.0) for n in cr.PLATEAUX}
    fw = {str(n): (0.0, 0.01, 1.0, 1.0, False) for n in cr.PLATEAUX}
    rows = cr.camera_rows(cnn, fw, -80.0, card)
    r = rows[5]
    assert r["flagged"] and r["sigma_residual"] == pytest.approx(np.hypot(0.1, 0.4))
    assert r["sigma_plain"] == r["sigma_residual"]  # 0.8 / 0.41 < 3 combined sigmas
    assert r["sigma_cli"] >= 0.8  # beyond 1 combined sigma: widened to cover the forward fit
    quiet = cr.camera_rows({k: (0.05, 0.1, 2.0, 10.0) for k in cnn}, fw, -80.0, card)[5]
    assert not quiet["flagged"] and quiet["sigma_cli"] == quiet["sigma"] == 0.1
    table = cr.build_rows({"fam": [rows, cr.camera_rows(cnn, fw, -80.0, card)]})
    first = table[0]
    assert first["n_cameras"] == 2 and first["frac_flagged"] == 1.0
    assert first["coverage_raw"] == 0.0 and first["coverage_cli"] == 1.0


def test_out_of_family_field_rows_take_the_given_heads_term(tmp_path):
    """``--field-head DIR``: the derived rows widen by that head's out-of-family term."""
    import shutil

    import benchmarks.out_of_family as oof
    from plato_cnn.nn.field_head import default_field_head_dir

    d = tmp_path / "head"
    shutil.copytree(default_field_head_dir(), d)
    card = json.loads((d / "field_head.json").read_text())
    card["family_sigma_degC"] = {k: 2.0 * v for k, v in card["family_sigma_degC"].items()}
    (d / "field_head.json").write_text(json.dumps(card))
    fam = next(k for k, r in enumerate(oof.ROWS) if r[0] == oof.FAMILY_LABEL and r[3] == 5)
    cnn, field = oof.CHECKS[fam]
    ev = {"results": [{"row": cnn, "bft": -80.0, "sigma": 0.1, "outside": True},
                      {"row": field, "bft": -80.5, "sigma": 0.2}]}  # fmt: skip
    shipped = oof._field_head_card().family_for(5)
    got = {r["row"]: r for r in oof.with_cross_checks(ev, str(d))["results"]}[fam]
    assert got["sigma"] == pytest.approx(np.hypot(0.2, 2.0 * shipped))
    assert oof._parse(["--field-head", str(d)]).field_head == str(d)


def test_out_of_family_field_rows_are_cross_checked_by_the_classical_fit_as_bft_does():
    """With 4 plateaux or more the field head's derived rows go through the classical cross-check
    that ``bft`` applies by default: beyond DISAGREE_SIGMAS combined sigmas the reported
    estimate is flagged and its sigma widened to cover the difference; with 3 no check."""
    import benchmarks.out_of_family as oof
    from plato_cnn.crosscheck import DISAGREE_SIGMAS

    classical = {r[3]: k for k, r in enumerate(oof.ROWS) if r[1:3] == ("eef", "gauss")}
    for n in (5, 3):
        fam = next(k for k, r in enumerate(oof.ROWS) if r[0] == oof.FAMILY_LABEL and r[3] == n)
        back = next(k for k, (a, b) in oof.CHECKS.items() if oof.ROWS[b][1] == "field"
                    and oof.ROWS[k][0] != oof.FAMILY_LABEL and oof.ROWS[k][3] == n)  # fmt: skip
        cnn, field = oof.CHECKS[fam]
        ev = {"results": [{"row": cnn, "bft": -80.0, "sigma": 0.1, "outside": False},
                          {"row": field, "bft": -80.5, "sigma": 0.2},
                          {"row": classical[n], "bft": -83.0, "sigma": 0.3}]}  # fmt: skip
        rows = {r["row"]: r for r in oof.with_cross_checks(ev)["results"]}
        if n == 5:  # 2.5 / hypot(0.2, 0.3) and 3.0 / hypot(0.1, 0.3): both beyond 3 sigmas
            assert 2.5 / np.hypot(0.2, 0.3) > DISAGREE_SIGMAS
            assert rows[fam]["outside"] and rows[fam]["sigma"] == pytest.approx(np.hypot(0.2, 2.5))
            assert rows[back]["outside"] and rows[back]["bft"] == -80.0
            assert rows[back]["sigma"] == pytest.approx(np.hypot(0.1, 3.0))
        else:
            assert not rows[fam]["outside"] and rows[fam]["sigma"] == 0.2
            assert "classical_disagreement_sigmas" not in rows[fam]
        ev["results"][2]["bft"] = -80.6  # within DISAGREE_SIGMAS: unchanged
        rows = {r["row"]: r for r in oof.with_cross_checks(ev)["results"]}
        assert not rows[fam]["outside"] and rows[fam]["sigma"] == 0.2


# ---------------------------------------------------------------- benchmarks/inorbit_ground.py
def test_inorbit_ground_scores_the_nodal_family_and_never_calibrates_on_it(capsys):
    """The nodal family scores the corrected in-orbit check; it must not calibrate its terms."""
    import benchmarks.inorbit_ground as ig

    with pytest.raises(SystemExit) as exc:
        ig.main(["--family", "nodal", "--calibrate"])
    assert exc.value.code == 2 and "calibrates nothing" in capsys.readouterr().err


def test_inorbit_ground_family_list_and_forward_systematic(capsys):
    """--family takes a comma list of known families (nodal never with --calibrate); the
    forward check's systematic term is the 68th percentile of the errors beyond the
    statistical sigma, on the sets of 100 stars of the forward method only."""
    import benchmarks.inorbit_ground as ig

    for bad in ("design,bogus", ","):
        with pytest.raises(SystemExit) as exc:
            ig.main(["--family", bad])
        assert exc.value.code == 2 and "--family" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ig.main(["--family", "design,nodal", "--calibrate"])
    assert exc.value.code == 2 and "calibrates nothing" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    err = rng.normal(0.0, 1.0, 400)
    recs = [dict(method="forward", n_stars=100, error_degC=0.0, shift_error_um=float(e),
                 shift_sigma_stat_um=0.0, family="design", camera_seed=i % 8, chi2_reduced=1.25)
            for i, e in enumerate(err)]  # fmt: skip
    recs += [dict(r, method="ground_focus") for r in recs[:50]]
    recs += [dict(r, n_stars=10, shift_error_um=50.0) for r in recs[:50]]
    out = ig.forward_systematic_from(recs)
    assert out["n_sets"] == 400 and out["cameras"] == 8
    assert out["forward_systematic_um"] == pytest.approx(np.percentile(np.abs(err), 68.27))
    assert out["coverage_with_term"] == pytest.approx(0.6827, abs=0.01)
    # the misfit coefficient: the same percentile per unit of sqrt(chi2_red - 1) = 0.5
    assert out["forward_misfit_um"] == pytest.approx(2.0 * out["forward_systematic_um"])
    assert out["coverage_misfit"]["design"] == pytest.approx(0.6827, abs=0.01)
    assert ig.forward_systematic_from([r for r in recs if r["method"] != "forward"]) is None


def test_inorbit_ground_model_option_refuses_what_is_not_a_model(tmp_path, capsys):
    """--model names the in-orbit network to score; a folder without a model exits 2 before
    any camera is emulated."""
    import benchmarks.inorbit_ground as ig

    with pytest.raises(SystemExit) as exc:
        ig.main(["--model", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--model" in err and "model.json" in err


def test_inorbit_ground_plateaux_option_keeps_its_campaigns_apart(tmp_path, monkeypatch, capsys):
    """--ground-plateaux emulates the ground campaign with those plateaux, in a folder of its
    own (never the reference design's), and refuses what is not a list of >= 2 plateaux."""
    import benchmarks.inorbit_ground as ig
    import plato_cnn.reader as reader
    import plato_sim.scenes.ground_test as gt

    for bad in ("-90,x", "-80", "-80,-80"):
        with pytest.raises(SystemExit) as exc:
            ig.main([f"--ground-plateaux={bad}"])
        assert exc.value.code == 2 and "--ground-plateaux" in capsys.readouterr().err
    assert ig.ground_folder("nodal", []) == "nodal"
    dense = [-90.0, -87.5, -85.0]
    assert ig.ground_folder("nodal", dense) == "nodal_plateaux_-90_-87.5_-85"
    seen = {}

    def fake_emulate(out_dir, design=None, **kw):
        seen.update(out_dir=Path(out_dir), design=design)
        return {"bft_degC": -80.0}

    class Frames:
        usable = None

        def select(self, mask):
            return self

    monkeypatch.setattr(gt, "emulate_or_load", fake_emulate)
    monkeypatch.setattr(reader, "read_campaign", lambda d: Frames())
    job = dict(keep_dir=str(tmp_path), family="nodal", seed=2000, labels="forward",
               ground_plateaux=dense)  # fmt: skip
    keep = tmp_path / "nodal_plateaux_-90_-87.5_-85"
    keep.mkdir()
    (keep / "forward_2000.json").write_text('{"bft_degC": -80.0}')

    class Cam:
        def model(self):
            return None

    truth, _, rep, _ = ig._ground(job, Cam(), -80.0)
    assert seen["out_dir"] == keep / "campaign_2000" and rep["bft_degC"] == -80.0
    assert seen["design"].plateaux_degC == tuple(dense)
    job.pop("ground_plateaux")  # jobs of the reference design: its own folder, no design
    (tmp_path / "nodal").mkdir()
    (tmp_path / "nodal" / "forward_2000.json").write_text('{"bft_degC": -80.0}')
    ig._ground(job, Cam(), -80.0)
    assert seen["out_dir"] == tmp_path / "nodal" / "campaign_2000" and seen["design"] is None


def test_recheck_calibration_takes_the_sigma_divided_by_the_sensitivity(monkeypatch):
    """The re-check bench calibrates its systematic term on the corrected mean: a camera whose
    network shows half of a focus change needs half the term it would at k = 1, its kept row
    is rescored with the term divided by k, and the flag follows the current threshold."""
    import benchmarks.recheck as rc
    import plato_cnn.offset_correction as oc

    err = np.linspace(-0.4, 0.4, 11)

    def evals(k):
        return [
            dict(
                truth=0.0,
                first_forward_degC=-1.0,
                results=[
                    dict(
                        model="shipped, re-check",
                        plateaux=n,
                        bft=e,
                        sigma=0.1,
                        sigma_fields_degC=0.0,
                        sigma_first_degC=0.0,
                        spread_degC=0.2,
                        interp_degC=0.0,
                        sensitivity=k,
                        wall_s=1.0,
                    )
                    for n in rc.PLATEAUX
                ],
            )  # fmt: skip
            for e in err
        ]

    full = rc._systematic(evals(1.0), ["shipped, re-check"])["shipped, re-check"]
    half = rc._systematic(evals(0.5), ["shipped, re-check"])["shipped, re-check"]
    assert full["5"]["constant_degC"] == pytest.approx(np.percentile(np.abs(err), 68.27))
    assert half["5"]["constant_degC"] == pytest.approx(0.5 * full["5"]["constant_degC"])
    assert half["sensitivity_outside"] == pytest.approx(0.45)
    # calibrated on one set, scored on the other: the k = 0.5 set's term is half, and its
    # cameras' sigma is the term over 0.5
    cross = rc._cross_coverage(evals(1.0), evals(0.5), ["shipped, re-check"])["shipped, re-check"]
    term = full["5"]["constant_degC"] * (1 + 1e-12)
    assert cross["5"]["constant_degC"]["a_to_b"] == pytest.approx(np.mean(np.abs(err) <= 2 * term))
    assert cross["5"]["constant_degC"]["b_to_a"] == pytest.approx(np.mean(np.abs(err) <= term / 2))
    monkeypatch.setattr(oc, "RECHECK_SYSTEMATIC", {5: (0.1, 0.0, 0.0)})
    monkeypatch.setattr(oc, "RECHECK_SENSITIVITY_OUTSIDE", 0.6)
    row = rc._rescored(evals(0.5)[0], {})["results"][0]
    assert row["sigma"] == pytest.approx(0.2) and row["outside_model"]
    kept_before = evals(0.5)[0]
    for r in kept_before["results"]:  # a row kept before the sensitivity existed
        del r["sensitivity"], r["interp_degC"]
    row = rc._rescored(kept_before, {})["results"][0]
    assert row["sigma"] == pytest.approx(0.1) and "outside_model" not in row
