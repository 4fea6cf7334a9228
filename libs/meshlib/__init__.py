"""meshlib: the shared runtime of OpenBank Mesh.

Config, server bootstrap, errors, logging, telemetry, storage, auth, idempotency and
pagination live here once, so that every service and the gateway do each thing one way.
Importing this package has no side effects.
"""
