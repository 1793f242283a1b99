"""No command changes its inputs: a snapshot of every input before and after each call.

Used by the autouse fixture ``_inputs_untouched`` of ``tests/conftest.py`` around every
``plato-sim`` and ``plato-cnn`` call of the suite, in-process or in a subprocess.

A snapshot of an input path records, for it and (for a folder) every entry below it, without
following links inside it: a regular file's SHA-256, size, mtime_ns and mode; a folder's
mtime_ns and mode (an entry added, removed or renamed in it changes its mtime); a link's
target; the kind of anything else (FIFO, device: never opened).  The set of names is part of
it, so a file written into an input folder shows as ``added``.  A path that does not exist is
recorded as absent, so a command that creates it is caught too.

:func:`cli_inputs` names the inputs of each subcommand from its parsed arguments.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plato_cnn import cli as cnn_cli
from plato_sim import cli as sim_cli
from plato_sim.clitools import fix_negative_values

PARSERS = {"plato-sim": sim_cli._parser, "plato-cnn": cnn_cli._parser}
MODULES = {"plato_sim.cli": "plato-sim", "plato_cnn.cli": "plato-cnn"}

#: the built-in dataset config, read by every ``plato-sim generate``
DEFAULT_DATASET_YAML = Path(sim_cli.__file__).parent / "data" / "default_dataset.yaml"
#: the models shipped with the package, read when ``--model`` is not given
DEFAULT_MODEL = Path(cnn_cli.__file__).parent / "data" / "default_model"
DEFAULT_FIELD_HEAD = Path(cnn_cli.__file__).parent / "data" / "default_field_head"
INORBIT_MODEL = Path(cnn_cli.__file__).parent / "data" / "inorbit_model"


class InputChanged(AssertionError):
    """A command changed a byte, an mtime or the set of files of one of its inputs."""


@dataclass(frozen=True)
class Watched:
    """An input path; ``may_change``: names below it that the command writes by design.

    A non-empty ``may_change`` also lets the folder's own mtime change (an atomic rewrite
    of a file in it creates and renames a temporary file there).
    """

    path: Path
    may_change: frozenset[str] = field(default_factory=frozenset)


# ----------------------------------------------------------------------------- snapshots
def _sha256(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:  # unreadable: size, mtime and mode still compared
        return f"unreadable ({type(exc).__name__})"


def _state(path: Path, st: os.stat_result) -> tuple:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return ("file", st.st_size, st.st_mtime_ns, mode, _sha256(path))
    if stat.S_ISDIR(st.st_mode):
        return ("folder", st.st_mtime_ns, mode)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    return ("special", stat.S_IFMT(st.st_mode), st.st_mtime_ns, mode)


def snapshot(path: str | Path) -> dict[str, tuple]:
    """Relative name (``.``: the path itself) -> state of every entry at and below ``path``.

    The path itself is followed if it is a link (a campaign given through a link); links
    below it are recorded, not followed.
    """
    root = Path(path)
    try:
        st = os.stat(root)
    except OSError:  # missing, or a link that does not resolve (dangling, a loop)
        try:
            return {".": _state(root, os.lstat(root))}
        except FileNotFoundError:
            return {".": ("absent",)}
    out = {".": _state(root, st)}
    if not stat.S_ISDIR(st.st_mode):
        return out
    todo = [root]
    while todo:
        folder = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            out[os.path.relpath(folder, root) + "/"] = ("unlistable", type(exc).__name__)
            continue
        for e in entries:
            p = Path(e.path)
            try:
                lst = e.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since the listing: absent from the snapshot
                continue
            out[os.path.relpath(p, root)] = _state(p, lst)
            if stat.S_ISDIR(lst.st_mode):
                todo.append(p)
    return out


def _describe(old: tuple, new: tuple) -> str:
    if old[0] == "absent":
        return f"created (a {new[0]})"
    if new[0] == "absent":
        return f"deleted (was a {old[0]})"
    if old[0] != new[0]:
        return f"was a {old[0]}, now a {new[0]}"
    if old[0] == "file":
        parts = []
        if old[4] != new[4]:
            parts.append(f"bytes changed (sha256 {old[4][:12]} -> {new[4][:12]})")
        if old[1] != new[1]:
            parts.append(f"size {old[1]} -> {new[1]}")
        if old[2] != new[2]:
            parts.append(f"mtime_ns {old[2]} -> {new[2]}")
        if old[3] != new[3]:
            parts.append(f"mode {old[3]:o} -> {new[3]:o}")
        return ", ".join(parts)
    if old[0] == "link":
        return f"link target {old[1]} -> {new[1]}"
    if old[0] == "folder":
        parts = []
        if old[1] != new[1]:
            parts.append(f"folder mtime_ns {old[1]} -> {new[1]} (an entry written or removed)")
        if old[2] != new[2]:
            parts.append(f"mode {old[2]:o} -> {new[2]:o}")
        return ", ".join(parts)
    return f"{old} -> {new}"


def differences(before: dict[str, tuple], after: dict[str, tuple], watched: Watched) -> list[str]:
    """One line per entry that differs, less the changes ``watched.may_change`` allows."""
    lines = []
    allowed = watched.may_change
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name in allowed and new is not None:  # written by design (added or rewritten)
            continue
        if name == "." and allowed and old and new and old[0] == new[0] == "folder":
            if old[2] == new[2]:  # only its mtime: the by-design rewrite of an entry
                continue
        if old is None:
            lines.append(f"added: {name} ({new[0]})")
        elif new is None:
            lines.append(f"removed: {name} ({old[0]})")
        else:
            lines.append(f"changed: {name}: {_describe(old, new)}")
    return lines


class InputGuard:
    """Snapshots of ``watched`` taken now; :meth:`check` raises if any changed since."""

    def __init__(self, what: str, watched: Sequence[Watched]) -> None:
        self.what = what
        self.watched = list(watched)
        self.before = [snapshot(w.path) for w in self.watched]

    def check(self) -> None:
        report = []
        for w, before in zip(self.watched, self.before, strict=True):
            lines = differences(before, snapshot(w.path), w)
            if lines:
                report.append(f"  input {w.path}:")
                report += [f"    {ln}" for ln in lines]
        if report:
            raise InputChanged(f"{self.what} changed its input(s):\n" + "\n".join(report))


@contextlib.contextmanager
def guard_inputs(what: str, watched: Sequence[Watched | str | Path]) -> Iterator[InputGuard]:
    """Run the ``with`` body; raise :class:`InputChanged` if it changed any ``watched`` path."""
    items = [w if isinstance(w, Watched) else Watched(Path(w)) for w in watched]
    guard = InputGuard(what, items)
    try:
        yield guard
    finally:
        guard.check()


# ----------------------------------------------------------------------------- the commands
def cli_inputs(prog: str, args, cwd: str | Path | None = None) -> list[Watched]:
    """The input paths of one parsed command line (``args.command`` of ``prog``).

    Outputs (``--out``, ``--json``, ``--plot``, ``--out-dir``, ``--gallery``, ``--fits``,
    ``--workdir``) are not inputs; an output named inside an input is refused by the
    command, and the input stays guarded whole.  Written by design, so not guarded:
    ``plato-cnn calibrate`` and ``calibrate-residual`` update ``model.json`` of their
    ``--model`` and ``plato-cnn plateau-head`` writes ``model.json`` and
    ``plateau_head.safetensors`` there (their documented purpose; the rest of that folder,
    the network's weights, stays guarded, and all of it with ``--dry-run``).
    """
    base = Path(cwd or os.getcwd())

    def w(p, *may_change: str) -> list[Watched]:
        if p is None:
            return []
        p = Path(p)
        return [Watched(p if p.is_absolute() else base / p, frozenset(may_change))]

    cmd = args.command
    if prog == "plato-sim":
        if cmd == "psf":
            return w(args.camera_yaml)
        if cmd == "generate":
            return w(args.config) + w(DEFAULT_DATASET_YAML)
        if cmd == "info":
            return w(args.dir)
        if cmd in ("campaign", "imagettes"):
            return []  # no input: --out is the only path
    if prog == "plato-cnn":
        if cmd == "bft":
            model = args.model or (DEFAULT_MODEL if args.method in ("cnn", "field") else None)
            reads_head = args.method == "field" or args.field_head_fallback
            head = args.field_head or (DEFAULT_FIELD_HEAD if reads_head else None)
            return (
                [x for d in args.campaign_dir for x in w(d)]
                + w(model)
                + w(head)
                + w(getattr(args, "offset_correction", None))
            )
        if cmd == "pretrain":
            return w(args.data)  # --out: the model folder written (and resumed)
        if cmd == "finetune":
            campaigns = [x for d in args.campaign for x in w(d)]
            reports = [x for r in (args.forward_json or ()) for x in w(r)]
            return campaigns + w(args.model or DEFAULT_MODEL) + w(args.synthetic) + reports
        if cmd == "offset-correction":
            one = args.campaign if isinstance(args.campaign, list) else [args.campaign]
            campaigns = [x for d in one for x in w(d)]
            return campaigns + w(args.forward_json) + w(args.model or DEFAULT_MODEL)
        if cmd in ("calibrate", "calibrate-residual"):
            return w(args.model, *(() if args.dry_run else ("model.json",)))
        if cmd == "plateau-head":
            by_design = () if args.dry_run else ("model.json", "plateau_head.safetensors")
            return w(args.model, *by_design)
        if cmd == "field-head":
            # --out: the head written (and, with --calibrate alone, its card updated);
            # --cache: calibration campaigns emulated where missing
            return w(args.dataset) + w(args.model or DEFAULT_MODEL) + w(args.family_reference)
        if cmd == "field-head-finetune":
            # --out: the head written; --workdir: the variants' campaigns (kept)
            campaigns = [x for d in args.campaign for x in w(d)]
            reports = [x for r in (args.forward_json or ()) for x in w(r)]
            head = w(args.field_head or DEFAULT_FIELD_HEAD)
            return campaigns + reports + head + w(args.model or DEFAULT_MODEL)
        if cmd == "focus-check":
            ground = w(getattr(args, "ground_calibration", None))
            forward = w(getattr(args, "forward_json", None))
            return w(args.imagettes) + w(args.model or INORBIT_MODEL) + ground + forward
        if cmd == "ground-calibration":
            one = args.campaign if isinstance(args.campaign, list) else [args.campaign]
            campaigns = [x for d in one for x in w(d)]
            return campaigns + w(args.forward_json) + w(args.model or INORBIT_MODEL)
    raise InputChanged(
        f"{prog} {cmd}: its inputs are not listed in tests/input_guard.py:cli_inputs; add them"
    )


def guarded_run_command(original: Callable) -> Callable:
    """``run_command(prog, args)`` that fails if the command changed one of its inputs."""

    def run_command(prog: str, args):
        guard = InputGuard(f"{prog} {args.command}", cli_inputs(prog, args))
        try:
            return original(prog, args)
        finally:
            guard.check()

    return run_command


# ----------------------------------------------------------------------------- subprocesses
def cli_argv(argv) -> tuple[str, list[str]] | None:
    """``(prog, its arguments)`` if ``argv`` runs one of the two command lines, else None.

    Recognised: the console scripts (``plato-sim ...``), ``python -m plato_sim.cli ...`` and
    ``python -c "...plato_sim.cli import main...; main()" ...``.
    """
    if isinstance(argv, (str, bytes, os.PathLike)):
        return None
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in argv]
    if not argv or not all(isinstance(a, str) for a in argv):
        return None
    name = Path(argv[0]).name
    if name in PARSERS:
        return name, argv[1:]
    for i, a in enumerate(argv[1:-1], start=1):
        if a == "-m" and argv[i + 1] in MODULES:
            return MODULES[argv[i + 1]], argv[i + 2 :]
        if a == "-c":
            code = argv[i + 1]
            for module, prog in MODULES.items():
                if module in code and re.search(r"\bmain\(", code):
                    return prog, argv[i + 2 :]
            return None
    return None


def parse_cli(prog: str, argv: list[str]):
    """The parsed arguments, or None where the command would stop at a usage error."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return PARSERS[prog]().parse_args(fix_negative_values(list(argv)))
    except SystemExit:
        return None


def popen_guard(argv, cwd=None) -> InputGuard | None:
    """An :class:`InputGuard` on the inputs of a command line started as a subprocess."""
    found = cli_argv(argv)
    if found is None:
        return None
    prog, rest = found
    args = parse_cli(prog, rest)
    if args is None:
        return None
    cmd = " ".join([prog, *rest])
    return InputGuard(f"{cmd} (subprocess)", cli_inputs(prog, args, cwd))


def guard_popen(popen_cls, pending: list) -> dict[str, Callable]:
    """Replacements of ``Popen.__init__`` and ``Popen.wait``: a command line's inputs are
    snapshotted at its start and compared once it has ended (its first completed ``wait``,
    which ``subprocess.run`` makes too).  Started processes go to ``pending``.
    """
    init, wait = popen_cls.__init__, popen_cls.wait

    def __init__(self, args, *a, **kw):
        guard = popen_guard(args, kw.get("cwd"))
        init(self, args, *a, **kw)
        if guard is not None:
            self._plato_input_guard = guard
            pending.append(self)

    def wait_(self, *a, **kw):
        rc = wait(self, *a, **kw)
        guard = self.__dict__.pop("_plato_input_guard", None)
        if guard is not None:
            guard.check()
        return rc

    return {"__init__": __init__, "wait": wait_}


def check_pending(pending: list) -> None:
    """Compare the inputs of started command lines that ended unwaited for."""
    for proc in pending:
        if proc.poll() is not None:
            guard = proc.__dict__.pop("_plato_input_guard", None)
            if guard is not None:
                guard.check()
