"""Pictor: a self-hosted image library appliance."""

__version__ = "0.1.0"
