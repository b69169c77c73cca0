"""Latency, tail and staleness benchmarks of the aggregator, each figure beside a reference
measured in the same run (``python -m benchmarks latency|tail|staleness|all``)."""
