"""Settlement's domain rules: plain Python, no database, no gRPC."""
