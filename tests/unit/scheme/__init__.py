"""Unit tests of the scheme simulator (schemesim): no gRPC, no database."""
