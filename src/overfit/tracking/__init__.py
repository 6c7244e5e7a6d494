"""MLflow: the store, runs (create, reopen, end, find by key), the logger, sweeps and their reports."""
