"""Smoke tests: `python -m benchmarks` runs on a tiny slice and writes one table of goals."""

import json
import logging

import pytest
import torch

from benchmarks import __main__ as runner
from schemas.sft import SftConfig
from tasks import training


def test_quick_run_writes_one_table_with_goals(tmp_path):
    result = runner.run(quick=True, repeats=1, only=["tokenizer", "packing", "batching"], out=tmp_path)
    rows = result["rows"]
    works = {r["work"] for r in rows}
    assert {"tokenizer training (byte-level BPE, 8k)", "encoding all text", "DPO batches of 8 pairs"} <= works
    assert any(r["work"].startswith("pretraining packing") and r["met"] == "met" for r in rows)
    assert all(r["met"] in {"met", "missed", "—"} for r in rows) and result["ok"]
    assert all(r["ratio"] > 0 for r in rows)
    assert "identical merges: yes" in rows[0]["note"] and "identical ids: yes" in rows[1]["note"]
    assert json.loads((tmp_path / "benchmarks-quick.json").read_text())["rows"] == rows
    md = (tmp_path / "benchmarks-quick.md").read_text()
    assert "cores" in md and f"transformers {result['machine']['versions']['transformers']}" in md
    assert "Goals missed:" in md


def test_a_missing_comparison_gets_a_row_saying_so():
    rows, ran = runner.run_one("later", "benchmarks.not_written_yet", "whole tiny pipeline", None, 1)
    assert not ran and rows[0]["work"] == "whole tiny pipeline"
    assert "benchmarks/not_written_yet.py is not on this branch yet" in rows[0]["note"]


def test_cpu_training_picks_float32_and_says_so(caplog):
    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    threads = torch.get_num_threads()
    with caplog.at_level(logging.INFO, logger="tasks.training"):
        assert training.setup(SftConfig()).device.type == "cpu"
    torch.set_num_threads(threads)
    assert "cpu in float32" in caplog.text


@pytest.mark.slow
def test_quick_training_steps_run(tmp_path):
    rows = runner.run(quick=True, repeats=1, only=["steps"], out=tmp_path)["rows"]
    assert [r["unit"] for r in rows] == ["scored tokens/s", "tokens/s", "tokens/s", "pairs/s", "pairs/s"]
    assert all(r["ratio"] > 0 for r in rows)
