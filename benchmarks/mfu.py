"""Model FLOPs utilisation of the stage's trainer against a bare compiled loop, in one run.

    python -m benchmarks.device --mfu              # on a GPU: the gpu preset's decoder, seq 2048, bf16
    python -m benchmarks.device --mfu --dry-run    # the same code on CPU: a tiny model, seconds

Every side trains a fresh copy of the same initial weights on the same packed rows (documents
of seeded random lengths, position ids restarting at each; the gpu preset's batch size):

- `trainer`: `training.fit` as the pretrain stage runs it: `attention: auto` (FlexAttention on
  CUDA), `compile: auto`, fused AdamW, bf16 autocast, batches read ahead from host memory,
  figures read back every `log_every` steps;
- `bare`: a nanoGPT-style loop: the whole model under torch.compile, fused AdamW, bf16
  autocast, batches and their masks already on the GPU, no host sync until the end;
- `trainer, dense mask` and `bare, dense mask`: the same with `attention: sdpa` (an L x L mask).

Each side runs `warmup` steps (compilation) and is then timed over `steps` steps.

MFU = tokens/s x FLOPs per token / the GPU's peak dense bf16 FLOP/s, with

    FLOPs per token = 6·N + 12·n_layers·hidden·seq_len

N is every parameter (the tied embedding once); 6·N is the forward and backward matmuls; the
second term is attention's scores and weighted sum, forward and backward, over the whole causal
window (PaLM, appendix B; nanoGPT). With document masks FlexAttention skips part of that work,
so MFU here counts what a dense model of this shape needs, as those papers do.

Writes benchmarks/results/device.{json,md} (`device-dry-run.*` with --dry-run): gpu,
trainer_mfu, bare_mfu, trainer_tokens_per_s, bare_tokens_per_s, seq_len, dtype, commit, and
every side's tokens/s, MFU and peak memory.
"""

import copy
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from schemas.config import PROJECT_ROOT, load_config
from schemas.pretrain import PretrainConfig
from schemas.training import ModelConfig
from tasks import attention, steps, training

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, published
DRY_MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)


def packed_rows(n_batches: int, batch: int, seq: int, vocab: int) -> list[training.Batch]:
    """Batches of packed rows: documents of seeded random lengths (seq/16 to seq/2 tokens) laid
    end to end, positions restarting at each, no loss on a document's first token."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(16, vocab, (batch, seq), generator=gen)
        positions = torch.empty(batch, seq, dtype=torch.long)
        for r in range(batch):
            at = 0
            while at < seq:
                n = min(seq - at, int(torch.randint(seq // 16, seq // 2 + 1, (1,), generator=gen)))
                positions[r, at : at + n] = torch.arange(n)
                at += n
        labels = ids.masked_fill(positions == 0, -100)
        out.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    return out


def flops_per_token(model, mcfg: ModelConfig, seq: int) -> int:
    return 6 * sum(p.numel() for p in model.parameters()) + 12 * mcfg.num_layers * mcfg.hidden_size * seq


def run_trainer(model, batches, cfg: PretrainConfig, device, warmup: int, timed: int) -> float:
    """Seconds of `timed` steps of `training.fit`, after a `warmup`-step fit (compilation)."""
    attention.use(model, attention.resolve(cfg.attention, device), causal=True)
    stream = training.Stream(
        lambda epoch: [[i] for i in range(len(batches))], lambda rows, k: batches[rows[0]]
    )
    runtime = training.runtime_on(device, cfg.precision)
    with tempfile.TemporaryDirectory() as scratch:
        training.fit(
            model,
            stream,
            cfg.model_copy(update={"max_steps": warmup}),
            runtime,
            Path(scratch) / "w",
            {},
            "mfu",
        )
        sync(device)
        start = time.perf_counter()
        training.fit(
            model,
            stream,
            cfg.model_copy(update={"max_steps": timed}),
            runtime,
            Path(scratch) / "t",
            {},
            "mfu",
        )
        sync(device)
    return time.perf_counter() - start


def run_bare(model, batches, cfg: PretrainConfig, device, warmup: int, timed: int) -> float:
    """Seconds of `timed` steps of the bare loop, after `warmup` steps."""
    kernel = attention.resolve(cfg.attention, device)
    attention.use(model, kernel, causal=True)
    make_mask = attention.block_mask if kernel == "flex" else attention.dense_mask
    on_device = []
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        on_device.append({**b, "attention_mask": make_mask(b["position_ids"], causal=True)})
    model.to(device).train()
    run = torch.compile(model) if steps.compiles(cfg.compile, device) else model
    optimizer = steps.optimizer(model.parameters(), cfg.lr, cfg.weight_decay, device)
    runtime = training.runtime_on(device, cfg.precision)
    for i in range(warmup + timed):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with runtime.autocast():
            loss = run(**on_device[i % len(on_device)], use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def measure(dry_run: bool, warmup: int = 5, timed: int = 30) -> dict:
    """Every side's tokens/s, MFU and peak memory (see the module docstring)."""
    preset = load_config("gpu")
    mcfg, seq, vocab, batch = (
        preset.pretrain.model,
        preset.shards.seq_len,
        preset.tokenizer.vocab_size,
        preset.pretrain.batch_size,
    )
    if dry_run:
        mcfg, seq, vocab, batch, warmup, timed = DRY_MODEL, 128, 512, 2, 1, 2
    cfg = preset.pretrain.model_copy(
        update={
            "model": mcfg,
            "batch_size": batch,
            "grad_accum": 1,
            "warmup_steps": 1,
            "checkpoint_every": 10**6,
            "log_every": 50,
        }
    )
    runtime = training.setup(cfg)
    device = runtime.device
    batches = packed_rows(4, batch, seq, vocab)
    torch.manual_seed(0)
    initial = training.new_decoder(mcfg, vocab, seq)
    per_token = flops_per_token(initial, mcfg, seq)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu_name()), None)
    sides = {
        "trainer": (run_trainer, "auto"),
        "bare": (run_bare, "auto"),
        "trainer, dense mask": (run_trainer, "sdpa"),
        "bare, dense mask": (run_bare, "sdpa"),
    }
    result = {}
    for name, (run, kind) in sides.items():
        reset_peak(device)
        seconds = run(
            copy.deepcopy(initial), batches, cfg.model_copy(update={"attention": kind}), device, warmup, timed
        )
        rate = timed * batch * seq / seconds
        result[name] = {
            "attention": attention.resolve(kind, device),
            "tokens_per_s": round(rate),
            "mfu": round(rate * per_token / 1e12 / peak, 4) if peak else None,
            "peak_memory_gib": peak_memory(device),
        }
    return summary(result, runtime, mcfg, seq, batch, per_token, peak, dry_run, timed)


