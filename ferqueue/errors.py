"""Errors raised at the edge, each naming the offending file or value.

The CLI turns any FerqueueError into a one-line message and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class FerqueueError(Exception):
    """Base class for errors caused by user input or the environment."""


class DataError(FerqueueError):
    """A dataset folder, file or image is missing, empty, corrupt or unknown."""


class ConfigError(FerqueueError):
    """A setting, option or parameter value is invalid."""


class StoreError(FerqueueError):
    """An adversarial store or shard is missing, altered or inconsistent."""


class LedgerError(FerqueueError):
    """A job, shard, run or artifact is missing or in the wrong state."""
