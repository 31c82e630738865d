"""The outline every training stage shares: set up -> train -> evaluate -> save.

Pretrain and SFT run `fit` (a plain PyTorch loop: AdamW, warmup + cosine/linear decay,
gradient accumulation, clipping, fixed seeds; CUDA with bf16 autocast when present, else CPU
float32); DPO runs TRL's trainer inside the same outline.

Resume. The data is a `Stream`: micro-batch k of a seeded sequence of epochs, so the data
position is one integer. Every `checkpoint_every` steps `fit` writes, atomically (temp dir +
rename), into the stage's staging directory, which survives a killed run:

    out/resume/step-000050/model.safetensors       weights
                           optimizer.safetensors   AdamW moments + RNG states
                           state.json              step, history, scheduler, param groups,
                                                   input fingerprints (the resume guard)

A rerun continues from the newest one; on CPU its final weights equal an uninterrupted run's
bit for bit (tests/stages/test_training.py kills a run with SIGKILL to prove it). It refuses to resume
when an input artifact (shards, tokenizer, parent checkpoint) has another fingerprint. Nothing
is pickled; `finish` removes the resume state before the directory is published.
"""

import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from schemas.config import ConfigError
from schemas.tokens import BOS, EOS, PAD, token_id
from schemas.training import ModelConfig, TrainConfig
from tasks import memory, sharding, steps, tracking
from tasks.artifacts import fsync_path, read_manifest, sha256_file, write_json
from tasks.faults import crash_point

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
RESUME = "resume"
SUMS = "sha256.json"  # in each resume/step-N: the sha256 of every file, checked before resuming


class ResumeError(RuntimeError):
    """Resume state that does not belong to this run's inputs."""


