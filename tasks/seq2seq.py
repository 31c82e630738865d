"""Seq2seq stage: an encoder-decoder assembled from the masked-LM encoder and the pretrained decoder.

Our decoder is Llama-style, which has no cross-attention in transformers (EncoderDecoderModel
needs a decoder built with `add_cross_attention`), so the assembly adds it: after every decoder
layer, a gated cross-attention block reads the encoder's output (Flamingo-style):

    h = layer(h)                                    (the pretrained decoder layer, unchanged)
    h = h + tanh(gate) * CrossAttn(RMSNorm(h), encoder states, encoder padding mask)

Gates start at 0, so the assembled model first computes exactly what the decoder alone does
(tested) and training only ever adds to it. The blocks hook onto the decoder layers (forward
hooks), so the decoder's own weights and their names stay those of a plain Llama checkpoint.

Training reuses the SFT shards of `cfg.tasks`: the encoder reads the prompt (`<bos> Hello
<to-fr>`), the decoder `<bos> Bonjour <eos>` with loss on `Bonjour <eos>`. Phase 1 trains only
the cross-attention (encoder and decoder frozen) for `cross_steps`; phase 2 trains everything.
The result is compared with the decoder-only SFT model on the same validation rows (chrF,
BLEU, ROUGE-L, EM/F1 per task; tasks.evaluation). Saved as

    encoder/ (ModernBertModel)  decoder/ (LlamaForCausalLM)  cross_attention.safetensors  seq2seq.json
"""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors.torch import load_file, save_file

from schemas.manifest import ContractResult
from schemas.seq2seq import Seq2SeqConfig
from schemas.shards import IGNORE_INDEX
from schemas.tokens import BOS, PAD, token_id
from tasks import evaluation, packing, seq2seq_model, shard_reading, training
from tasks.checkpoints import no_pickle
from tasks.contracts import require
from tasks.inference import complete


def task_rows(table: pa.Table, tasks: list[str]) -> pa.Table:
    return table.filter(pc.is_in(table["task"], pa.array(tasks)))


def batch(table: pa.Table, rows: list[int]) -> training.Batch:
    """Encoder: the SFT prompt; decoder: `<bos>` + answer, loss on the answer (right-padded)."""
    cols = shard_reading.take_rows(table, rows, ["input_ids", "labels"])
    prompts, answers = [], []
    for ids, labels in zip(cols["input_ids"], cols["labels"], strict=True):
        first = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
        prompts.append(ids[:first])
        answers.append(ids[first:])
    enc_ids, enc_mask = _pad(prompts, token_id(PAD))
    dec_ids, dec_mask = _pad([[token_id(BOS), *a] for a in answers], token_id(PAD))
    labels, _ = _pad([[IGNORE_INDEX, *a] for a in answers], IGNORE_INDEX)
    return {
        "input_ids": enc_ids,
        "attention_mask": enc_mask,
        "decoder_input_ids": dec_ids,
        "decoder_attention_mask": dec_mask,
        "labels": labels,
    }


