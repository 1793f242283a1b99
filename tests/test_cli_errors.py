"""Bad dataset folders: one clear line naming the file, exit status 2, no traceback.

``plato-sim generate`` into a folder whose manifest is corrupt or not a JSON object, and
``plato-sim info`` on a dataset whose shard cannot be read or whose outputs cannot be written.
The datasets are tiny folders written directly (``tests/dataset_builder.py``, no physics).
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from dataset_builder import write_tiny_dataset

from plato_sim import cli
from plato_sim.generate import generate
from plato_sim.io.store import MANIFEST_NAME, shard_name


@pytest.fixture()
def tiny_dataset(tmp_path) -> Path:
    """A complete two-shard dataset folder of 16 samples."""
    return write_tiny_dataset(tmp_path / "ds")


def _one_line_exit(argv: list[str]) -> str:
    """Run ``plato-sim ARGV`` in-process: exit status 2 and one line on stderr (returned)."""
    buf = io.StringIO()
    with redirect_stderr(buf):
        rc = cli.main(argv)
    msg = buf.getvalue()
    assert rc == 2, f"exit status {rc!r} instead of 2"
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg
    return msg.rstrip("\n")


# ------------------------------------------------------------------------ generate: manifest
@pytest.mark.parametrize(
    "content, says",
    [
        ("{not json", "corrupt manifest"),
        ("[1, 2, 3]", "a JSON list, not an object"),
        ('"text"', "a JSON str, not an object"),
        (b"\xff\xfe{}", "corrupt manifest"),
    ],
)
def test_generate_refuses_a_corrupt_manifest_naming_it(tmp_path, content, says):
    manifest = tmp_path / MANIFEST_NAME
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        manifest.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as ei:
        generate(tmp_path, n=4, workers=1, progress=False)
    assert str(manifest) in str(ei.value) and says in str(ei.value)
    assert "delete the folder" in str(ei.value)
    msg = _one_line_exit(["generate", "--out", str(tmp_path), "--n", "4", "--workers", "1"])
    assert msg.startswith("plato-sim generate: ") and str(manifest) in msg and says in msg
    assert manifest.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_generate_refuses_a_manifest_it_cannot_read(tmp_path):
    (tmp_path / MANIFEST_NAME).mkdir()  # a folder where the manifest should be
    msg = _one_line_exit(["generate", "--out", str(tmp_path), "--n", "4", "--workers", "1"])
    assert str(tmp_path / MANIFEST_NAME) in msg and "cannot read the manifest" in msg


# ------------------------------------------------------------------------ info
def test_info_on_an_intact_dataset(tiny_dataset, tmp_path, capsys):
    """The baseline the damaged cases depart from: exit 0, counts printed, a gallery."""
    assert cli.main(["info", str(tiny_dataset), "--gallery", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert "n_samples: 16" in out and (tmp_path / "g.png").is_file()


def test_info_unreadable_shard_is_one_line(tiny_dataset):
    bad = tiny_dataset / shard_name(1)
    bad.write_bytes(b"not an HDF5 file" * 64)  # same name, unreadable content
    msg = _one_line_exit(["info", str(tiny_dataset)])
    assert msg.startswith("plato-sim info: ") and str(bad) in msg and "cannot open" in msg


def test_info_unwritable_outputs_are_one_line(tiny_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    for opt in ("--gallery", "--json", "--fits"):
        msg = _one_line_exit(["info", str(tiny_dataset), opt, str(blocker / "x")])
        assert msg.startswith("plato-sim info: ") and str(blocker) in msg, opt


def test_info_sample_index_out_of_range_is_one_line(tiny_dataset, tmp_path):
    fits = str(tmp_path / "s.fits")
    msg = _one_line_exit(["info", str(tiny_dataset), "--fits", fits, "--indices", "0,99"])
    assert "99 out of range for 16 samples" in msg


def test_info_corrupt_manifest_is_one_line(tiny_dataset):
    (tiny_dataset / MANIFEST_NAME).write_text(json.dumps({"shards": []}), encoding="utf-8")
    msg = _one_line_exit(["info", str(tiny_dataset)])
    assert str(tiny_dataset / MANIFEST_NAME) in msg and "corrupt manifest" in msg


# ------------------------------------------------------------------------ pretrain: damaged data
def _pretrain_fails(ds: Path, tmp_path: Path, says: str) -> None:
    from plato_cnn import cli as cnn_cli

    buf = io.StringIO()
    argv = ["pretrain", "--data", str(ds), "--out", str(tmp_path / "m"), "--epochs", "1"]
    with redirect_stderr(buf):
        rc = cnn_cli.main(argv)
    text = buf.getvalue()
    errors = [m for m in text.splitlines() if m.startswith("plato-cnn pretrain: ")]
    # progress bars may come first; the error is one line and the last
    assert rc == 2 and len(errors) == 1 and says in errors[0], text
    assert text.strip().splitlines()[-1] == errors[0] and "Traceback" not in text
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_pretrain_refuses_a_shard_that_fails_its_checksum(tiny_dataset, tmp_path):
    shard = tiny_dataset / shard_name(1)
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside the file
    shard.write_bytes(bytes(data))
    _pretrain_fails(tiny_dataset, tmp_path, "do not match their checksums")


def test_pretrain_refuses_nan_labels(tmp_path):
    ds = write_tiny_dataset(tmp_path / "ds", damage="nan_label")
    _pretrain_fails(ds, tmp_path, "non-finite values")


def test_pretrain_stops_on_nan_stamps(tmp_path):
    ds = write_tiny_dataset(tmp_path / "ds", damage="nan_stamp", size_px=32)
    _pretrain_fails(ds, tmp_path, "non-finite stamps")


def test_pretrain_patience_reaches_the_training(tmp_path):
    """``--patience`` is the early stopping of the run (recorded in the model card)."""
    from plato_cnn import cli as cnn_cli

    ds = write_tiny_dataset(tmp_path / "ds")
    out = tmp_path / "m"
    argv = ["pretrain", "--data", str(ds), "--out", str(out), "--epochs", "2", "--patience",
            "1", "--crop-px", "8", "--deterministic"]  # fmt: skip
    with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
        assert cnn_cli.main(argv) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["train_config"]["patience"] == 1


def test_finetune_variants_need_resimulate(tmp_path):
    """``plato-cnn finetune --variants N`` without ``--resimulate``: one line, exit 2, before
    any campaign is read (the folder given holds none)."""
    from plato_cnn import cli as cnn_cli

    buf = io.StringIO()
    argv = ["finetune", "--campaign", str(tmp_path), "--out", str(tmp_path / "ft"),
            "--variants", "2"]  # fmt: skip
    with redirect_stderr(buf), redirect_stdout(io.StringIO()):
        assert cnn_cli.main(argv) == 2
    assert "--variants needs --resimulate" in buf.getvalue()
    assert len(buf.getvalue().splitlines()) == 1
    assert not (tmp_path / "ft").exists()
