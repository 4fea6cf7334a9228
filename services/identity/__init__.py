"""Identity: partners (OAuth clients), customers, consents, signing keys and tokens."""
