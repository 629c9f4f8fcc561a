"""edge-agent: turns cameras into analysed events on an edge box."""

__version__ = "0.1.0"
