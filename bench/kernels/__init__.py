"""Benchmark row families, one module per op."""
