"""Payment: payment resources, idempotency, limits, fraud rules, the saga and its recovery."""