@dataclass(frozen=True)
class Runtime:
    """Where and in what precision a build trains, and why: chosen once by `setup`, then passed
    along. `Runtime(cpu, torch.float32, "float32 (this CPU has no native bf16: AVX2; 2 threads)")`."""

    device: torch.device
    dtype: torch.dtype  # bfloat16: bf16 autocast; float32: none
    reason: str

    def autocast(self):
        if self.dtype == torch.bfloat16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def setup(cfg: TrainConfig) -> Runtime:
    """Seeds, device and precision: CUDA (this process's GPU under torchrun) when present, else
    CPU, in the precision `cfg.precision` asks for there (`runtime_on`). Logged once.
    """
    torch.manual_seed(cfg.seed)
    rank, size = world()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, min((os.cpu_count() or 1) // size, 4)))
    chosen = runtime_on(device, cfg.precision)
    if rank == 0:
        log.info(f"training on {device} in {chosen.reason}, {size} process(es)")
    return chosen


def runtime_on(device: torch.device, asked: str = "auto") -> Runtime:
    """bf16 autocast on a GPU that supports it (unless `asked` is float32); float32 everywhere
    else. On CPU float32 also where bf16 exists: bf16 autocast on a CPU without native bf16 ran
    SFT/DPO 3.6-5x slower."""
    if device.type == "cuda" and asked == "auto" and torch.cuda.is_bf16_supported():
        return Runtime(device, torch.bfloat16, "bf16 autocast")
    if device.type == "cuda":
        return Runtime(
            device,
            torch.float32,
            "float32 (asked for)" if asked == "float32" else "float32 (this GPU has no bf16)",
        )
    capability, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
    if "BF16" in capability.upper() or "AMX" in capability.upper():
        return Runtime(
            device,
            torch.float32,
            f"float32 (CPU default, although it has native bf16: {capability}; {threads} threads)",
        )
    return Runtime(
        device, torch.float32, f"float32 (this CPU has no native bf16: {capability}; {threads} threads)"
    )


def world() -> tuple[int, int]:
    """(rank, number of processes): (0, 1) unless this process is one of a torchrun group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that evaluates, saves and publishes."""
    return world()[0] == 0


def new_decoder(mcfg: ModelConfig, vocab_size: int, max_positions: int):
    """A Llama-style causal LM with random weights, sized for our tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=mcfg.hidden_size,
        intermediate_size=mcfg.intermediate_size,
        num_hidden_layers=mcfg.num_layers,
        num_attention_heads=mcfg.num_heads,
        num_key_value_heads=mcfg.num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=token_id(PAD),
        bos_token_id=token_id(BOS),
        eos_token_id=token_id(EOS),
        tie_word_embeddings=True,
        use_cache=False,  # packed documents would see each other through the cache path
    )
    return LlamaForCausalLM(config)


def check_memory(stage: str, cfg, new_model: Callable, seq_len: int, vocab: int, device, dense: bool) -> dict:
    """Before training: the memory one optimizer step of `cfg` (a config with `model`) needs,
    estimated from the parameter count of `new_model()` built on the meta device (no memory) and
    the micro-batch's activations; ConfigError naming the fields to lower when it exceeds what
    the device has free. Returns the estimate in MiB.

    >>> check_memory("pretrain", PretrainConfig(model={"hidden_size": 8192, ...}), ...)
    ConfigError: pretrain: one optimizer step needs about 894 GiB (... 53.6B parameters ...) ...
    """
    with torch.device("meta"):
        params = sum(p.numel() for p in new_model().parameters())
    need = step_bytes(
        cfg, params, seq_len, vocab, dense, runtime_on(device, cfg.precision).dtype == torch.bfloat16
    )
    free = memory.available_bytes(device)
    gib = {k: round(v / 2**30, 2) for k, v in need.items()}
    log.info(
        f"{stage}: one optimizer step needs about {gib['total']} GiB of the {free / 2**30:.1f} GiB free on {device}"
    )
    if need["total"] > free:
        raise ConfigError(
            f"{stage}: one optimizer step needs about {gib['total']} GiB (weights, gradients and AdamW "
            f"state of {params / 1e9:.2f}B parameters: {gib['state']} GiB; activations of {cfg.batch_size} "
            f"rows of {seq_len} tokens: {gib['activations']} GiB), but {device} has {free / 2**30:.1f} GiB "
            f"free; lower {stage}.batch_size or {stage}.model (hidden_size {cfg.model.hidden_size}, "
            f"num_layers {cfg.model.num_layers}, intermediate_size {cfg.model.intermediate_size})"
            + ("" if cfg.activation_checkpointing else f", or set {stage}.activation_checkpointing=true")
        )
    return {k: round(v / 2**20) for k, v in need.items()}


def step_bytes(cfg, params: int, seq_len: int, vocab: int, dense: bool, half: bool) -> dict[str, int]:
    """A rough estimate (within a factor of about 2) of one optimizer step's memory: float32
    weights, gradients and AdamW's two moments (16 bytes a parameter), and what one micro-batch
    keeps for the backward pass: per token and layer about 34 x hidden + 5 x heads x seq_len
    bytes in half precision (Korthikanti et al. 2022; the second term only where attention
    scores are materialised: `dense`), twice that in float32, one layer's input per layer with
    activation checkpointing; plus the logits, their softmax and its gradient (float32).
    """
    m, tokens, width = cfg.model, cfg.batch_size * seq_len, 1 if half else 2
    layer = width * (34 * m.hidden_size + (5 * m.num_heads * seq_len if dense else 0))
    kept = (
        width * 2 * m.hidden_size * m.num_layers + layer
        if cfg.activation_checkpointing
        else layer * m.num_layers
    )
    activations = tokens * (kept + 12 * vocab)
    state = 16 * params
    return {"state": state, "activations": activations, "total": state + activations}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier: linear warmup, then cosine/linear decay to 0 (or constant)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress


class Stream:
    """Micro-batch k of an endless sequence of seeded epochs; k is the whole data position.

    `plan(epoch)` lists the row indices of each batch of that epoch (same count every epoch);
    `make(rows, k)` turns them into tensors (k seeds anything random, such as MLM masking). With plan = lambda e: [[0, 1], [2, 3]]:
    stream.rows(3) == [2, 3] (epoch 1, second batch).
    """

    def __init__(self, plan: Callable[[int], list[list[int]]], make: Callable[[list[int], int], Batch]):
        self.plan, self.make = plan, make
        self._epoch, self._batches = 0, plan(0)
        if not self._batches:
            raise ValueError("the training split has fewer rows than one batch")

    def rows(self, k: int) -> list[int]:
        epoch, i = divmod(k, len(self._batches))
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self.plan(epoch)
        return self._batches[i]

    def __call__(self, k: int) -> Batch:
        return self.make(self.rows(k), k)


def fit(
    model, stream: Stream, cfg: TrainConfig, runtime: Runtime, out: Path, inputs: dict[str, Path], stage: str
):
    """Train to `cfg.max_steps` optimizer steps, resuming from `out/resume/` if a run left one.

    Under torchrun each of the N processes takes every N-th micro-batch of the stream and DDP
    (or FSDP, `parallel: fsdp`) averages the gradients, which is the same update as
    `grad_accum` x N in one process (tests/stages/test_distributed.py). Only rank 0 logs and writes
    resume state. The loop reads figures back from the device only every `log_every` steps
    (tasks.steps).
    Returns the loss history, one entry per step: {"step", "loss", "lr", "tokens", "grad_norm"}
    (all ranks); rank 0 also logs each step to the tracked run, if any (tasks/tracking.py).
    """
    device = runtime.device
    runner = distributed(model.to(device).train(), device, cfg)
    params = [p for p in runner.parameters() if p.requires_grad]
    optimizer = steps.optimizer(params, cfg.lr, cfg.weight_decay, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg))
    guard = input_fingerprints(inputs)
    history = resume(out, model, runner, optimizer, scheduler, guard)
    meter = Meter(cfg.max_steps, cfg.log_every)
    rank, size = world()
    ks = (k * size + rank for k in itertools.count(len(history) * cfg.grad_accum))
    batches = steps.Prefetch(stream, ks, device, depth=2 if device.type == "cuda" else 0)
    pending = steps.Pending(len(history), stage)

    def record(entries: list[tuple[dict, float]]) -> None:
        for entry, at in entries:
            history.append(entry)
            meter.update(entry)
            if is_main():
                tracking.log_step(entry, cfg.max_steps, cfg.log_every, stage, at)

    try:
        for step in range(len(history), cfg.max_steps):
            pending.add(*train_step(runner, batches, cfg, params, optimizer, scheduler, runtime))
            crash_point(stage, f"step-{step + 1}")
            done, save = step + 1, (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.max_steps
            if done % cfg.log_every == 0 or save or done == cfg.max_steps:
                record(pending.settle(reduce_over_ranks))
            if save:
                save_resume(out, step + 1, (model, runner), optimizer, scheduler, history, guard)
    except Exception:
        if size == 1:  # the steps run before a failure still reach the log and the tracked run
            with contextlib.suppress(Exception):
                record(pending.settle(reduce_over_ranks))
        raise
    finally:
        batches.close()
    if sharded(runner):  # the stage evaluates and saves the plain model (rank 0)
        sharding.gather_into(model, runner, rank)
        model.to(device)
    return history


def distributed(model, device, cfg: TrainConfig):
    """The module the steps run, prepared (checkpointing, compiled layers: tasks.steps): the model
    itself in one process; with several, the model under DDP (`parallel: ddp`) or a sharded
    copy of it (`parallel: fsdp`, tasks.sharding; the model then waits on the host)."""

    def prepare(m):
        return steps.prepare(m, cfg.compile, cfg.activation_checkpointing, device)

    if world()[1] > 1 and cfg.parallel == "fsdp":
        return sharding.shard(model, device, prepare)
    prepare(model)
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sharded(runner) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(runner, FSDPModule)


def accumulating(runner, last: bool):
    """Gradients are synchronised over the ranks once per optimizer step, on the last
    micro-batch: DDP's `no_sync` before it, FSDP's gradient sync turned off before it."""
    if sharded(runner):
        runner.set_requires_gradient_sync(last)
    elif not last and world()[1] > 1:
        return runner.no_sync()
    return contextlib.nullcontext()


def train_step(model, batches, cfg, params, optimizer, scheduler, runtime: Runtime):
    """One optimizer step over `grad_accum` micro-batches from `batches`; returns (loss, scored
    tokens, gradient norm before clipping) as device tensors, unsynchronised, and the learning
    rate it used."""
    total, tokens = 0, 0
    for micro in range(cfg.grad_accum):
        batch = next(batches)
        with accumulating(model, last=micro == cfg.grad_accum - 1):
            with runtime.autocast():
                loss = model(**batch, use_cache=False).loss / cfg.grad_accum
            loss.backward()
        total = total + loss.detach().double()  # float64, as a sum of Python floats was
        tokens = tokens + (batch["labels"] != -100).sum()
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    if hasattr(norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
        norm = norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total, tokens, norm, scheduler.get_last_lr()[0]


def reduce_over_ranks(figures: torch.Tensor) -> torch.Tensor:
    """[losses, tokens, grad norms] of several steps summed over the ranks, losses then averaged
    (every rank records the same global figures; the norm is already global); unchanged in a
    single process."""
    size = world()[1]
    if size == 1:
        return figures
    import torch.distributed as dist

    dist.all_reduce(figures)
    return figures / torch.tensor([[size], [1], [size]], dtype=figures.dtype, device=figures.device)


class Meter:
    """Progress lines: step, loss, learning rate, scored tokens/s, time left."""

    def __init__(self, max_steps: int, every: int):
        self.max_steps, self.every, self.tokens, self.start = max_steps, every, 0, time.perf_counter()

    def update(self, h: dict) -> None:
        self.tokens += h["tokens"]
        if (h["step"] % self.every and h["step"] != self.max_steps) or not is_main():
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / max(self.tokens, 1) * h["tokens"] * (self.max_steps - h["step"])
        log.info(
            f"step {h['step']}/{self.max_steps} [{h['step'] / self.max_steps:4.0%}] loss {h['loss']:.4f} "
            f"lr {h['lr']:.2e} {self.tokens / elapsed:,.0f} tok/s, ~{left:.0f}s left"
        )


def input_fingerprints(inputs: dict[str, Path]) -> dict[str, str]:
    """{input stage: fingerprint}, read from each input artifact's manifest."""
    return {stage: read_manifest(path).fingerprint for stage, path in sorted(inputs.items())}


def latest_resume(out: Path) -> Path | None:
    """The newest resume state whose files match the sha256 recorded when it was saved.

    A state that does not (a flipped byte, a planted file) is never loaded: it is set aside as
    `resume/refused-step-N` with a warning naming the file, and the next older state (or
    step 0) is used instead."""
    for ckpt in sorted((out / RESUME).glob("step-*"), reverse=True):
        problem = resume_problem(ckpt)
        if not problem:
            return ckpt
        log.warning(f"refusing resume state {ckpt}: {problem}; resuming from an older state or step 0")
        set_aside(ckpt)
    return None


def set_aside(ckpt: Path) -> None:
    """Rename a refused resume state to `refused-step-N`: kept to look at, never resumed from."""
    refused = ckpt.with_name(f"refused-{ckpt.name}")
    shutil.rmtree(refused, ignore_errors=True)
    os.rename(ckpt, refused)


def resume_problem(ckpt: Path) -> str:
    """What is wrong with a resume state's files, or "" when each matches its recorded sha256.

    >>> resume_problem(Path("out/resume/step-000004"))  # after a byte of the weights flipped
    'out/resume/step-000004/model.safetensors: sha256 3f1c0a9e2b7d differs from the saved 9d2e41c07a55'
    """
    try:
        sums = json.loads((ckpt / SUMS).read_text())
    except (OSError, ValueError):
        return f"{ckpt / SUMS} is missing or unreadable"
    found = {f.relative_to(ckpt).as_posix() for f in ckpt.rglob("*") if f.is_file()} - {SUMS}
    for name in sorted(found - set(sums)):
        return f"{ckpt / name}: not written by this run (a planted file?)"
    for name, digest in sorted(sums.items()):
        actual = sha256_file(ckpt / name) if name in found else "missing"
        if actual != digest:
            return f"{ckpt / name}: sha256 {actual[:12]} differs from the saved {digest[:12]}"
    return ""


def save_resume(out: Path, step: int, models, optimizer, scheduler, history: list[dict], guard: dict):
    """Write resume state for `step` atomically (temp dir, fsync, rename); keep only the newest.
    `models` is (the plain model, the module the steps run); every rank calls this (a sharded
    run gathers its weights and moments), rank 0 writes."""
    model, runner = models
    if sharded(runner):
        opt = sharding.optimizer_state(runner, optimizer)
        sharding.gather_into(model, runner, world()[0])
    else:
        opt = optimizer.state_dict()
    if not is_main():
        return None
    root = out / RESUME
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    tensors = {f"state.{i}.{k}": v.contiguous() for i, s in opt["state"].items() for k, v in s.items()}
    save_file({**tensors, **rng_tensors()}, str(tmp / "optimizer.safetensors"))
    state = {
        "step": step,
        "history": history,
        "inputs": guard,
        "param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
    }
    write_json(tmp / "state.json", state)
    return commit_resume(tmp, root, step)


def commit_resume(tmp: Path, root: Path, step: int) -> Path:
    """Make the fully written `tmp` the resume state of `step` (fsync, rename), drop older ones."""
    crash_point("training", f"saving-step-{step}")  # written, not yet renamed: must stay invisible
    files = sorted(f for f in tmp.rglob("*") if f.is_file() and f.name != SUMS)
    write_json(tmp / SUMS, {f.relative_to(tmp).as_posix(): sha256_file(f) for f in files})
    for f in [*files, tmp / SUMS]:
        fsync_path(f)
    final = root / f"step-{step:06d}"
    os.rename(tmp, final)
    fsync_path(root)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old)
    log.info(f"resume state saved at step {step}")
    return final


