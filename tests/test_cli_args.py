"""Bad command-line arguments: exit status 2, a message naming the flag and its allowed range.

Both command lines (``plato-sim``, ``plato-cnn``) run in-process on argument lists that break
one rule each: counts below their minimum, non-finite or out-of-range numbers, missing input
files and folders, outputs that cannot be written, a CUDA device on a machine without one.
Each must end before any work: exit status 2, no traceback, no file written, and the last
line of stderr names the flag (argparse's usage error) or is the command's one line
``PROG COMMAND: message``.  Also: ``--version``, ``--help`` of every subcommand (exit 0, a
default shown), help text on every flag, and the old flag spellings still parse.
"""

from __future__ import annotations

import argparse
import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from plato_cnn import cli as cnn_cli
from plato_sim import cli as sim_cli
from plato_sim._version import __version__
from plato_sim.clitools import (
    fix_negative_values,
    float_in,
    int_in,
    int_list_in,
    output_file,
    temperature_degC,
)

MAINS = {"plato-sim": sim_cli.main, "plato-cnn": cnn_cli.main}
PARSERS = {"plato-sim": sim_cli._parser, "plato-cnn": cnn_cli._parser}


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _run(prog: str, argv: list[str]) -> tuple[int, str, str]:
    """``PROG ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = MAINS[prog](argv)
        except SystemExit as exc:  # argparse: usage errors, --help, --version
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture()
def work(tmp_path) -> Path:
    """Inputs that exist (empty: nothing may be read before the arguments are checked)."""
    for d in ("camp", "ds", "model"):
        (tmp_path / d).mkdir()
    (tmp_path / "f.fits").write_bytes(b"")
    (tmp_path / "blocker").write_text("a file, not a folder")
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# Base commands that parse; each case adds or overrides flags.  {tmp} is the work folder.
BASE = {
    ("plato-sim", "psf"): ["--field-deg", "9", "--defocus-um", "-50", "--out", "{tmp}/s.fits"],
    ("plato-sim", "generate"): ["--out", "{tmp}/newds", "--no-progress"],
    ("plato-sim", "info"): ["{tmp}/ds"],
    ("plato-sim", "campaign"): ["--out", "{tmp}/c", "--camera", "cam01", "--bft-degC", "-78"],
    ("plato-sim", "imagettes"): ["--out", "{tmp}/i.fits", "--temperature-degC", "-75"],
    ("plato-cnn", "bft"): ["{tmp}/camp"],
    ("plato-cnn", "pretrain"): ["--data", "{tmp}/ds", "--out", "{tmp}/m"],
    ("plato-cnn", "finetune"): ["--campaign", "{tmp}/camp", "--out", "{tmp}/ft"],
    ("plato-cnn", "offset-correction"): ["--campaign", "{tmp}/camp", "--out", "{tmp}/c.json"],
    ("plato-cnn", "calibrate"): ["--model", "{tmp}/model", "--workdir", "{tmp}/w"],
    ("plato-cnn", "plateau-head"): ["--model", "{tmp}/model", "--workdir", "{tmp}/w"],
    ("plato-cnn", "field-head"): ["--dataset", "{tmp}/ds", "--out", "{tmp}/fh"],
    ("plato-cnn", "field-head-finetune"): ["--campaign", "{tmp}/camp", "--out", "{tmp}/fhf"],
    ("plato-cnn", "focus-check"): ["{tmp}/f.fits", "--temperature-degC", "-75"],
    ("plato-cnn", "ground-calibration"): ["--campaign", "{tmp}/camp", "--out", "{tmp}/g.json"],
}

# (program, command, extra arguments, flag named in the message, text of the allowed range)
USAGE_ERRORS = [
    # plato-sim psf
    ("plato-sim", "psf", ["--size-px", "-3"], "--size-px", "[4, 256]"),
    ("plato-sim", "psf", ["--size", "0"], "--size-px/--size", "[4, 256]"),
    ("plato-sim", "psf", ["--size-px", "12.5"], "--size-px", "integer"),
    ("plato-sim", "psf", ["--n-wavelengths", "0"], "--n-wavelengths", "[1, 100]"),
    ("plato-sim", "psf", ["--n-wavelengths", "-2"], "--n-wavelengths", "[1, 100]"),
    ("plato-sim", "psf", ["--wavelength-nm", "-5"], "--wavelength-nm", "> 0 nm"),
    ("plato-sim", "psf", ["--wavelength-nm", "0"], "--wavelength-nm", "> 0 nm"),
    ("plato-sim", "psf", ["--wavelength-nm", "nan"], "--wavelength-nm", "finite"),
    ("plato-sim", "psf", ["--camera-yaml", "/missing.yaml"], "--camera-yaml", "no such file"),
    ("plato-sim", "psf", ["--camera", "/missing.yaml"], "--camera-yaml", "no such file"),
    ("plato-sim", "psf", ["--camera-yaml", "{tmp}/ds"], "--camera-yaml", "is a folder"),
    ("plato-sim", "psf", ["--field-deg", "90"], "--field-deg", "[0, 18.89] deg"),
    ("plato-sim", "psf", ["--field-deg", "-1"], "--field-deg", "[0, 18.89] deg"),
    ("plato-sim", "psf", ["--field-deg", "inf"], "--field-deg", "[0, 18.89] deg"),
    ("plato-sim", "psf", ["--defocus-um", "nan"], "--defocus-um", "finite"),
    ("plato-sim", "psf", ["--defocus-um", "-inf"], "--defocus-um", "finite"),
    ("plato-sim", "psf", ["--phi-deg", "inf"], "--phi-deg", "finite"),
    ("plato-sim", "psf", ["--offset-px", "nan,0"], "--offset-px", "finite"),
    ("plato-sim", "psf", ["--engine", "zemax"], "--engine", "invalid choice"),
    ("plato-sim", "psf", ["--out", "{tmp}"], "--out", "is a folder"),
    ("plato-sim", "psf", ["--out", "{tmp}/blocker/x.fits"], "--out", "not a folder"),
    # plato-sim generate / info
    ("plato-sim", "generate", ["--workers", "0"], "--workers", ">= 1"),
    ("plato-sim", "generate", ["--workers", "-2"], "--workers", ">= 1"),
    ("plato-sim", "generate", ["--n", "0"], "--n", ">= 1"),
    ("plato-sim", "generate", ["--n", "-5"], "--n", ">= 1"),
    ("plato-sim", "generate", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    ("plato-sim", "generate", ["--seed", str(2**63)], "--seed", "[0, 2**63 - 1]"),
    ("plato-sim", "generate", ["--config", "/missing.yaml"], "--config", "no such file"),
    ("plato-sim", "info", ["--indices", "-1"], "--indices", ">= 0"),
    ("plato-sim", "info", ["--indices", ""], "--indices", ">= 0"),
    # plato-sim campaign
    ("plato-sim", "campaign", ["--fields", "0"], "--fields", ">= 1"),
    ("plato-sim", "campaign", ["--dithers", "0"], "--dithers", ">= 1"),
    ("plato-sim", "campaign", ["--dithers", "-3"], "--dithers", ">= 1"),
    ("plato-sim", "campaign", ["--frames-per-dither", "0"], "--frames-per-dither", ">= 1"),
    ("plato-sim", "campaign", ["--window-px", "16"], "--window-px", "[32, 1024]"),
    ("plato-sim", "campaign", ["--window", "0"], "--window-px/--window", "[32, 1024]"),
    ("plato-sim", "campaign", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    ("plato-sim", "campaign", ["--bft-degC", "nan"], "--bft-degC", "> -273.15 degC"),
    ("plato-sim", "campaign", ["--bft-degC", "inf"], "--bft-degC", "> -273.15 degC"),
    ("plato-sim", "campaign", ["--bft-degC", "-300"], "--bft-degC", "> -273.15 degC"),
    ("plato-sim", "campaign", ["--plateaux-degC", "-90,nan"], "--plateaux-degC", "finite"),
    ("plato-sim", "campaign", ["--plateaux", "-90,inf"], "--plateaux-degC", "finite"),
    ("plato-sim", "campaign", ["--plateaux-degC", ""], "--plateaux-degC", "finite"),
    ("plato-sim", "campaign", ["--perturbation", "-1"], "--perturbation", ">= 0"),
    # plato-sim imagettes
    ("plato-sim", "imagettes", ["--n-stars", "0"], "--n-stars", ">= 1"),
    ("plato-sim", "imagettes", ["--size-px", "5"], "--size-px", "[6, 16]"),
    ("plato-sim", "imagettes", ["--size", "17"], "--size-px/--size", "[6, 16]"),
    ("plato-sim", "imagettes", ["--temperature-degC", "nan"], "--temperature-degC", "finite"),
    ("plato-sim", "imagettes", ["--temperature-degC", "-inf"], "--temperature-degC", "finite"),
    ("plato-sim", "imagettes", ["--teff-K", "nan,7000"], "--teff-K", "finite"),
    ("plato-sim", "imagettes", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    ("plato-sim", "imagettes", ["--out", "{tmp}"], "--out", "is a folder"),
    # plato-cnn bft
    ("plato-cnn", "bft", ["--plot", "/missing/dir/x.png"], "--plot", "does not exist"),
    ("plato-cnn", "bft", ["--json", "{tmp}"], "--json", "is a folder"),
    ("plato-cnn", "bft", ["--json", "{tmp}/blocker/r.json"], "--json", "not a folder"),
    ("plato-cnn", "bft", ["--json", "{tmp}/nope/r.json"], "--json", "does not exist"),
    ("plato-cnn", "bft", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    ("plato-cnn", "bft", ["--obsids", ""], "--obsids", "integers >= 0"),
    ("plato-cnn", "bft", ["--obsids", "1024,x"], "--obsids", ">= 0"),
    ("plato-cnn", "bft", ["--obsids", "-5"], "--obsids", ">= 0"),
    ("plato-cnn", "bft", ["--n-boot", "0"], "--n-boot", ">= 10"),
    ("plato-cnn", "bft", ["--n-boot", "9"], "--n-boot", ">= 10"),
    ("plato-cnn", "bft", ["--n-boot", "-1"], "--n-boot", ">= 10"),
    ("plato-cnn", "bft", ["--model", "/missing/model"], "--model", "no such folder"),
    ("plato-cnn", "bft", ["--device", "tpu"], "--device", "cpu, cuda or cuda:N"),
    ("plato-cnn", "bft", ["--s-prior", "nan,1"], "--s-prior-um-per-degC", "SIGMA > 0"),
    ("plato-cnn", "bft", ["--s-prior-um-per-degC", "10,0"], "--s-prior", "SIGMA > 0"),
    ("plato-cnn", "bft", ["--method", "nope"], "--method", "invalid choice"),
    # plato-cnn pretrain / finetune
    ("plato-cnn", "pretrain", ["--epochs", "0"], "--epochs", ">= 1"),
    ("plato-cnn", "pretrain", ["--batch-size", "0"], "--batch-size", ">= 1"),
    ("plato-cnn", "pretrain", ["--batch-size", "-1"], "--batch-size", ">= 1"),
    ("plato-cnn", "pretrain", ["--lr", "0"], "--lr", "> 0"),
    ("plato-cnn", "pretrain", ["--lr", "nan"], "--lr", "> 0"),
    ("plato-cnn", "pretrain", ["--workers", "-1"], "--workers", ">= 0"),
    ("plato-cnn", "pretrain", ["--max-steps-per-epoch", "-1"], "--max-steps-per-epoch", ">= 0"),
    ("plato-cnn", "pretrain", ["--max-val-samples", "-1"], "--max-val-samples", ">= 0"),
    ("plato-cnn", "pretrain", ["--patience", "0"], "--patience", ">= 1"),
    ("plato-cnn", "pretrain", ["--crop-px", "4"], "--crop-px", "[8, 64]"),
    ("plato-cnn", "pretrain", ["--crop", "100"], "--crop-px/--crop", "[8, 64]"),
    ("plato-cnn", "pretrain", ["--data", "/missing/ds"], "--data", "no such folder"),
    ("plato-cnn", "pretrain", ["--data", "{tmp}/f.fits"], "--data", "not a folder"),
    ("plato-cnn", "finetune", ["--epochs", "0"], "--epochs", ">= 1"),
    ("plato-cnn", "finetune", ["--lr", "-1"], "--lr", "> 0"),
    ("plato-cnn", "finetune", ["--synthetic", "/missing/ds"], "--synthetic", "no such folder"),
    ("plato-cnn", "finetune", ["--model", "/missing/model"], "--model", "no such folder"),
    ("plato-cnn", "finetune", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    (
        "plato-cnn",
        "finetune",
        ["--forward-json", "/missing/r.json"],
        "--forward-json",
        "no such file",
    ),  # fmt: skip
    ("plato-cnn", "finetune", ["--labels", "truth"], "--labels", "forward"),
    ("plato-cnn", "finetune", ["--variants", "-1"], "--variants", ">= 0"),
    # plato-cnn offset-correction
    (
        "plato-cnn",
        "offset-correction",
        ["--campaign", "/missing/c"],
        "--campaign",
        "no such folder",
    ),
    (
        "plato-cnn",
        "offset-correction",
        ["--forward-json", "/missing/r.json"],
        "--forward-json",
        "no such file",
    ),  # fmt: skip
    ("plato-cnn", "offset-correction", ["--out", "{tmp}"], "--out", "is a folder"),
    ("plato-cnn", "offset-correction", ["--model", "/missing/model"], "--model", "no such folder"),
    (
        "plato-cnn",
        "bft",
        ["--offset-correction", "/missing/c.json"],
        "--offset-correction",
        "no such file",
    ),  # fmt: skip
    # plato-cnn calibrate / plateau-head
    ("plato-cnn", "calibrate", ["--cameras", "0"], "--cameras", ">= 1"),
    ("plato-cnn", "calibrate", ["--workers", "0"], "--workers", ">= 1"),
    ("plato-cnn", "calibrate", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    ("plato-cnn", "calibrate", ["--model", "/missing/model"], "--model", "no such folder"),
    ("plato-cnn", "plateau-head", ["--cameras", "0"], "--cameras", ">= 1"),
    ("plato-cnn", "plateau-head", ["--validation-cameras", "-1"], "--validation-cameras", ">= 0"),
    ("plato-cnn", "plateau-head", ["--epochs", "0"], "--epochs", ">= 1"),
    ("plato-cnn", "plateau-head", ["--workers", "-1"], "--workers", ">= 1"),
    # plato-cnn field-head
    ("plato-cnn", "field-head", ["--steps", "0"], "--steps", ">= 1"),
    ("plato-cnn", "field-head", ["--window-degC", "0", "20"], "--window-degC", "> 0"),
    ("plato-cnn", "field-head", ["--window-fraction", "1.5"], "--window-fraction", "[0, 1]"),
    ("plato-cnn", "field-head", ["--moments", "3"], "--moments", "choose from 1, 2"),
    # plato-cnn field-head-finetune
    ("plato-cnn", "field-head-finetune", ["--variants", "0"], "--variants", ">= 1"),
    ("plato-cnn", "field-head-finetune", ["--steps", "0"], "--steps", ">= 1"),
    ("plato-cnn", "field-head-finetune", ["--lr", "0"], "--lr", "> 0"),
    ("plato-cnn", "field-head-finetune", ["--l2sp", "-1"], "--l2sp", ">= 0"),
    ("plato-cnn", "field-head-finetune", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    ("plato-cnn", "field-head-finetune", ["--workers", "0"], "--workers", ">= 1"),
    (
        "plato-cnn",
        "field-head-finetune",
        ["--field-head", "/missing/fh"],
        "--field-head",
        "no such folder",
    ),  # fmt: skip
    ("plato-cnn", "field-head-finetune", ["--model", "/missing/m"], "--model", "no such folder"),
    (
        "plato-cnn",
        "field-head-finetune",
        ["--forward-json", "/missing.json"],
        "--forward-json",
        "no such file",
    ),  # fmt: skip
    ("plato-cnn", "field-head-finetune", ["--device", "cuda:x"], "--device", "cpu, cuda or cuda:N"),
    ("plato-cnn", "field-head", ["--seed", "-1"], "--seed", "[0, 2**63 - 1]"),
    ("plato-cnn", "field-head", ["--workers", "0"], "--workers", ">= 1"),
    ("plato-cnn", "field-head", ["--dataset", "/missing/ds"], "--dataset", "no such folder"),
    ("plato-cnn", "field-head", ["--model", "/missing/model"], "--model", "no such folder"),
    ("plato-cnn", "field-head", ["--calibrate", "ho:0"], "--calibrate", "FAMILY:SEED:CAMERAS"),
    ("plato-cnn", "field-head", ["--calibrate", "highorder:-1:4"], "--calibrate", "seed >= 0"),
    ("plato-cnn", "field-head", ["--device", "cuda:x"], "--device", "cpu, cuda or cuda:N"),
    (
        "plato-cnn",
        "field-head",
        ["--family-reference", "/missing/fh"],
        "--family-reference",
        "no such folder",
    ),
    ("plato-cnn", "field-head", ["--family-sets", "ho:0"], "--family-sets", "FAMILY:SEED:CAMERAS"),
    (
        "plato-cnn",
        "bft",
        ["--method", "field", "--field-head", "/missing/fh"],
        "--field-head",
        "no such folder",
    ),  # fmt: skip
    # plato-cnn focus-check
    ("plato-cnn", "focus-check", ["--temperature-degC", "nan"], "--temperature-degC", "finite"),
    ("plato-cnn", "focus-check", ["--temperature-degC", "inf"], "--temperature-degC", "finite"),
    ("plato-cnn", "focus-check", ["--temperature-degC", "-300"], "--temperature-degC", "-273.15"),
    ("plato-cnn", "focus-check", ["--json", "{tmp}"], "--json", "is a folder"),
    ("plato-cnn", "focus-check", ["--model", "/missing/model"], "--model", "no such folder"),
    ("plato-cnn", "focus-check", ["--device", "cuda:x"], "--device", "cpu, cuda or cuda:N"),
    ("plato-cnn", "focus-check", ["--forward-json", "/x.json"], "--forward-json", "no such file"),
    (
        "plato-cnn",
        "focus-check",
        ["--ground-calibration", "/missing/g.json"],
        "--ground-calibration",
        "no such file",
    ),  # fmt: skip
    # plato-cnn ground-calibration
    (
        "plato-cnn",
        "ground-calibration",
        ["--campaign", "/missing/c"],
        "--campaign",
        "no such folder",
    ),  # fmt: skip
    (
        "plato-cnn",
        "ground-calibration",
        ["--forward-json", "/missing/r.json"],
        "--forward-json",
        "no such file",
    ),  # fmt: skip
    ("plato-cnn", "ground-calibration", ["--out", "{tmp}"], "--out", "is a folder"),
    ("plato-cnn", "ground-calibration", ["--model", "/missing/m"], "--model", "no such folder"),
]

# Refused by the command itself before any work: one line ``PROG COMMAND: message``.
COMMAND_ERRORS = [
    ("plato-sim", "psf", ["--wavelength-nm", "5"], "outside the camera's band [500, 1000]"),
    ("plato-sim", "psf", ["--offset-px", "0.7,0"], "[-0.5, 0.5]"),
    ("plato-sim", "psf", ["--offset-px", "0.1"], "two values"),
    ("plato-sim", "imagettes", ["--v-mag", "9"], "need two values"),
    ("plato-cnn", "bft", ["--json", "{tmp}/camp/r.json"], "lies inside the input"),
    (
        "plato-cnn",
        "focus-check",
        ["--forward-json", "{tmp}/blocker", "--ground-calibration", "{tmp}/blocker"],
        "no --model or --ground-calibration",
    ),
    ("plato-cnn", "focus-check", ["--forward-json", "{tmp}/blocker"], "not a readable forward"),
]


def _argv(prog: str, cmd: str, extra: list[str], tmp: Path) -> list[str]:
    return [a.format(tmp=tmp) for a in [cmd, *BASE[(prog, cmd)], *extra]]


def _ids(cases) -> list[str]:
    return [f"{prog}-{cmd}-{'='.join(extra)}" for prog, cmd, extra, *_ in cases]


@pytest.mark.parametrize("prog, cmd, extra, flag, allowed", USAGE_ERRORS, ids=_ids(USAGE_ERRORS))
def test_bad_argument_names_flag_and_range(work, prog, cmd, extra, flag, allowed):
    before = _tree(work)
    rc, out, err = _run(prog, _argv(prog, cmd, extra, work))
    assert rc == 2, err
    assert "Traceback" not in err and out == ""
    last = err.strip().splitlines()[-1]
    assert f"{prog} {cmd}: error: argument {flag}" in last, last
    assert allowed in last, last
    assert _tree(work) == before


@pytest.mark.parametrize("prog, cmd, extra, says", COMMAND_ERRORS, ids=_ids(COMMAND_ERRORS))
def test_command_refuses_before_work_in_one_line(work, prog, cmd, extra, says):
    before = _tree(work)
    rc, out, err = _run(prog, _argv(prog, cmd, extra, work))
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog} {cmd}: ") and says in lines[0], err
    assert out == ""
    assert _tree(work) == before


@pytest.mark.skipif(_cuda(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    "prog, cmd", [("plato-cnn", "bft"), ("plato-cnn", "pretrain"), ("plato-cnn", "focus-check")]
)
def test_cuda_device_without_cuda_says_so(work, prog, cmd):
    before = _tree(work)
    rc, _, err = _run(prog, _argv(prog, cmd, ["--device", "cuda"], work))
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "Traceback" not in err
    assert "argument --device" in last and "CUDA is not available" in last
    assert _tree(work) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_folder(work):
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc, _, err = _run("plato-cnn", ["bft", str(work / "camp"), "--json", f"{locked}/r.json"])
    finally:
        locked.chmod(0o700)
    assert rc == 2 and "argument --json" in err.splitlines()[-1] and "not writable" in err
    assert not (locked / "r.json").exists()


# ------------------------------------------------------------------------ --version, --help
@pytest.mark.parametrize("prog", sorted(MAINS))
def test_version(prog):
    rc, out, err = _run(prog, ["--version"])
    assert rc == 0 and out.strip() == f"{prog} {__version__}"


def _subcommands(prog: str) -> dict[str, argparse.ArgumentParser]:
    ap = PARSERS[prog]()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


HELP_CASES = [(prog, cmd) for prog in sorted(MAINS) for cmd in _subcommands(prog)]


@pytest.mark.parametrize("prog, cmd", HELP_CASES, ids=[f"{p}-{c}" for p, c in HELP_CASES])
def test_help_of_every_subcommand(prog, cmd):
    rc, out, err = _run(prog, [cmd, "--help"])
    text = " ".join(out.split())  # argparse wraps the help text
    assert rc == 0 and err == ""
    assert "(default: " in text and "[allowed: " in text


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_every_flag_has_help(prog):
    for cmd, p in _subcommands(prog).items():
        for action in p._actions:
            assert action.help and action.help.strip(), f"{prog} {cmd} {action.option_strings}"


# ------------------------------------------------------------------------ old spellings
def test_old_flag_spellings_still_parse(work):
    yaml = work / "cam.yaml"
    yaml.write_text("{}")

    def parse(prog, argv):
        return PARSERS[prog]().parse_args(fix_negative_values(argv))

    a = parse("plato-sim", ["psf", "--field-deg", "1", "--defocus-um", "0", "--out", "x.fits",
                            "--size", "16", "--camera", str(yaml)])  # fmt: skip
    assert a.size_px == 16 and a.camera_yaml == str(yaml) and a.offset_px == [0.0, 0.0]
    a = parse("plato-sim", ["campaign", "--out", "c", "--camera", "c1", "--bft-degC", "-78",
                            "--plateaux", "-90,-80", "--window", "48"])  # fmt: skip
    assert a.plateaux_degC == [-90.0, -80.0] and a.window_px == 48 and a.camera == "c1"
    a = parse("plato-sim", ["campaign", "--out", "c", "--camera", "c1", "--bft-degC", "-78"])
    assert a.plateaux_degC == [-90.0, -85.0, -80.0, -75.0, -70.0]
    a = parse("plato-sim", ["imagettes", "--out", "i.fits", "--temperature-degC", "-75",
                            "--size", "8"])  # fmt: skip
    assert a.size_px == 8 and a.v_mag == [8.5, 13.0] and a.teff_K == [3500.0, 7500.0]
    a = parse("plato-cnn", ["bft", "c", "--s-prior", "11.2,0.1", "--obsids", "1024,1035"])
    assert a.s_prior == (11.2, 0.1) and a.obsids == [1024, 1035] and a.n_boot == 200
    a = parse("plato-cnn", ["pretrain", "--data", str(work / "ds"), "--out", "m", "--crop", "8"])
    assert a.crop_px == 8


# ------------------------------------------------------------------------ the factories
def test_factories_messages_and_values():
    assert int_in(1)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"an integer >= 1, got 0"):
        int_in(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[2, 4\], got 'x'"):
        int_in(2, 4)("x")
    f = float_in(0.0, 1.0, hi_open=True, unit="mm")
    assert f("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[0, 1\) mm, got 1"):
        f("1")
    for bad in ("nan", "inf", "-inf", "-273.15"):
        with pytest.raises(argparse.ArgumentTypeError, match="finite"):
            temperature_degC(bad)
    assert temperature_degC("-80.5") == -80.5
    assert int_list_in(0)("1, 2,") == [1, 2]
    assert output_file(make_parents=True)("/tmp/new/folders/x.json") == "/tmp/new/folders/x.json"
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        output_file()("/tmp/surely-missing-folder-plato/x.json")
    assert fix_negative_values(["--a", "-inf", "--b", "-x"]) == ["--a=-inf", "--b", "-x"]
