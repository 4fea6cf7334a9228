"""The OpenBank Mesh benchmark harness (``make bench`` / ``python -m bench``).

Starts the mesh the way production runs it (separate processes, real sockets), drives it
from a load generator in its own process, checks every answer's gRPC status, and prints a
table plus a JSON file. See docs/benchmarks.md for the method and the latest figures.
"""
