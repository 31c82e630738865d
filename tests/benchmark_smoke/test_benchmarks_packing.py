"""Smoke test: the packing benchmark runs on a small slice and writes its tables."""

import json

from benchmarks import packing
from benchmarks.common import RESULTS


def test_packing_benchmark_runs_quick():
    packing.main(quick=True)
    data = json.loads((RESULTS / "packing.json").read_text())
    bfd = [r for r in data["packing"] if r["method"] == "best_fit_decreasing"]
    greedy = [r for r in data["packing"] if r["method"] == "next_fit"]
    assert all(r["tokens_lost"] == 0 for r in bfd)
    assert all(b["fill"] >= g["fill"] for b, g in zip(bfd, greedy, strict=True))
    assert (RESULTS / "padding.md").is_file()
