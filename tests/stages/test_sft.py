"""SFT: generation metrics, LoRA with trainable task-token embeddings, exact resume of the loop."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from test_training import data, with_manifest  # noqa: F401  (module fixture)

from schemas.tokens import EOS, TO_FR, token_id
from tasks import evaluation, pretrain, sft


def test_metrics_score_known_answers():
    assert evaluation.qa_scores(["The cat."], ["cat"]) == {"exact_match": 100.0, "f1": 100.0}
    assert evaluation.qa_scores(["black cat"], ["a cat"])["f1"] == pytest.approx(100 * 2 / 3)
    assert evaluation.translation_scores(["le chat noir"], ["le chat noir"])["chrf"] == pytest.approx(100)
    assert evaluation.translation_scores(["un chien"], ["le chat noir"])["chrf"] < 20
    assert evaluation.summarization_scores(["a b c d"], ["a b x d"])["rougeL"] == pytest.approx(75)


def test_repeat_shows_a_rare_task_more_often_and_nothing_else_changes():
    import pyarrow as pa

    from schemas.sft import SftConfig

    tasks = ["translation", "qa", "translation", "summarization"] * 8
    table = pa.table(
        {
            "task": tasks,
            "bucket": [0, 1] * 16,
            "length": [5] * 32,
            "input_ids": [[1, 2]] * 32,
            "labels": [[1, 2]] * 32,
        }
    )
    assert sft.epoch_rows(table.slice(0, 4), {"qa": 3}) == [0, 1, 1, 1, 2, 3]
    plain, repeated = sft.stream(table, 4, 0), sft.stream(table, 4, 0, {"qa": 3})
    assert plain.plan(0) == sft.stream(table, 4, 0, {}).plan(0)  # no repeat: the batches of before
    seen = [tasks[i] for batch in repeated.plan(0) for i in batch]
    assert seen.count("qa") == 24 and seen.count("translation") == 16 and seen.count("summarization") == 8
    with pytest.raises(ValueError, match="repeat"):
        SftConfig(repeat={"qa": 0})
    with pytest.raises(ValueError, match="repeat"):
        SftConfig(repeat={"chat": 2})


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):  # noqa: F811
    cfg, inputs = data
    out = tmp_path_factory.mktemp("pretrain")
    pretrain.build(cfg.pretrain.model_copy(update={"max_steps": 20}), inputs, out)
    return with_manifest("pretrain", out)


def sft_cfg(cfg, **update):
    base = {"max_steps": 8, "eval_examples": 3, "eval_max_new_tokens": 6, "checkpoint_every": 3}
    return cfg.sft.model_copy(update={**base, **update})


def test_generation_stops_at_eos(data, pretrained, tmp_path):  # noqa: F811
    cfg, inputs = data
    stats = sft.build(sft_cfg(cfg), {**inputs, "pretrain": pretrained}, tmp_path)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True)
    prompts = [[1, 40, 41, token_id(TO_FR)], [1, 50, token_id(TO_FR)]]
    for gen in evaluation.generate(model, prompts, 12, torch.device("cpu")):
        assert (token_id(EOS) not in gen[:-1]) and (gen[-1] == token_id(EOS) or len(gen) == 12)
    assert set(stats["generation"]) == {"translation", "summarization", "qa"}
    assert {"chrf", "bleu", "eos_rate"} <= set(stats["generation_before"]["translation"])


def test_lora_trains_task_token_embeddings(data, pretrained, tmp_path):  # noqa: F811
    cfg, inputs = data
    stats = sft.build(sft_cfg(cfg, method="lora", lr=5e-2), {**inputs, "pretrain": pretrained}, tmp_path)
    before = load_file(pretrained / "model.safetensors")["model.embed_tokens.weight"]
    after = load_file(tmp_path / "model.safetensors")["model.embed_tokens.weight"]
    assert not torch.equal(before[token_id(TO_FR)], after[token_id(TO_FR)])  # task token trained
    assert torch.equal(before[100], after[100])  # ordinary tokens stay frozen under LoRA
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("trainable_tokens" in k for k in adapter) and any("lora_A" in k for k in adapter)
    assert stats["trainable_parameters"] < sum(
        p.numel() for p in load_file(tmp_path / "model.safetensors").values()
    )


def test_sft_resume_after_crash_is_exact(data, pretrained, tmp_path, monkeypatch, caplog):  # noqa: F811
    cfg, inputs = data
    inputs = {**inputs, "pretrain": pretrained}
    whole = sft.build(sft_cfg(cfg), inputs, tmp_path / "whole")
    monkeypatch.setenv("LMPIPE_CRASH_AT", "sft:step-5:raise")
    with pytest.raises(RuntimeError, match="injected failure at sft:step-5"):
        sft.build(sft_cfg(cfg), inputs, tmp_path / "run")
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    with caplog.at_level(logging.INFO, logger="tasks.training"):
        resumed = sft.build(sft_cfg(cfg), inputs, tmp_path / "run")
    assert "(step 3)" in caplog.text
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("whole", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed == whole
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["step"] == 8


def test_noise_benchmark_compares_settings_from_one_checkpoint(data, pretrained):  # noqa: F811
    """Smoke test of benchmarks/noise.py: same checkpoint, seed and data; only the noise differs."""
    from benchmarks import noise as bench
    from schemas.sft import NoiseConfig

    cfg, inputs = data
    settings = {"none": NoiseConfig(), "mask 30%": NoiseConfig(fraction=0.3, replace_with="mask")}
    base = sft_cfg(cfg, max_steps=3, eval_examples=2, eval_max_new_tokens=4)
    rows = bench.compare(base, {**inputs, "pretrain": pretrained}, settings)
    assert [r["noise"] for r in rows] == ["none", "mask 30%"]
    assert rows[0]["val loss ratio"] == 1 and rows[0]["realized fraction"] == 0
    assert abs(rows[1]["realized fraction"] - 0.3) < 0.02 and rows[1]["val loss"] != rows[0]["val loss"]
