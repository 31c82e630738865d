"""The scale benchmark: its replicated corpus survives cleaning, and the runner writes its table."""

import json

import pyarrow.parquet as pq
import pytest

from benchmarks import capacity, scale
from schemas.config import load_config
from tasks import corpus


def test_replicas_survive_dedup_and_decontamination_and_answers_stay_spans(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPIPE_DATA_ROOTS", str(tmp_path))
    kept = {}
    for n in (1, 3):
        cfg = scale.scaled_config(tmp_path / f"raw{n}", n, limit=30)
        out = tmp_path / f"corpus{n}"
        out.mkdir()
        stats = corpus.build(cfg.corpus, {}, out)
        kept[n] = stats["kept"]
        qa = pq.read_table(out / "qa.parquet").to_pylist()
        assert qa and all(r["answer"] in r["context"] for r in qa)
    assert 2.9 * kept[1] <= kept[3] <= 3 * kept[1] + 5


def test_every_13_word_window_of_a_replica_holds_its_marker():
    text = " ".join(f"w{i}" for i in range(40))
    words = scale.insert(text, scale.marks(text), "r7").split()
    assert all("r7" in words[i : i + 13] for i in range(len(words) - 12))
    assert scale.replica({"id": "a", "text": text}, "pretrain", 0) == {"id": "a", "text": text}


@pytest.mark.slow  # three child processes, each importing the stack: about 40 s on a quiet 2-core machine
def test_benchmark_runs_on_a_slice_and_writes_goals(tmp_path):
    data = scale.main(["--limit", "15", "--scales", "1", "--cores", "2", "--out", str(tmp_path)])
    stages = [r["stage"] for r in data["rows"]]
    assert stages == ["corpus", "tokenizer", "shards"]
    assert all(r["peak_rss_mib"] > 0 and r["tokens"] > 0 and not r["failed_contracts"] for r in data["rows"])
    assert json.loads((tmp_path / "scale.json").read_text())["goals"] == data["goals"]
    assert "peak RSS" in (tmp_path / "scale.md").read_text()


@pytest.mark.slow  # one child process importing the stack: about 15 s on a quiet 2-core machine
def test_stages_option_runs_the_corpus_stage_alone(tmp_path):
    data = scale.main(["--limit", "15", "--scales", "1", "--stages", "corpus", "--out", str(tmp_path)])
    (row,) = data["rows"]
    assert row["stage"] == "corpus" and row["records_kept"] > 0 and row["peak_rss_mib"] > 0
    assert "tokens" not in row and not row["failed_contracts"]
    assert [g["what"] for g in data["goals"]] == ["corpus: peak RSS x1 / x1"]


def test_goals_of_the_corpus_stage_alone_and_stages_that_lack_their_inputs():
    rows = [
        {"scale": n, "stage": "corpus", "cores": 2, "peak_rss_mib": rss} for n, rss in ((1, 400), (10, 440))
    ]
    assert scale.goals(rows) == [
        {"what": "corpus: peak RSS x10 / x1", "value": 1.1, "goal": "<= 1.2", "result": "met"}
    ]
    for argv in (["--stages", "tokenizer"], ["--stages", "corpus", "--train-steps", "2"]):
        with pytest.raises(SystemExit):
            scale.main(argv)


def test_capacity_counts_the_parameters_of_the_gpu_preset_model():
    """The training-time plan rests on this count: it must match the model the stage builds."""
    import torch

    from tasks.training import new_decoder

    cfg = load_config("gpu")
    with torch.device("meta"):
        model = new_decoder(cfg.pretrain.model, cfg.tokenizer.vocab_size, cfg.shards.seq_len)
    _, params, tokens = capacity.flops_per_token("gpu")
    assert abs(sum(p.numel() for p in model.parameters()) - params) / params < 0.001
    assert tokens == 5000 * 16 * 4 * 2048
