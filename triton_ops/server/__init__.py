"""Triton servers: the embedded local server, remote connections, readiness probes.

Heavy modules stay out of this package's import: import the submodules you need
(`triton_ops.server.local`, `.endpoints`, `.probe`).
"""