def resume(out: Path, model, runner, optimizer, scheduler, guard: dict) -> list[dict]:
    """Load the newest resume state into model/optimizer/scheduler/RNG; its history, or [].
    A sharded `runner` gets the weights and moments sharded from the plain files."""
    found = checked_resume(out, guard)
    if found is None:
        return []
    ckpt, state = found
    load_model(model, str(ckpt / "model.safetensors"))
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    restore_rng(tensors)
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, i, name = key.split(".", 2)
            per_param.setdefault(int(i), {})[name] = value
    moments = {"state": per_param, "param_groups": state["param_groups"]}
    if sharded(runner):
        sharding.load(runner, optimizer, model.state_dict(), moments)
    else:
        optimizer.load_state_dict(moments)
    scheduler.load_state_dict(state["scheduler"])
    log.info(f"resuming from {ckpt} (step {state['step']})")
    return state["history"]


def checked_resume(out: Path, guard: dict) -> tuple[Path, dict] | None:
    """The newest resume state and its state.json, once it is known to come from these inputs."""
    ckpt = latest_resume(out)
    if ckpt is None:
        return None
    state = json.loads((ckpt / "state.json").read_text())
    try:
        check_inputs(state["inputs"], guard, ckpt)
    except ResumeError:
        set_aside(ckpt)  # a failed build keeps resume/ (tasks.artifacts.staging): not this state
        raise
    return ckpt, state


