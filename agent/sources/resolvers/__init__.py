"""Input resolution: every task input type becomes a playable StreamTarget (see docs/inputs.md).

``registry.ResolverSet`` is the door; importing this package imports no resolver (a worker process
imports only what it runs).
"""
