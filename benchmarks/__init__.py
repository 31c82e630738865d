"""Benchmarks: lmpipe against plain baselines on the same data, in one run.

Each module runs as `python -m benchmarks.<name>` and writes `benchmarks/results/<name>.json`
and `.md`. Claims are ratios against a baseline measured in the same run, never absolute
timings asserted in tests.
"""
