"""Adapters of payment's ports: SQL (journal, register), gRPC peers, and the speed-ups
(batch rpcs, group commit, waves) that implement the same ports."""
