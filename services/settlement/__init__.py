"""Settlement: participants, net debit caps, positions, settlement windows, reports, reconciliation."""