def _pad(seqs: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids, mask


def generate(model: seq2seq_model.Seq2Seq, prompts: list[list[int]], max_new: int, device) -> list[list[int]]:
    """Greedy continuations cut after `<eos>` (the contract of evaluation.generate), made by the
    same loop `lmpipe generate` uses."""
    out = [list(complete(model, p, max_new, device)) for p in prompts]
    model.train()
    return out


def freeze_parts(model: seq2seq_model.Seq2Seq, frozen: bool) -> int:
    """Freeze (or unfreeze) encoder and decoder; returns the number of trainable parameters."""
    for part in (model.encoder, model.decoder):
        part.requires_grad_(not frozen)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_cross(
    model: seq2seq_model.Seq2Seq, stream, cfg: Seq2SeqConfig, runtime: training.Runtime, out: Path, inputs
) -> list[dict]:
    """Phase 1 under `out/resume/cross` (removed with the rest of the resume state at the end).
    Only the cross-attention changes in it; its finished weights are kept there, so a run
    killed in phase 2 never repeats phase 1."""
    phase = out / training.RESUME / "cross"
    done = phase / "done.safetensors"
    if done.is_file():
        model.cross.load_state_dict(load_file(str(done)))
        return json.loads((phase / "history.json").read_text())
    history = training.fit(
        model,
        stream,
        cfg.model_copy(update={"max_steps": cfg.cross_steps, "lr": cfg.cross_lr}),
        runtime,
        phase,
        inputs,
        "seq2seq-cross",
    )
    phase.mkdir(parents=True, exist_ok=True)
    (phase / "history.json").write_text(json.dumps(history))
    save_file({k: v.contiguous() for k, v in model.cross.state_dict().items()}, str(done))
    return history


def build(cfg: Seq2SeqConfig, inputs: dict[str, Path], out: Path) -> dict:
    from transformers import AutoModelForCausalLM

    # set up
    runtime = training.setup(cfg)
    device = runtime.device
    train = task_rows(shard_reading.load(inputs["shards"], "sft", "train"), cfg.tasks)
    val = task_rows(shard_reading.load(inputs["shards"], "sft", "validation"), cfg.tasks)
    model = seq2seq_model.assemble(inputs["encoder"], inputs["pretrain"], cfg.cross_heads)
    val_plan = packing.bucket_batches(val["bucket"].to_pylist(), cfg.batch_size, cfg.seed)[: cfg.eval_batches]
    val_batches = [batch(val, rows) for rows in val_plan]
    before = training.cached_json(
        out / training.RESUME / "before.json",
        lambda: {"val_loss": round(training.evaluate(model, val_batches, runtime), 4)},
    )
    buckets = train["bucket"].to_pylist()
    stream = training.Stream(
        lambda epoch: packing.bucket_batches(buckets, cfg.batch_size, cfg.seed, epoch),
        lambda rows, k: batch(train, rows),
    )
    # train: cross-attention alone, then everything
    cross_trainable = freeze_parts(model, frozen=True)
    cross_history = train_cross(model, stream, cfg, runtime, out, inputs) if cfg.cross_steps else []
    cross_loss = round(training.evaluate(model, val_batches, runtime), 4)
    freeze_parts(model, frozen=False)
    history = training.fit(model, stream, cfg, runtime, out, inputs, "seq2seq")
    # evaluate, against the decoder-only SFT model on the same rows
    sft = AutoModelForCausalLM.from_pretrained(inputs["sft"], use_safetensors=True)
    args = (inputs["tokenizer"], val, cfg.eval_examples, cfg.eval_max_new_tokens, device)
    metrics = {
        "val_loss_before": before["val_loss"],
        "val_loss_after_cross": cross_loss,
        "val_loss": round(training.evaluate(model, val_batches, runtime), 4),
        "train_loss": round(sum(h["loss"] for h in history[-10:]) / len(history[-10:]), 4),
        "cross_steps": cfg.cross_steps,
        "cross_train_loss": round(cross_history[-1]["loss"], 4) if cross_history else None,
        "cross_trainable_parameters": cross_trainable,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": cfg.max_steps,
        "gates": [round(float(torch.tanh(b.gate.detach())), 4) for b in model.cross],
        "generation": evaluation.generation_metrics(model, *args, generate_fn=generate),
        "sft_generation": evaluation.generation_metrics(sft, *args),
    }
    # save
    history = cross_history + [{**h, "step": h["step"] + len(cross_history)} for h in history]
    training.finish(out, model, inputs["tokenizer"], history, metrics, card(metrics, cfg, inputs))
    return metrics


def card(metrics: dict, cfg: Seq2SeqConfig, inputs: dict[str, Path]) -> str:
    """The shared model card, with this checkpoint's own way to load it."""
    rest = training.model_card("seq2seq", metrics, cfg, inputs).split("## Metrics", 1)[1]
    load_it = "```python\nfrom tasks.seq2seq_model import load\nmodel = load(path)  # safetensors only, no remote code\n```"
    return f"# lmpipe seq2seq checkpoint\n\n{load_it}\n\n## Metrics{rest}"


def validate(cfg: Seq2SeqConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    model = seq2seq_model.load(out)
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        logits = model(
            input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=ids[:, :2]
        ).logits
    finite = [] if torch.isfinite(logits).all() else ["non-finite logits"]
    worse = (
        []
        if stats["val_loss"] < stats["val_loss_before"]
        else [f"val loss {stats['val_loss_before']} -> {stats['val_loss']}"]
    )
    return [
        no_pickle(out),
        require(
            "checkpoint/loads", finite, 1, "encoder, decoder and cross-attention reload with finite logits"
        ),
        require("checkpoint/learned", worse, 1, "validation loss decreased during training"),
    ]
