"""fsrouter: ring a known client's own agent first, then the group."""

__version__ = "0.1.0"
