"""The fine-tuning bench reuses a kept forward fit only where the current procedure
reproduces it (plato_cnn.forward.same_fit_as_current)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import plato_cnn.forward as fw

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the benchmarks/ folder is not an installed package
    sys.path.insert(0, str(ROOT))
from benchmarks import finetune_transfer as ft  # noqa: E402


def _kept(tmp_path, version: int, chi2: float) -> dict:
    job = {"dir": str(tmp_path / "cam"), "i": 0}
    report = {"bft_degC": -80.0, "chi2": {"reduced": chi2}, "n_plateaux": 5}
    path = tmp_path / f"cam.forward_ff.{fw.MODEL_TAG}.v{version}.json"
    path.write_text(json.dumps(report))
    return job


def test_an_earlier_fit_within_the_calibrated_range_is_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(fw, "forward_bft", lambda *a, **k: pytest.fail("must not fit"))
    job = _kept(tmp_path, fw.FIT_VERSION - 1, 1.02)
    assert ft._forward_report(job)["bft_degC"] == -80.0


def test_an_earlier_fit_beyond_it_is_fitted_again(tmp_path, monkeypatch):
    class Fitted(Exception):
        pass

    def fit(*a, **k):
        raise Fitted

    monkeypatch.setattr(fw, "forward_bft", fit)
    monkeypatch.setattr("plato_cnn.reader.read_campaign", lambda d: _Frames())
    job = _kept(tmp_path, fw.FIT_VERSION - 1, 1e4)
    with pytest.raises(Fitted):
        ft._forward_report(job)


class _Frames:
    usable = None

    def select(self, mask):
        return self
