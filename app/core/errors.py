"""The Quanda error tree. Driver errors never leak: they are translated and raised `from` the original.

    QuandaError                      any failure of the core; the message says what to do
    ├── QuandaNotFoundError          unknown or malformed message id
    ├── QuandaImmutableError         a write to a message that is already immutable
    ├── QuandaLimitError             a token or message over its size limit (nothing written)
    └── QuandaStoreError             the database failed (unreachable, locked, corrupt)
        ├── QuandaTimeoutError       it did not answer within the store's deadline (`timeout_s`)
        ├── QuandaFencedError        a job's write after another took its message over (nothing written)
        └── QuandaSchemaError        the database's schema is newer than this version, or not migrated
"""


class QuandaError(Exception):
    """Base of every error the core raises."""


class QuandaNotFoundError(QuandaError, LookupError):
    """No message with that id (malformed ids are reported the same way)."""


class QuandaImmutableError(QuandaError):
    """The message is immutable: nothing was written."""


class QuandaLimitError(QuandaError, ValueError):
    """A token or the message would exceed its size limit: nothing was written."""


class QuandaStoreError(QuandaError):
    """The backend failed; the original driver error is the `__cause__`."""


class QuandaTimeoutError(QuandaStoreError):
    """The database did not answer within the store's deadline; the message says whether the write may still
    be applied."""


class QuandaFencedError(QuandaStoreError):
    """A write carrying a fencing token older than the message's: another job has taken the message over (its
    lease expired). Nothing was written."""


class QuandaSchemaError(QuandaStoreError):
    """The database's schema is of a newer version than this code knows, or needs a migration this process
    may not run; the message says which and what to do."""
