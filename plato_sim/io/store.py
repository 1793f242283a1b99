"""Dataset storage: chunked, compressed HDF5 shards, a JSON manifest, checksums, a lazy reader.

Layout of a dataset folder::

    DIR/manifest.json              config, package and library versions, seed, shards + sha256
    DIR/cameras.json (+ .sha256)   the camera pool (plato_sim.scenes.dataset.CameraEntry)
    DIR/shard-00000.h5 (+ .sha256) one shard: /stamps (N, S, S) float32, /labels (N,) compound

Crash safety: a shard is written under a temporary name in the same folder, flushed to disk,
its SHA-256 written to ``<shard>.sha256``, and only then renamed to its final name (an atomic
rename on POSIX): a visible shard is complete.  A shard is valid when its file hashes to its
sidecar; anything else (missing sidecar, truncated or corrupt file) is regenerated on resume.

Bit-identical files: HDF5 object timestamps are disabled (``track_times=False``), the format
version bounds are fixed, and labels are one compound dataset (no groups, whose creation
times HDF5 would record).  The same arrays then give the same bytes.

Label names: shards written by earlier versions may carry a label under a deprecated name
(``t_bf_degC`` for ``bft_degC``, :mod:`plato_sim.names`); :func:`read_shard` and
:class:`ShardedDataset` return it under the canonical name, with a :class:`DeprecationWarning`.

Reading: :class:`ShardedDataset` opens each HDF5 file lazily, once per process, and re-opens
after a fork (an open h5py handle must never cross a fork), so one instance can be handed to
the worker processes of a torch ``DataLoader``.  ``__getitem__`` returns plain numpy arrays
and a dict of labels; ``plato_cnn`` wraps it in a torch ``Dataset``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from plato_sim.errors import DataError
from plato_sim.names import canonical_dtype, canonical_name, warn_deprecated_name

__all__ = [
    "SHARD_FORMAT",
    "MANIFEST_NAME",
    "CAMERAS_NAME",
    "shard_name",
    "sha256_file",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_shard",
    "read_shard",
    "read_sidecar",
    "shard_is_valid",
    "read_manifest",
    "ShardedDataset",
    "export_fits",
]

SHARD_FORMAT = "plato-focus-dataset-shard/1"
MANIFEST_NAME = "manifest.json"
CAMERAS_NAME = "cameras.json"
SIDECAR_SUFFIX = ".sha256"
_LIBVER = ("earliest", "v110")  # fixed format bounds: same bytes across h5py/HDF5 defaults
_CHUNK_SAMPLES = 256  # samples per HDF5 chunk: ~1 MB of float32 32x32 stamps


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{int(index):05d}.h5"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def write_shard(
    path: str | Path, stamps: np.ndarray, labels: np.ndarray, attrs: dict | None = None
) -> str:
    """Write one shard atomically; returns its SHA-256 (also written to ``<path>.sha256``).

    Args:
        path: final file name.
        stamps: ``(N, S, S)`` float32 stamps.
        labels: ``(N,)`` structured array.
        attrs: JSON-able metadata stored as the root attribute ``meta`` (JSON text).
    """
    path = Path(path)
    stamps = np.ascontiguousarray(stamps, dtype=np.float32)
    if stamps.ndim != 3 or labels.shape != (stamps.shape[0],):
        raise DataError(
            f"{path}: stamps must be (N, S, S) and labels (N,), "
            f"got {stamps.shape} and {labels.shape}"
        )
    tmp = _tmp_path(path)
    n = stamps.shape[0]
    with h5py.File(tmp, "w", libver=_LIBVER) as f:
        f.attrs["format"] = SHARD_FORMAT
        f.attrs["meta"] = json.dumps(attrs or {}, sort_keys=True)
        f.create_dataset(
            "stamps",
            data=stamps,
            chunks=(min(n, _CHUNK_SAMPLES),) + stamps.shape[1:],
            compression="gzip",
            compression_opts=4,
            shuffle=True,
            track_times=False,
        )
        # Flush each dataset as soon as it is written: otherwise its chunk stays in HDF5's
        # cache until the dataset's handle is closed, whose moment depends on Python's garbage
        # collection, and the file layout (stamps or labels first) changed from run to run:
        # same data, different bytes, different SHA-256 (seen 3 times in 8 test runs).
        f.flush()
        f.create_dataset(
            "labels",
            data=labels,
            chunks=(min(n, 4 * _CHUNK_SAMPLES),),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
            track_times=False,
        )
        f.flush()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    digest = sha256_file(tmp)
    write_bytes_atomic(Path(str(path) + SIDECAR_SUFFIX), (digest + "\n").encode())
    os.replace(tmp, path)
    return digest


def read_sidecar(path: str | Path) -> str | None:
    """The SHA-256 recorded next to ``path``, or None."""
    side = Path(str(path) + SIDECAR_SUFFIX)
    try:
        return side.read_text().strip() or None
    except OSError:
        return None


def shard_is_valid(path: str | Path, expected_sha256: str | None = None) -> bool:
    """True when the shard exists and hashes to its sidecar (and to ``expected_sha256``)."""
    path = Path(path)
    if not path.is_file():
        return False
    recorded = read_sidecar(path)
    if recorded is None or (expected_sha256 is not None and recorded != expected_sha256):
        return False
    return sha256_file(path) == recorded


def read_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a whole shard: ``(stamps, labels, meta)`` (labels under their canonical names)."""
    try:
        with h5py.File(path, "r") as f:
            _check_format(f, path)
            labels = f["labels"][...]
            stamps, meta = f["stamps"][...], json.loads(f.attrs["meta"])
    except OSError as exc:
        raise OSError(f"{path}: cannot read the shard ({exc})") from exc
    renamed = _renamed_labels(labels.dtype, path, stacklevel=2)
    return stamps, (labels.view(canonical_dtype(labels.dtype)) if renamed else labels), meta