def summary(
    sides: dict, runtime: training.Runtime, mcfg, seq, batch, per_token, peak, dry_run, timed
) -> dict:
    return {
        "gpu": gpu_name(),
        "trainer_mfu": sides["trainer"]["mfu"],
        "bare_mfu": sides["bare"]["mfu"],
        "trainer_tokens_per_s": sides["trainer"]["tokens_per_s"],
        "bare_tokens_per_s": sides["bare"]["tokens_per_s"],
        "trainer_vs_bare": round(sides["trainer"]["tokens_per_s"] / sides["bare"]["tokens_per_s"], 3),
        "seq_len": seq,
        "dtype": str(runtime.dtype).removeprefix("torch."),
        "commit": commit(),
        "torch": torch.__version__,
        "dry_run": dry_run,
        "model": mcfg.model_dump(),
        "batch_size": batch,
        "steps_timed": timed,
        "flops_per_token": per_token,
        "formula": "6*N + 12*n_layers*hidden*seq_len",
        "peak_tflops": peak,
        "sides": sides,
    }


def markdown(res: dict) -> str:
    rows = [
        f"| {name} | {s['attention']} | {s['tokens_per_s']:,} | {s['mfu']} | {s['peak_memory_gib']} |"
        for name, s in res["sides"].items()
    ]
    return "\n".join(
        [
            f"# MFU on {res['gpu']} (torch {res['torch']}, commit {res['commit']})",
            "",
            f"Decoder {res['model']}, batch {res['batch_size']} x {res['seq_len']} packed tokens, {res['dtype']}, "
            f"{res['steps_timed']} timed steps; FLOPs per token = {res['formula']} = {res['flops_per_token']:,}; "
            f"peak {res['peak_tflops']} TFLOP/s.{' DRY RUN (CPU, tiny model): no MFU.' if res['dry_run'] else ''}",
            "",
            "| side | attention | tokens/s | MFU | peak memory GiB |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"trainer / bare tokens/s: {res['trainer_vs_bare']}",
            "",
        ]
    )


def commit() -> str | None:
    """The commit measured (None outside a git checkout, e.g. a copied tree)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
