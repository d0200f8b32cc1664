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


class TransientError(FerqueueError):
    """A unit met an error that may pass (a dropped connection, a store that did not answer):
    it is retried with backoff, and its job is not failed. Raised from the original error."""


class GaveUp(FerqueueError):
    """A unit failed on every attempt it was allowed (FERQUEUE_MAX_ATTEMPTS): a poison shard."""


class LeaseLost(FerqueueError):
    """The lease on a running unit was taken over (it had expired): another worker does the
    unit now, and what this one made is not recorded."""


def transient(exc: BaseException) -> bool:
    """Whether an error may pass if the unit is tried again: a database, broker or store that
    could not be reached or dropped the connection, or an OSError (a store's disk or network).
    The one place errors are classified; anything else (ConfigError, DataError, a StoreError on
    integrity, a bug) is permanent and fails its job at once."""
    if isinstance(exc, (TransientError, ServiceError)):
        return True
    if isinstance(exc, FerqueueError):
        return False
    return isinstance(exc, _transient_types())


_TRANSIENT: tuple[type[BaseException], ...] | None = None


def _transient_types() -> tuple[type[BaseException], ...]:
    global _TRANSIENT
    if _TRANSIENT is None:
        from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        found: list[type[BaseException]] = [OSError, OperationalError, DisconnectionError, InterfaceError,
                                             PoolTimeout]
        try:
            from kombu.exceptions import OperationalError as BrokerUnreachable

            found.append(BrokerUnreachable)
        except ImportError:
            pass
        try:
            from amqp.exceptions import RecoverableConnectionError

            found.append(RecoverableConnectionError)
        except ImportError:
            pass
        try:
            from redis.exceptions import BusyLoadingError
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import TimeoutError as RedisTimeout

            found += [RedisConnectionError, RedisTimeout, BusyLoadingError]
        except ImportError:
            pass
        try:
            from botocore.exceptions import ConnectionError as S3Unreachable
            from botocore.exceptions import ReadTimeoutError

            found += [S3Unreachable, ReadTimeoutError]
        except ImportError:
            pass
        _TRANSIENT = tuple(found)
    return _TRANSIENT


def describe(exc: BaseException) -> str:
    """An exception as the ledger records it: our own errors by class and message, anything
    else as Python's one-line summary."""
    import traceback

    if isinstance(exc, FerqueueError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
