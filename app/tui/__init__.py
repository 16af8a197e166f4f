"""The terminal client: `python -m quanda.tui`, a peer of the browser over the HTTP API (the `tui` extra).

Modules, one concept each: `sse` (server-sent events, parsed), `client` (the HTTP API: requests, streams that
reconnect and resume, problems and what to do about them), `model` (what the terminal holds: the
conversation's entries and messages, and what the screen has yet to draw), `widgets` (how an entry looks),
`app` (the Textual app: its tasks, its frame loop, its key bindings).
"""
