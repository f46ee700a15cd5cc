"""Use cases: what the API routes and the run loop call (jobs, registry, accounts, usage)."""
