"""Smoke test: the MFU device check (`python -m benchmarks.device --mfu`) runs end to end on CPU
with --dry-run and writes the figures a GPU run reports."""

import json
import os
import subprocess
import sys

from schemas.config import PROJECT_ROOT


def test_mfu_dry_run_writes_every_figure(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.device", "--mfu", "--dry-run", "--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, timeout=600)
    res = json.loads((tmp_path / "device-dry-run.json").read_text())
    for key in ("gpu", "trainer_mfu", "bare_mfu", "seq_len", "dtype", "commit"):
        assert key in res
    assert res["gpu"] == "cpu" and res["dtype"] == "float32" and res["dry_run"]
    assert res["trainer_tokens_per_s"] > 0 and res["bare_tokens_per_s"] > 0
    assert set(res["sides"]) == {"trainer", "bare", "trainer, dense mask", "bare, dense mask"}
    assert res["flops_per_token"] > 6 * 64 * 512  # at least the tied embedding's share
    assert "| trainer | sdpa |" in (tmp_path / "device-dry-run.md").read_text()
    assert not (tmp_path / "device.json").exists()  # a dry run never stands in for GPU figures