def check_inputs(saved: dict, now: dict, ckpt: Path) -> None:
    changed = [
        f"{s} {saved.get(s, 'none')[:12]} -> {now.get(s, 'none')[:12]}" for s in now if saved.get(s) != now[s]
    ]
    if changed:
        raise ResumeError(
            f"refusing to resume from {ckpt}: input changed since it was written: {', '.join(changed)}. "
            "The resume state was made from other data; the next run starts from step 0."
        )


def rng_tensors() -> dict[str, torch.Tensor]:
    rng = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return rng


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors.pop("rng.cpu"))
    cuda = [tensors.pop(k) for k in sorted(k for k in list(tensors) if k.startswith("rng.cuda."))]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)


def cached_json(path: Path, compute: Callable[[], dict]) -> dict:
    """`compute()` once per staging dir: a resumed run reuses the figures measured before training.
    Only rank 0 measures; other ranks get {}."""
    if not is_main():
        return {}
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, value)
    return value


@torch.no_grad()
def evaluate(model, batches: list[Batch], runtime: Runtime) -> float:
    """Mean loss per scored token over the given batches."""
    device = runtime.device
    model.to(device).eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"] != -100).sum())  # causal labels start with -100: same count
        with runtime.autocast():
            total += model(**batch, use_cache=False).loss.item() * n
        count += n
    model.train()
    return total / max(count, 1)