def _renamed_labels(dtype: np.dtype, path, stacklevel: int = 2) -> dict[str, str]:
    """``{stored: canonical}`` for the labels of a shard stored under a deprecated name
    (shards of earlier versions; each issues a :class:`DeprecationWarning`)."""
    new = canonical_dtype(dtype)
    if new is None:
        return {}
    out = {a: b for a, b in zip(dtype.names, new.names, strict=True) if a != b}
    for a, b in out.items():
        warn_deprecated_name(a, b, f"{path}: label", stacklevel + 1)
    return out


def _check_format(f: h5py.File, path) -> None:
    fmt = f.attrs.get("format")
    if fmt != SHARD_FORMAT:
        raise DataError(f"{path}: not a plato-focus shard (format {fmt!r})")


def read_manifest(root: str | Path) -> dict:
    """The manifest of a dataset folder, its shard list checked.

    Raises:
        FileNotFoundError: no manifest.
        OSError: the manifest cannot be read.
        ValueError: not UTF-8 JSON, or not a manifest: not an object, no or an empty
            ``shards`` list, a shard entry without a plain file name or an integer ``n >= 1``.
    """
    p = Path(root) / MANIFEST_NAME
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{p}: no manifest; is {root} a dataset folder?") from exc
    except OSError as exc:
        raise OSError(f"{p}: cannot read the manifest ({exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # both ValueErrors
        raise DataError(f"{p}: corrupt manifest ({exc})") from exc
    _check_manifest(p, m)
    return m


def _check_manifest(p: Path, m: object) -> None:
    """Raise ValueError naming ``p`` unless ``m`` has a usable shard list."""
    if not isinstance(m, dict):
        raise DataError(f"{p}: corrupt manifest (a JSON {type(m).__name__}, not an object)")
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards:
        raise DataError(f"{p}: corrupt manifest (no 'shards' list, or an empty one)")
    for k, s in enumerate(shards):
        name = s.get("file") if isinstance(s, dict) else None
        n = s.get("n") if isinstance(s, dict) else None
        if not (
            isinstance(name, str)
            and name not in ("", "..")
            and name == Path(name).name
            and "\x00" not in name
        ):
            raise DataError(f"{p}: corrupt manifest (shard {k}: 'file' must be a file name)")
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise DataError(f"{p}: corrupt manifest (shard {k}: 'n' must be an integer >= 1)")


class ShardedDataset:
    """Lazy, fork-safe random access to the samples of a dataset folder.

    ``ds[i]`` returns ``(stamp, labels)``: a ``(S, S)`` float32 array (electrons above the
    closed-shutter level) and a dict of numpy scalars (see
    :data:`plato_sim.scenes.dataset.LABEL_FIELDS`).  Nothing is read at construction but the
    manifest; each process opens the shard files it touches on first use and keeps them open.

    Args:
        root: dataset folder (with ``manifest.json``).
        require_complete: refuse a dataset whose generation has not finished.
    """

    def __init__(self, root: str | Path, require_complete: bool = True) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if require_complete and self.manifest.get("status") != "complete":
            raise DataError(
                f"{self.root}: dataset generation is not complete "
                f"(status {self.manifest.get('status')!r}); rerun the same generate command"
            )
        shards = self.manifest["shards"]
        self.files = [self.root / s["file"] for s in shards]
        counts = np.array([int(s["n"]) for s in shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self._handles: dict[int, h5py.File] = {}
        #: per shard, ``{stored: canonical}`` for labels stored under a deprecated name
        self._renamed: dict[int, dict[str, str]] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _file(self, k: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._handles = {}
            self._pid = os.getpid()
        f = self._handles.get(k)
        if f is None:
            try:
                f = h5py.File(self.files[k], "r")
            except OSError as exc:
                raise OSError(f"{self.files[k]}: cannot open the shard ({exc})") from exc
            try:
                _check_format(f, self.files[k])
                n = int(self.offsets[k + 1] - self.offsets[k])
                for name in ("stamps", "labels"):
                    d = f.get(name)
                    if not isinstance(d, h5py.Dataset) or d.shape[:1] != (n,):
                        raise DataError(
                            f"{self.files[k]}: shard does not hold the {n} {name} "
                            "its manifest lists; rerun the generate command to repair it"
                        )
                self._renamed[k] = _renamed_labels(f["labels"].dtype, self.files[k], 3)
            except Exception:
                f.close()
                raise
            self._handles[k] = f
        return f

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, row)`` of global sample ``index`` (negative indices count from the end)."""
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return k, i - int(self.offsets[k])

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict]:
        k, r = self.locate(index)
        f = self._file(k)
        stamp = f["stamps"][r]
        row = f["labels"][r]
        ren = self._renamed.get(k, {})
        return stamp, {ren.get(name, name): row[name] for name in row.dtype.names}

    def label_column(self, name: str) -> np.ndarray:
        """One label for every sample (reads only the label datasets).

        ``name`` is a label's canonical name (a deprecated one is accepted with a warning).
        """
        name = canonical_name(name, "label", stacklevel=2)
        cols = []
        for k in range(len(self.files)):
            labels = self._file(k)["labels"]
            stored = {b: a for a, b in self._renamed.get(k, {}).items()}.get(name, name)
            cols.append(labels.fields(stored)[...])
        return np.concatenate(cols) if cols else np.empty(0)

    def labels(self) -> np.ndarray:
        """All labels as one structured array (small: ~300 bytes per sample)."""
        parts = []
        for k in range(len(self.files)):
            lab = self._file(k)["labels"][...]
            parts.append(lab.view(canonical_dtype(lab.dtype)) if self._renamed.get(k) else lab)
        return np.concatenate(parts)

    def close(self) -> None:
        """Close the open files of this process."""
        for f in self._handles.values():
            f.close()
        self._handles = {}

    def __del__(self) -> None:
        try:
            if os.getpid() == self._pid:
                self.close()
        except Exception:  # interpreter shutdown: nothing left to close cleanly
            pass


def export_fits(
    dataset: ShardedDataset, indices: Sequence[int], out: str | Path, overwrite: bool = True
) -> Path:
    """Write chosen samples to one FITS file (one image extension each) for DS9.

    Each extension ``SAMPLE<i>`` holds the float32 stamp (electrons above the closed-shutter level)
    with every label in its header (``HIERARCH`` keys).
    """
    from astropy.io import fits

    hdus = [fits.PrimaryHDU()]
    hdus[0].header["HIERARCH dataset"] = str(dataset.root)
    for i in indices:
        stamp, lab = dataset[int(i)]
        h = fits.ImageHDU(stamp, name=f"SAMPLE{int(i)}")
        h.header["BUNIT"] = ("electron", "above the mean closed-shutter frame")
        h.header["INDEX"] = (int(i), "global sample index")
        for k, v in lab.items():
            h.header[f"HIERARCH {k}"] = v.item() if hasattr(v, "item") else v
        hdus.append(h)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(out, overwrite=overwrite)
    return out
