"""MTEB task families on local data: metrics, loaders, tasks (`gecko.eval` runs them)."""