def finish(out: Path, model, tokenizer_dir: Path, history: list[dict], metrics: dict, card: str) -> None:
    """Drop the resume state, then save the checkpoint that gets published."""
    shutil.rmtree(out / RESUME, ignore_errors=True)
    save_checkpoint(model, tokenizer_dir, out, history, metrics, card)


def save_checkpoint(
    model, tokenizer_dir: Path, out: Path, history: list[dict], metrics: dict, card: str
) -> None:
    """Weights (safetensors), config, tokenizer, loss history and curve, metrics, model card."""
    model.save_pretrained(out)  # safetensors by default in transformers 5
    for f in tokenizer_dir.glob("tokenizer*.json"):
        shutil.copy(f, out / f.name)
    (out / "history.json").write_text(json.dumps(history) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_losses(history, out / "loss.png", metrics)
    (out / "README.md").write_text(card)


def plot_losses(history: list[dict], path: Path, metrics: dict) -> None:
    """Train loss per step and, on the same axes, validation loss before and after training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train")
    if "val_loss_before" in metrics and "val_loss" in metrics and history:
        ax.plot(
            [0, history[-1]["step"]],
            [metrics["val_loss_before"], metrics["val_loss"]],
            "o--",
            label="validation",
        )
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def model_card(
    stage: str, metrics: dict, cfg: TrainConfig, inputs: dict[str, Path], auto: str = "AutoModelForCausalLM"
) -> str:
    fingerprints = input_fingerprints(inputs)
    lines = [
        f"# lmpipe {stage} checkpoint",
        "",
        "Load (no remote code, safetensors only):",
        "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        f"model = {auto}.from_pretrained(path, use_safetensors=True)",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        "```",
        "",
        "## Evaluation (validation split)",
        "",
        "| metric | before | after | improved |",
        "|---|---|---|---|",
        *[
            f"| {c['metric']} | {c['before']} | {c['after']} | {'yes' if c['improved'] else 'no'} |"
            for c in metrics.get("comparisons", [])
        ],
        "",
        "## Metrics",
        *[f"- {k}: {v}" for k, v in metrics.items() if not isinstance(v, dict | list)],
        "",
        "All figures, per task: metrics.json; loss per step: history.json, loss.png.",
        "",
        "## Inputs",
        *[f"- {k}: {p} (fingerprint {fingerprints[k][:12]})" for k, p in inputs.items()],
        "",
        "## Config",
        "```json",
        json.dumps(cfg.model_dump(), indent=2),
        "```",
        "",
        "File hashes and the full lineage: see manifest.json.",
    ]
    return "\n".join(lines) + "\n"


def trainer_args(cfg: TrainConfig, output_dir: str, save: bool = False) -> dict:
    """The TRL/Trainer arguments every TRL-based stage shares (CPU float32, bf16 on CUDA); with
    `save`, a checkpoint every `checkpoint_every` steps (see `resume_callback`)."""
    cuda = torch.cuda.is_available()
    return {
        "output_dir": output_dir,
        "use_cpu": not cuda,  # else TRL asks for bf16/GPU on a CPU machine
        "bf16": runtime_on(torch.device("cuda" if cuda else "cpu"), cfg.precision).dtype == torch.bfloat16,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "lr_scheduler_type": cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
        "warmup_steps": cfg.warmup_steps,
        "max_grad_norm": cfg.max_grad_norm,
        "seed": cfg.seed,
        "logging_steps": cfg.log_every,
        "save_strategy": "steps" if save else "no",
        "save_steps": cfg.checkpoint_every,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def resume_callback(stage: str, out: Path, guard: dict):
    from transformers import TrainerCallback

    class Resume(TrainerCallback):
        """After each step: the crash point; after each log: a non-finite loss stops the stage;
        after each save: the guard, then the atomic commit (the same `resume/step-N` layout
        and rename as `fit`)."""

        def on_step_end(self, args, state, control, **kwargs):
            crash_point(stage, f"step-{state.global_step}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            # logged before the same step's save: a diverged state is never committed
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise steps.diverged(stage, loss, state.global_step)

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            written = Path(args.output_dir) / f"checkpoint-{step}"
            write_json(written / "state.json", {"step": step, "inputs": guard})
            commit_resume(written, out / RESUME, step)

    return Resume()


def logged_loss(history: list[dict], trained) -> float:
    """The mean of the last (up to 10) logged training losses: the same for a resumed run, where
    a TRL trainer's own `training_loss` averages only the steps since the resume. A run too short
    to log a loss gives the trainer's mean."""
    last = [h["loss"] for h in history[-10:]]
    return round(sum(last) / len(last) if last else trained.training_loss, 4)
