"""The reference application's plugins — the todo list and the stream simulator — written against the public
API (`quanda.api`) and nothing else, as any installed plugin or host would be (tests/test_public_api.py checks it).
"""
