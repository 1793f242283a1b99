"""The JSON report: schema, no NaN, atomic writes, outputs never inside inputs, plots."""

from __future__ import annotations

import json
import math
import os
import stat

import jsonschema
import numpy as np
import pytest

from plato_cnn.report import (
    SCHEMA_VERSION,
    check_output_path,
    jsonable,
    report_schema,
    write_json,
)
from plato_sim.errors import ParameterError


def _minimal(**changes) -> dict:
    r = {
        "schema_version": SCHEMA_VERSION,
        "camera": "cam",
        "site": "INTA",
        "campaign": "/data/cam",
        "method": "eef",
        "bft_degC": -78.2,
        "sigma_degC": 0.3,
        "obsids": [1001, 1002],
        "frames_used": 10,
        "frames_read": 12,
        "frames_dropped": 2,
        "drops": {"saturated": 2},
        "warnings": [],
        "unstable_obsids": [],
        "provenance": {
            "package_version": "0",
            "command_line": ["x"],
            "created_utc": "t",
            "input_checksum": {"sha256": "0" * 64, "files": 3, "bytes": 100},
        },
    }
    r.update(changes)
    return r


def test_schema_accepts_a_report_and_refuses_a_broken_one():
    schema = report_schema()
    jsonschema.validate(_minimal(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_minimal(method="guess"), schema)
    bad = _minimal()
    del bad["provenance"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_non_finite_numbers_become_null_with_a_reason(tmp_path):
    out = write_json(tmp_path / "r.json", _minimal(sigma_degC=float("nan"), extra=[1.0, np.inf]))
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    r = json.loads(text)
    assert r["sigma_degC"] is None and r["extra"][1] is None
    assert set(r["null_reasons"]) == {"sigma_degC", "extra[1]"}
    jsonschema.validate(r, report_schema())


def test_input_checksum_names_the_bytes_not_the_folder(tmp_path):
    from plato_cnn.report import input_checksum

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "x.fits").write_bytes(b"1234")
        (d / "sub" / "hk.csv").write_text("t,v\n")
    ca, cb = input_checksum(a), input_checksum(b)
    assert ca == cb and ca["files"] == 2 and ca["bytes"] == 8
    (b / "x.fits").write_bytes(b"1235")
    assert input_checksum(b)["sha256"] != ca["sha256"]


def test_jsonable_makes_numpy_plain():
    d = jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": np.bool_(True), "d": math.pi})
    assert d == {"a": 1.5, "b": [0, 1, 2], "c": True, "d": math.pi}
    assert json.dumps(d)


def test_outputs_never_go_into_inputs_folders_or_missing_folders(tmp_path):
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    with pytest.raises(ParameterError, match="inside the input"):
        check_output_path(campaign / "r.json", inputs=[campaign])
    with pytest.raises(ParameterError, match="is a folder"):
        check_output_path(campaign, inputs=[])
    with pytest.raises(ParameterError, match="does not exist"):
        check_output_path(tmp_path / "nowhere" / "r.json")
    assert check_output_path(tmp_path / "r.json", inputs=[campaign]) == tmp_path / "r.json"


def test_write_json_replaces_atomically(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("old")
    write_json(p, _minimal())
    assert json.loads(p.read_text())["camera"] == "cam"
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind
    new = write_json(tmp_path / "new.json", _minimal())
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600


def test_plots_return_a_figure_take_ax_and_keep_the_backend(tmp_path):
    from types import SimpleNamespace

    import matplotlib
    from matplotlib.figure import Figure

    from plato_cnn.report import plot_cnn_bft, save_figure

    backend = matplotlib.get_backend()
    frames = SimpleNamespace(camera="cam", temperature_degC=np.repeat([-85.0, -80.0, -75.0], 4))
    fit = SimpleNamespace(
        t_field_degC=np.array([-79.0, -78.0]),
        s_um_per_degC=10.0,
        s_sigma_um_per_degC=0.2,
        s_measured=True,
        bft_degC=-78.5,
        sigma_degC=0.1,
    )
    mu = 10.0 * (frames.temperature_degC + 78.5)
    fig = plot_cnn_bft(frames, fit, mu)
    assert isinstance(fig, Figure) and "cam" in fig.axes[0].get_title()
    outer = Figure()
    ax = outer.add_subplot()
    assert plot_cnn_bft(frames, fit, mu, ax=ax) is outer
    assert save_figure(fig, tmp_path / "p.png").stat().st_size > 1000
    assert matplotlib.get_backend() == backend
