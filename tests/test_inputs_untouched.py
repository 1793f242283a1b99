"""The input guard of every command-line call (``tests/input_guard.py``, ``conftest.py``).

It must catch a command that rewrites an input file, touches its mtime or writes a new file
into an input folder, in-process and in a subprocess; let a real command that only reads its
inputs pass; allow only the by-design writes it documents; and name the inputs of every
subcommand of both command lines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from campaign_builder import make_campaign
from input_guard import (
    PARSERS,
    InputChanged,
    Watched,
    cli_argv,
    cli_inputs,
    guard_inputs,
)

from plato_cnn import cli as cnn_cli


@pytest.fixture()
def inputs(tmp_path) -> Path:
    """A small input folder: two files, one of them in a subfolder."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha\n")
    (d / "sub" / "b.bin").write_bytes(b"\x00\x01\x02")
    return d


# ------------------------------------------------------------------------ the guard itself
def test_guard_catches_a_rewritten_input_file(inputs):
    with pytest.raises(InputChanged, match=r"changed: a.txt: bytes changed") as exc:
        with guard_inputs("fake command", [inputs]):
            (inputs / "a.txt").write_text("ALPHA\n")  # same size, other bytes
    assert "fake command changed its input(s)" in str(exc.value)
    assert str(inputs) in str(exc.value)


def test_guard_catches_a_touched_mtime(inputs):
    st = (inputs / "sub" / "b.bin").stat()
    with pytest.raises(InputChanged, match=r"changed: sub/b.bin: mtime_ns"):
        with guard_inputs("fake command", [inputs]):
            os.utime(inputs / "sub" / "b.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_guard_catches_a_new_file_in_an_input_folder(inputs):
    with pytest.raises(InputChanged) as exc:
        with guard_inputs("fake command", [inputs]):
            (inputs / "sub" / "report.json").write_text("{}")
    text = str(exc.value)
    assert "added: sub/report.json (file)" in text
    assert "changed: sub: folder mtime_ns" in text


def test_guard_catches_a_removed_file_and_a_created_input(inputs, tmp_path):
    with pytest.raises(InputChanged, match=r"removed: a.txt \(file\)"):
        with guard_inputs("fake command", [inputs]):
            (inputs / "a.txt").unlink()
    missing = tmp_path / "missing"
    with pytest.raises(InputChanged, match=r"changed: \.: created \(a folder\)"):
        with guard_inputs("fake command", [missing]):
            missing.mkdir()


def test_links_fifos_and_devices_are_recorded_not_opened(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    os.mkfifo(d / "cube.fits")
    os.symlink("/dev/zero", d / "dev.fits")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with guard_inputs("fake command", [d, tmp_path / "loop"]):
        pass  # no hang on the FIFO or the device, no error on the link loop
    with pytest.raises(InputChanged, match="changed: dev.fits: link target /dev/zero -> /dev/null"):
        with guard_inputs("fake command", [d]):
            (d / "dev.fits").unlink()
            os.symlink("/dev/null", d / "dev.fits")


def test_guard_passes_a_reader_and_a_write_beside_the_input(inputs, tmp_path):
    with guard_inputs("fake command", [inputs, inputs / "a.txt"]):
        assert (inputs / "a.txt").read_text() == "alpha\n"
        (tmp_path / "out.json").write_text("{}")  # an output next to the input


def test_by_design_writes_are_allowed_and_only_those(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    ns = argparse.Namespace(command="calibrate", model=str(model), dry_run=False)
    (watched,) = cli_inputs("plato-cnn", ns)
    with guard_inputs("plato-cnn calibrate", [watched]):  # model.json rewritten atomically
        tmp = model / ".model.json.tmp"
        tmp.write_text('{"calibrated": 1}')
        tmp.replace(model / "model.json")
    with pytest.raises(InputChanged, match="changed: model.safetensors"):
        with guard_inputs("plato-cnn calibrate", [watched]):
            (model / "model.safetensors").write_bytes(b"WEIGHTS")
    (dry,) = cli_inputs("plato-cnn", argparse.Namespace(**{**vars(ns), "dry_run": True}))
    with pytest.raises(InputChanged, match="changed: model.json"):
        with guard_inputs("plato-cnn calibrate --dry-run", [dry]):
            (model / "model.json").write_text('{"calibrated": 2}')


def test_every_subcommand_names_its_inputs(tmp_path):
    """A new subcommand without an entry in ``cli_inputs`` fails here, not silently."""
    for prog, parser in PARSERS.items():
        (sub,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
        for cmd, p in sub.choices.items():
            ns = argparse.Namespace(**{a.dest: a.default for a in p._actions}, command=cmd)
            for attr in ("campaign_dir", "campaign"):
                if hasattr(ns, attr):
                    setattr(ns, attr, [str(tmp_path / "c")])
            for w in cli_inputs(prog, ns, cwd=tmp_path):
                assert isinstance(w, Watched) and w.path.is_absolute(), (prog, cmd, w)
    with pytest.raises(InputChanged, match="not listed"):
        cli_inputs("plato-cnn", argparse.Namespace(command="no-such-command"))


def test_command_lines_recognised_in_subprocess_argv():
    py = sys.executable
    assert cli_argv(["plato-sim", "info", "ds"]) == ("plato-sim", ["info", "ds"])
    assert cli_argv([py, "-m", "plato_cnn.cli", "bft", "c"]) == ("plato-cnn", ["bft", "c"])
    code = "import sys; from plato_cnn.cli import main; sys.exit(main())"
    assert cli_argv([py, "-c", code, "bft", "c"]) == ("plato-cnn", ["bft", "c"])
    assert cli_argv([py, "-c", "import plato_cnn.cli"]) is None  # no call of main
    assert cli_argv([py, "-m", "benchmarks.generate", "--n", "16"]) is None
    assert cli_argv("plato-sim info ds") is None  # a shell string: not parsed


def test_guard_catches_a_subprocess_writing_into_its_input(inputs):
    """A process started as ``plato-cnn bft INPUTS`` that writes into INPUTS is caught."""
    # stands in for the command line: recognised by the ``plato_cnn.cli ... main(`` it names
    code = (
        "import pathlib, sys; pathlib.Path(sys.argv[2], 'new.txt').write_text('x')"
        "  # not: from plato_cnn.cli import main; main()"
    )
    with pytest.raises(InputChanged, match=r"(?s)\(subprocess\) changed.*added: new.txt"):
        subprocess.run([sys.executable, "-c", code, "bft", str(inputs)], check=True)


# ------------------------------------------------------------------------ a real command
def test_real_bft_passes_the_guard(tmp_path, capsys):
    camp = make_campaign(tmp_path / "c", n_fields=3, n_dithers=2)
    out = tmp_path / "r.json"
    with guard_inputs("plato-cnn bft", [camp]):  # the autouse guard runs inside this one
        rc = cnn_cli.main(["bft", str(camp), "--method", "eef", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file()
