"""HTTP routes: the client API, the provider callbacks and health checks."""
