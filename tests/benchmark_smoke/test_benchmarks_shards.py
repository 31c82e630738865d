"""Smoke test: the shards benchmark runs on a small slice and writes its figures."""

import json

from benchmarks import shards


def test_shards_benchmark_runs_quick(tmp_path):
    result = shards.main(quick=True, out=tmp_path)
    saved = json.loads((tmp_path / "shards.json").read_text())
    assert saved["tokens"] == result["tokens"] > 0 and saved["rows"] > 0
    assert set(saved["median_s"]) == {
        shards.RAW_ENCODE,
        shards.OURS_ENCODE,
        shards.RAW_READ,
        shards.OURS_READ,
        shards.RAW_SHUFFLED,
        shards.OURS_SHUFFLED,
    }
    assert all(v > 0 for v in saved["ratios"].values())
    assert "take_rows" in (tmp_path / "shards.md").read_text()
