"""The simulator's rules, as plain Python: accounts and agents, reason codes, the rules file,
credit transfers and what the scheme makes of them over time."""
