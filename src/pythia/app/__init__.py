"""Turning a command line or an Action run into a run: options, the composition root, commands."""
