"""Triton servers: the embedded local server, remote connections, readiness probes."""
