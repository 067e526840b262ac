"""Benchmarks run by `minillama bench NAME`: each prints a table and runs its baselines too."""
