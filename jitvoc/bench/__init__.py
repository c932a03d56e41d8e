"""Benchmarks behind `jitvoc bench`: kernels, vocoder, scan."""
