"""Benchmarks of the streaming path: a command, never a timed test."""
