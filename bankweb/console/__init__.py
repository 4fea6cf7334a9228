"""The operator console: the bank's operators' web pages (Mojaloop's finance portal as the
anchor), on the customer pages' stack (Starlette + Jinja2, server-rendered, no script).

Pages: partners and their positions against their net debit caps; settlement windows with
their history as a chart and the close / settle / reconcile actions; payments in flight and
rejected with their reasons; the audit search. Operators sign in with a password and a
one-time code (``operators.py``: a file of operators read once, Argon2id hashes, a role each:
read-only, operator, admin); every action is checked against the role here and recorded,
with the operator's name, in the console's own hash-chained audit trail; the services see
the console's own internal client and enforce its scopes.

Layers: ``web.py`` (routes) -> ``console.py`` (use cases, plain Python) -> ``ports.py`` ->
adapters (``grpc_mesh.py``; sessions and page plumbing shared with the customer pages).
"""
