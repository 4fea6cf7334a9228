"""The bank's own web pages: customer sign-in and consent authorisation (the redirect flow).

A server-rendered Starlette app with Jinja2 templates, its own process, a gRPC client of
identity and account with its own internal client credentials (scope consents:authorise);
it never reads another service's tables.

Layers: ``web.py`` (routes: HTTP in, HTML or a redirect out) -> ``flows.py`` (use cases, plain
Python) -> ``ports.py`` (what it needs from the bank, the session store, the clock) ->
adapters (``grpc_bank.py``, ``sessions.py``).
"""
