"""Benchmarks of plato-focus; ``python -m benchmarks [--quick]`` runs them all."""
