"""Reproducible benchmarks; each script runs as ``python benchmarks/NAME.py [--quick]``."""
