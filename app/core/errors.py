"""The Quanda error tree. Driver errors never leak: they are translated and raised `from` the original.

    QuandaError                      any failure of the core; the message says what to do
    ├── QuandaNotFoundError          unknown or malformed message id
    ├── QuandaImmutableError         a write to a message that is already immutable
    ├── QuandaLimitError             a token or message over its size limit (nothing written)
    └── QuandaStoreError             the database failed (unreachable, locked, corrupt)
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
