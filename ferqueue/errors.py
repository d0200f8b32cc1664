"""Errors raised at the edge, each naming the offending file or value, and how the ledger words them.

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


class Conflict(LedgerError):
    """A row another writer created first (a pipeline step planned twice)."""


class ServiceError(FerqueueError):
    """A broker, database or store server is unreachable."""


def describe(exc: BaseException) -> str:
    """An exception as the ledger records it: our own errors by class and message, anything
    else as Python's one-line summary."""
    import traceback

    if isinstance(exc, FerqueueError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
