"""One name per quantity: the canonical names, and the deprecated ones still accepted.

The best-focus temperature is :data:`BFT_KEY` (``bft_degC``) everywhere: dataclass attributes,
JSON keys (reports, truth sidecars, model cards), dataset label columns, dataset config keys.
It used to be called ``t_bf_degC`` in many of these places.  Nothing written under the old
name stops working:

* attributes keep a read-only alias under the old name (:func:`deprecated_alias`);
* readers of files and configs written under the old name map it to the new one
  (:func:`normalise_keys` for JSON objects and configs, :func:`canonical_dtype` for label
  tables), and dicts they return still answer the old key (:class:`LegacyNameDict`).

Each use of an old name issues a :class:`DeprecationWarning` that names the new one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "BFT_KEY",
    "DEPRECATED_NAMES",
    "LegacyNameDict",
    "canonical_dtype",
    "canonical_name",
    "deprecated_alias",
    "normalise_keys",
    "warn_deprecated_name",
]

#: The best-focus temperature (TRP1, degC): attribute, JSON key, label column, config key.
BFT_KEY = "bft_degC"

#: Deprecated name -> canonical name.
DEPRECATED_NAMES: Mapping[str, str] = MappingProxyType({"t_bf_degC": BFT_KEY})


def warn_deprecated_name(old: str, new: str, where: str = "", stacklevel: int = 2) -> None:
    """Issue the :class:`DeprecationWarning` for ``old`` used in place of ``new``.

    Args:
        old: the deprecated name.
        new: the canonical name.
        where: what held the old name (a file, a class), prefixed to the message.
        stacklevel: as for :func:`warnings.warn`, counted from the caller of this function.
    """
    src = f"{where}: " if where else ""
    warnings.warn(
        f"{src}{old!r} is a deprecated name; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def canonical_name(name: str, where: str = "", stacklevel: int = 2) -> str:
    """``name``, or its canonical name when ``name`` is deprecated (then with a warning)."""
    new = DEPRECATED_NAMES.get(name)
    if new is None:
        return name
    warn_deprecated_name(name, new, where, stacklevel + 1)
    return new


def deprecated_alias(new: str, old: str) -> property:
    """A read-only property ``old`` that warns and returns attribute ``new``.

    Assigned without an annotation in a dataclass body, it is not a field: ``asdict``,
    ``replace`` and the constructor know only the canonical name.
    """

    def get(self: object) -> Any:
        warn_deprecated_name(old, new, type(self).__name__, stacklevel=2)
        return getattr(self, new)

    get.__doc__ = f"Deprecated name of ``{new}`` (read-only; warns)."
    return property(get)


class LegacyNameDict(dict):
    """A dict whose deprecated keys, when absent, read the canonical entry (with a warning).

    Returned by the readers of files that used to carry an old name, so that code written
    against the old key keeps working: ``d["t_bf_degC"]`` is ``d["bft_degC"]``.  Iteration,
    ``in``, ``len`` and JSON serialisation see only the keys actually held.
    """

    def _legacy(self, key: object) -> str | None:
        new = DEPRECATED_NAMES.get(key) if isinstance(key, str) else None
        return new if new is not None and dict.__contains__(self, new) else None

    def __missing__(self, key: object) -> Any:
        new = self._legacy(key)
        if new is None:
            raise KeyError(key)
        warn_deprecated_name(str(key), new, stacklevel=2)
        return self[new]

    def get(self, key: object, default: Any = None) -> Any:
        """``self[key]`` when present (deprecated keys included), else ``default``."""
        if not dict.__contains__(self, key):
            new = self._legacy(key)
            if new is not None:
                warn_deprecated_name(str(key), new, stacklevel=2)
                return self[new]
        return super().get(key, default)


def normalise_keys(
    mapping: Mapping[str, Any], where: str = "", stacklevel: int = 2
) -> LegacyNameDict:
    """A copy of ``mapping`` with its deprecated keys renamed to the canonical ones.

    The order of the keys is kept.  Each renamed key issues a :class:`DeprecationWarning`
    naming ``where`` (a file, a config section).  When both names are present, the canonical
    entry wins and the old one is dropped.  Only the top level is renamed.

    Args:
        mapping: a JSON object, a config section.
        where: what ``mapping`` was read from, for the warning.
        stacklevel: as for :func:`warnings.warn`, counted from the caller of this function.

    Returns:
        A :class:`LegacyNameDict` (a plain dict that still answers the old keys).
    """
    out = LegacyNameDict()
    for key, value in mapping.items():
        new = DEPRECATED_NAMES.get(key) if isinstance(key, str) else None
        if new is None:
            out[key] = value
            continue
        warn_deprecated_name(key, new, where, stacklevel + 1)
        if new not in mapping:
            out[new] = value
    return out


def canonical_dtype(dtype: np.dtype) -> np.dtype | None:
    """``dtype`` with its deprecated field names renamed, or None when none is deprecated.

    The layout (formats, offsets, item size) is unchanged, so ``array.view(new)`` renames the
    columns of a structured array without a copy.  A deprecated field whose canonical name is
    also present keeps its old name.
    """
    names = dtype.names
    if not names or not any(n in DEPRECATED_NAMES for n in names):
        return None

    def rename(n: str) -> str:
        new = DEPRECATED_NAMES.get(n)
        return n if new is None or new in names else new

    new_names = [rename(n) for n in names]
    if new_names == list(names):
        return None
    return np.dtype(
        {
            "names": new_names,
            "formats": [dtype.fields[n][0] for n in names],
            "offsets": [dtype.fields[n][1] for n in names],
            "itemsize": dtype.itemsize,
        }
    )
