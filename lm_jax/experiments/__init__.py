"""Experiments over many runs: seeded sweeps, comparisons of groups, their statistics."""
