"""Pythia keeps a project's documentation in step with what its community asks in chat."""

__version__ = "0.1.0"
