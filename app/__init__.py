"""Quanda: persistent streaming messages, an AI chat sidebar, and the FastHTML app around them.

`from quanda import Quanda, action` and every other name of the public API (quanda.api.__all__) are
loaded on first use, so `import quanda` stays cheap for the core and the command line.
"""

# quanda.api.__all__, repeated here so that looking up a submodule (`from quanda import ownership`) never
# imports the API (tests/test_public_api.py checks that the two lists agree)
PUBLIC = frozenset({
    "AppContext", "Handle", "Job", "Plugin", "PluginError", "ClientError", "handle_of", "near", "FieldNotice",
    "Change", "CommandResult", "CommandSpec", "Field", "apply_change",
    "ChunkStream", "MessageRecord", "QuandaError", "QuandaImmutableError", "QuandaMessage", "QuandaNotFoundError",
    "QuandaReader", "QuandaStoreError", "QuandaToken", "QuandaWriter",
    "Action", "Quanda", "action", "readable",
})


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module 'quanda' has no attribute {name!r}")
    from importlib import import_module
    return getattr(import_module("quanda.api"), name)
