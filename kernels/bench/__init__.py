"""Benchmark helpers shared by ``kernels/bench`` and ``integration/bench`` scripts."""
