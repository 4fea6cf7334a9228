"""The scheme simulator: "another bank" behind the interbank clearing scheme.

It serves ``openbank.scheme.v1.ClearingService`` as its own process (``python -m schemesim``)
and answers each credit transfer by the rules in a YAML file: settle, reject with an ISO reason,
answer late or never, or settle and return the payment later. See ``schemesim/README.md``.
"""
