"""Input resolution: every task input type becomes a playable StreamTarget (see docs/inputs.md)."""

from agent.sources.resolvers.base import InputRef, InputResolver, ResolveError
from agent.sources.resolvers.registry import ResolverSet

__all__ = ["InputRef", "InputResolver", "ResolveError", "ResolverSet"]
