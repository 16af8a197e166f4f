"""The public API: everything a plugin or a host application may use, and nothing else.

Plugins (ours under app/plugins/ and any installed one) and host applications import from this module only
(and from `quanda.components`, plain FT pieces); tests/test_public_api.py checks it for app/plugins/ and examples/.
What is not named in `__all__` may change without notice.

- A plugin: `Plugin` (its hooks), the `Handle` each hook is handed, `ClientError` for refusals, `near` to
  show them beside a form, the command types (`CommandSpec`, `Field`, `Change`, `CommandResult`,
  `apply_change`), `Job` (a background job to recover), `handle_of` (a route's Handle), the core's messages.
- A host application: `Quanda` (mount it in your FastHTML app), `action` (an LLM-callable function),
  `readable` (state the LLM reads), and `Quanda.tell` (an ambient event). See docs/host.md.
"""

from __future__ import annotations

from quanda.access import handle_of
from quanda.commands import Change, CommandResult, CommandSpec, Field, apply_change
from quanda.components.notice import FieldNotice
from quanda.context import AppContext, ClientError, Handle
from quanda.core import (ChunkStream, MessageRecord, QuandaError, QuandaImmutableError, QuandaMessage,
                         QuandaNotFoundError, QuandaReader, QuandaStoreError, QuandaToken, QuandaWriter)
from quanda.host import Action, Quanda, action, readable
from quanda.jobs import Job
from quanda.notices import near
from quanda.plugin import Plugin, PluginError

__all__ = [
    # plugins
    "AppContext", "Handle", "Job", "Plugin", "PluginError", "ClientError", "handle_of", "near", "FieldNotice",
    # commands the LLM may run (plugins) — hosts write `@action` functions instead
    "Change", "CommandResult", "CommandSpec", "Field", "apply_change",
    # the core's messages
    "ChunkStream", "MessageRecord", "QuandaError", "QuandaImmutableError", "QuandaMessage", "QuandaNotFoundError",
    "QuandaReader", "QuandaStoreError", "QuandaToken", "QuandaWriter",
    # hosts
    "Action", "Quanda", "action", "readable",
]
