"""Reproducible benchmarks: ``make bench`` (``python -m bench``) prints the README's figures."""
