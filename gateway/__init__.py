"""The partner-facing edge: routes exactly the contract's PUBLIC rpcs to the services,
after authentication and scope checks, forwarding raw bytes."""
