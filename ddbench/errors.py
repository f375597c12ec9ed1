"""Errors a user can act on. Each carries the fix in its message; the CLI prints it and exits 2."""

from __future__ import annotations


class DDBenchError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in ddbench."""

    exit_code = 2


class UnknownPluginError(DDBenchError, LookupError):
    """A plugin name that no installed distribution provides."""


class PluginLoadError(DDBenchError, ImportError):
    """A plugin whose entry point exists but whose code failed to import."""


class DataNotFoundError(DDBenchError, FileNotFoundError):
    """A data set that is not on disk, or not in the expected format."""


class InvalidOptionError(DDBenchError, ValueError):
    """An option a plugin or the engine does not accept (unknown key, bad value, wrong shape)."""


class NonFiniteLossError(DDBenchError, FloatingPointError):
    """The distillation loss became NaN or infinite; the last good checkpoint is kept."""


class CorruptFileError(DDBenchError, OSError):
    """A checkpoint, synthetic set or store file that cannot be read back."""


class PluginError(DDBenchError):
    """A plugin's own code failed (its ``__init__``, ``setup``, …): a bug to report to its authors.

    One line naming the plugin, its distribution, the step and where in the plugin's code it failed;
    the run's log keeps the whole traceback."""

    exit_code = 1
