"""Seq2seq: the assembled model starts as the decoder, phase 1 moves only cross-attention, and the
stage trains, compares itself with SFT on the same rows, and reloads from safetensors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tasks import seq2seq, seq2seq_model, shard_reading, training


@pytest.fixture(scope="module")
def built(encoder_stack, tmp_path_factory):
    cfg, inputs = encoder_stack
    scfg = cfg.seq2seq.model_copy(
        update={"cross_steps": 3, "max_steps": 3, "batch_size": 4, "warmup_steps": 1, "cross_heads": 2}
    )
    scfg = scfg.model_copy(update={"eval_examples": 2, "eval_max_new_tokens": 4, "eval_batches": 2})
    out = tmp_path_factory.mktemp("seq2seq")
    return scfg, inputs, out, seq2seq.build(scfg, inputs, out)


def test_assembled_model_starts_as_the_decoder(encoder_stack):
    from transformers import AutoModelForCausalLM

    _, inputs = encoder_stack
    model = seq2seq_model.assemble(inputs["encoder"], inputs["pretrain"], heads=2).eval()
    decoder = AutoModelForCausalLM.from_pretrained(inputs["pretrain"], use_safetensors=True).eval()
    src, tgt = torch.tensor([[1, 40, 41, 42, 5]]), torch.tensor([[1, 50, 51, 52]])
    with torch.no_grad():
        joint = model(input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=tgt).logits
        alone = decoder(input_ids=tgt).logits
        assert torch.equal(joint, alone)  # zero gates: cross-attention adds nothing yet
        model.cross[0].gate.fill_(1.0)
        moved = model(input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=tgt).logits
    assert not torch.allclose(moved, alone)  # the hooks are live: the encoder now reaches the decoder


def test_phase_one_trains_only_cross_attention(encoder_stack, built, tmp_path):
    cfg, inputs, _, _ = built
    model = seq2seq_model.assemble(inputs["encoder"], inputs["pretrain"], heads=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = seq2seq.task_rows(shard_reading.load(inputs["shards"], "sft", "train"), cfg.tasks)
    stream = training.Stream(lambda e: [[0, 1], [2, 3]], lambda rows, k: seq2seq.batch(train, rows))
    trainable = seq2seq.freeze_parts(model, frozen=True)
    assert trainable == sum(p.numel() for p in model.cross.parameters())
    seq2seq.train_cross(model, stream, cfg, training.runtime_on(torch.device("cpu")), tmp_path, inputs)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("cross.") for k in changed)
    assert (tmp_path / "resume" / "cross" / "done.safetensors").is_file()  # phase 1 is never repeated


def test_seq2seq_stage_compares_with_sft_and_reloads(built):
    cfg, inputs, out, stats = built
    assert set(stats["generation"]) == set(stats["sft_generation"]) == {"translation", "summarization"}
    assert {"chrf", "bleu", "eos_rate"} <= set(stats["generation"]["translation"])
    assert "rougeL" in stats["sft_generation"]["summarization"]
    assert stats["cross_trainable_parameters"] < stats["parameters"]
    steps = [h["step"] for h in json.loads((out / "history.json").read_text())]
    assert steps == list(range(1, cfg.cross_steps + cfg.max_steps + 1))  # phase 1, then phase 2
    assert all(c.success for c in seq2seq.validate(cfg, inputs, out, stats))
    assert not (out / "resume").exists() and not list(out.rglob("*.bin"))
    saved = load_file(out / "decoder" / "model.safetensors")
    assert "model.layers.0.self_attn.q_proj.weight" in saved  # the decoder stays a plain Llama checkpoint
    reloaded = seq2seq_model.load(out)
    src = torch.tensor([[1, 40, 41, 5]])
    with torch.no_grad():
        logits = reloaded(
            input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=src[:, :2]
        ).logits
    assert torch.isfinite(logits).all()
