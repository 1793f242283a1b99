"""Test-session settings shared by every test module."""

import os
import sys
from pathlib import Path

# One BLAS thread, as CI runs (.ci/run): threaded BLAS can change the last bits of results
# between runs, and several tests compare generated files bit for bit.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# tests/campaign_builder.py is a helper module shared by several test files
sys.path.insert(0, str(Path(__file__).parent))


# Every campaign report any test writes through plato_cnn.report.write_json is validated
# against the shipped JSON Schema (plato_cnn/data/report.schema.json) as it is written.
import jsonschema  # noqa: E402
import pytest  # noqa: E402

import plato_cnn.report as _report  # noqa: E402

_VALIDATED: list[str] = []


@pytest.fixture(autouse=True)
def _validate_reports(monkeypatch):
    schema = _report.report_schema()
    original = _report.write_json

    def checked(path, report):
        out = original(path, report)
        if "schema_version" in report:  # a campaign report (not a focus-check summary)
            import json

            jsonschema.validate(json.loads(Path(out).read_text(encoding="utf-8")), schema)
            _VALIDATED.append(str(out))
        return out

    monkeypatch.setattr(_report, "write_json", checked)
    yield


# Every command line any test runs is checked against changing its inputs.
import subprocess  # noqa: E402

import input_guard  # noqa: E402

from plato_cnn import cli as _cnn_cli  # noqa: E402
from plato_sim import cli as _sim_cli  # noqa: E402


@pytest.fixture(autouse=True)
def _inputs_untouched(monkeypatch):
    """No ``plato-sim`` or ``plato-cnn`` call of a test changes a byte or an mtime of an input.

    In-process calls: both commands end in ``run_command(prog, args)`` (the module attribute
    that each ``cli.main`` calls), wrapped here.  Subprocesses: ``subprocess.Popen`` (which
    ``subprocess.run`` uses) recognises the console scripts, ``python -m plato_*.cli`` and
    ``python -c "...plato_*.cli import main..."``, parses the argument list with the
    command's own parser and snapshots the inputs before the start; they are compared at the
    first completed ``wait()`` (a killed ``generate`` included) or, for a process that ended
    unwaited for, when the test ends.  A command line started by a program that a test runs
    (the benchmark runner's own subprocesses) is outside this process and not checked.

    The inputs of each subcommand are listed in ``input_guard.cli_inputs``: positional
    campaign, dataset and imagette paths, ``--model`` (the shipped model where it is the
    default), ``--camera-yaml``, ``--config`` (and the built-in dataset config), ``--data``,
    ``--campaign``, ``--synthetic``.  Each is snapshotted whole: SHA-256, size, mtime_ns and
    mode of every file, mtime of every folder, the set of names (a file written into an input
    folder is caught).  Exempt, because the command's documented purpose is to write them:
    ``model.json`` of ``plato-cnn calibrate --model`` and ``model.json`` plus
    ``plateau_head.safetensors`` of ``plato-cnn plateau-head --model`` (not with
    ``--dry-run``); the rest of that model folder stays guarded.  Outputs (``--out``,
    ``--json``, ``--plot``, ``--out-dir``, ``--gallery``, ``--fits``, ``--workdir``) are not
    inputs.  A change fails the test with ``input_guard.InputChanged`` listing each entry.
    """
    for mod in (_sim_cli, _cnn_cli):
        monkeypatch.setattr(mod, "run_command", input_guard.guarded_run_command(mod.run_command))
    pending: list = []
    for name, fn in input_guard.guard_popen(subprocess.Popen, pending).items():
        monkeypatch.setattr(subprocess.Popen, name, fn)
    yield
    input_guard.check_pending(pending)
