"""Smoke test: the overhead benchmark runs the tiny slice through flows and plain calls."""

import json

from benchmarks import overhead
from benchmarks.common import RESULTS


def test_overhead_benchmark_runs_quick(prefect_harness):
    data = overhead.main(quick=True)
    assert data["stages"] == ["corpus", "tokenizer", "shards"]
    assert 0 < data["plain_work_s"] < data["flow_wall_s"]
    assert abs(data["overhead_s"] - (data["flow_wall_s"] - data["plain_work_s"])) <= 0.02
    row = data["row"]  # what `python -m benchmarks` puts in its table
    assert row["unit"] == "s" and row["ratio"] > 1 and row["met"] in {"met", "missed"}
    assert json.loads((RESULTS / "overhead-quick.json").read_text()) == data
