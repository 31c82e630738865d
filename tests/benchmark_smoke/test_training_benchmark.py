"""Smoke test: the training benchmark runs on a small slice and writes its ratios."""

import json

from benchmarks import training as bench
from benchmarks.common import RESULTS


def test_training_benchmark_runs_quick():
    data = bench.main(quick=True)
    assert [r["comparison"] for r in data["comparisons"]][0].startswith("stage loop")
    assert all(r["ratio"] > 0 for r in data["comparisons"])
    assert json.loads((RESULTS / "training-quick.json").read_text()) == data
