"""Measurements: accuracy with its uncertainty, paired tests, latency, memory, load mode."""
