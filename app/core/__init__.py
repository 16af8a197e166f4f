"""The Quanda core: persistent, append-only streaming messages shared by any number of writers and readers.

No web framework is imported here; the app and the CLI are both clients of this package.
"""

from .errors import (QuandaError, QuandaFencedError, QuandaImmutableError, QuandaLimitError, QuandaNotFoundError,
                     QuandaSchemaError, QuandaStoreError, QuandaTimeoutError)
from .message import QuandaMessage
from .reader import QuandaReader
from .replay import MessageState, replay
from .store import DEFAULT_URL, QuandaStore, open_store
from .store.base import MessageRecord
from .token import QuandaToken
from .writer import ChunkStream, QuandaWriter

__all__ = [
    "ChunkStream", "DEFAULT_URL", "MessageRecord", "MessageState", "QuandaError", "QuandaFencedError", "QuandaImmutableError",
    "QuandaLimitError", "QuandaMessage", "QuandaNotFoundError", "QuandaReader", "QuandaSchemaError", "QuandaStore",
    "QuandaStoreError", "QuandaTimeoutError", "QuandaToken", "QuandaWriter",
    "open_store", "replay",
]
