"""Benchmarks of sam2-jax against the official PyTorch implementation."""
