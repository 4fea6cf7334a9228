"""The scheme simulator and the clearing connector over real gRPC (and a real process)."""
