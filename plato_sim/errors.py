"""The project's errors and warnings: one family, so that a caller catches one base class.

Every error the library raises on purpose derives from :class:`PlatoFocusError`; the command
lines turn any of them into one line on stderr and exit status 2.  The subclasses also derive
from the built-in class a caller would naturally catch (``ValueError`` for a bad value or a bad
file, ``RuntimeError`` for an input that cannot be used at all), so older ``except
ValueError`` code keeps working.  Messages name the value and, where there is one, the
allowed range.

Hierarchy::

    PlatoFocusError
    ├── ParameterError        (ValueError)   an argument outside its allowed range
    ├── DataError             (ValueError)   a dataset or input file that cannot be used
    ├── FormatError           (ValueError)   a campaign file breaks format v1
    │                                         (defined in plato_sim.io.campaign_format)
    ├── ImagetteFormatError   (ValueError)   an in-orbit imagette file breaks its format
    ├── ModelFormatError      (ValueError)   a model directory that cannot be loaded
    ├── InsufficientPlateaux  (ValueError)   a fit needs more plateaux than the data offer
    └── CampaignError         (RuntimeError) a campaign that cannot be used at all

Warnings go through :mod:`warnings` with category :class:`PlatoFocusWarning` (filterable by a
library user) and are also recorded in the JSON reports.
"""

from __future__ import annotations

__all__ = [
    "PlatoFocusError",
    "ParameterError",
    "DataError",
    "ImagetteFormatError",
    "ModelFormatError",
    "InsufficientPlateaux",
    "CampaignError",
    "PlatoFocusWarning",
    "warn",
]

import warnings


class PlatoFocusError(Exception):
    """Base class of every error this project raises on purpose."""


class ParameterError(PlatoFocusError, ValueError):
    """An argument outside its allowed range (the message names it, its value and the range)."""


class DataError(PlatoFocusError, ValueError):
    """A dataset, shard or input file that cannot be used (the message names it and why)."""


class ImagetteFormatError(PlatoFocusError, ValueError):
    """An imagette file that does not follow the format (the message names file and why)."""


class ModelFormatError(PlatoFocusError, ValueError):
    """A model directory that cannot be loaded (missing files, mismatched config/weights)."""


class InsufficientPlateaux(PlatoFocusError, ValueError):
    """The chosen fit needs more plateaux than the campaign (after drops) offers."""


class CampaignError(PlatoFocusError, RuntimeError):
    """A campaign that cannot be used at all (no usable frame, wrong folder, ...)."""


class PlatoFocusWarning(UserWarning):
    """A result that stands but deserves attention (also listed in the JSON report)."""


def warn(message: str, stacklevel: int = 2) -> str:
    """Issue ``message`` as a :class:`PlatoFocusWarning` and return it (for the report's list)."""
    warnings.warn(message, PlatoFocusWarning, stacklevel=stacklevel + 1)
    return message
