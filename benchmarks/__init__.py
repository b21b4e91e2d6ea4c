"""Benchmarks of Idios: each module runs real processes and prints measured numbers."""
