"""What the training stages share: the model shape, the step loop's fields, LoRA and gain fields.

Runtime-only fields (`log_every`, `checkpoint_every`) do not change the trained weights (a
resumed run equals an uninterrupted one), so they are left out of the fingerprint.
"""

from typing import Any, Literal

from pydantic import Field, model_validator

from schemas.base import StrictModel, runtime_field


class ModelConfig(StrictModel):
    """A small transformer built from scratch (random init): Llama-style decoder, or a
    ModernBERT-style encoder when pretraining with the masked objective."""

    hidden_size: int = Field(
        128, ge=8, description="Width of the model: the size of embeddings and hidden states."
    )
    num_layers: int = Field(2, ge=1, description="Transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads per block; must divide `hidden_size`.")
    intermediate_size: int = Field(384, ge=8, description="Width of the hidden layer of each block's MLP.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "ModelConfig":
        # Checked here, before any stage runs: transformers would fail only when the model is built.
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self


def learning_rate(default: float) -> Any:
    """The `lr` field, with the default of the stage that declares it."""
    return Field(
        default,
        gt=0,
        description="Peak learning rate of AdamW, reached after `warmup_steps` and then decayed "
        "as `schedule` says.",
    )


class TrainConfig(StrictModel):
    """The training loop every training stage shares: AdamW with warmup and a decaying learning
    rate, gradient accumulation and clipping, the validation loss, logging, resume state, and
    the processes and machines it runs on."""

    lr: float = learning_rate(1e-3)
    weight_decay: float = Field(0.0, ge=0, description="AdamW's (decoupled) weight decay; 0 turns it off.")
    warmup_steps: int = Field(
        10, ge=0, description="Optimizer steps over which the learning rate rises linearly to `lr`."
    )
    max_steps: int = Field(
        100,
        ge=1,
        description="Optimizer steps to train: the length of the run (the training data is repeated "
        "in new epochs as needed).",
    )
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine",
        description="The learning rate after warmup: cosine or linear decay to 0 at `max_steps`, "
        "or constant.",
    )
    batch_size: int = Field(
        8,
        ge=1,
        description="Rows per micro-batch in each process (packed rows, examples or pairs). An "
        "optimizer step sees nodes x processes x grad_accum x batch_size rows.",
    )
    processes: int = Field(
        1,
        ge=1,
        description="N > 1: the stage trains as N processes through torchrun (DDP or FSDP, see "
        "`parallel`; gloo on CPU, one GPU each on CUDA).",
    )
    nodes: int = Field(
        1,
        ge=1,
        description="M > 1: train on M machines of `processes` each. The flow's machine is node 0 "
        "and listens on `rendezvous`; the others run the command it logs (docs/scale.md, section 5).",
    )
    rendezvous: str | None = runtime_field(
        None,
        description="`host:port` where node 0 waits for the other nodes (with `nodes` > 1); it must "
        "be reachable from them.",
    )
    grad_accum: int = Field(
        1,
        ge=1,
        description="Micro-batches whose gradients add up to one optimizer step: a larger batch "
        "without more memory.",
    )
    max_grad_norm: float = Field(
        1.0, gt=0, description="Gradients are clipped to this global L2 norm before each optimizer step."
    )
    # It changes the weights, so it is fingerprinted.
    precision: Literal["auto", "float32"] = Field(
        "auto",
        description="`auto`: bf16 autocast on a GPU that has it, float32 elsewhere; `float32`: also "
        "on such a GPU (to rule precision out when a loss misbehaves).",
    )
    # The step loop (tasks.training, tasks.steps). None of these changes what is learned, only
    # float rounding, speed and memory, so they are not fingerprinted (like the device).
    compile: Literal["auto", "on", "off"] = runtime_field(
        "auto",
        description="torch.compile the model's layers. `auto`: on CUDA only (on CPU compiling costs "
        "more than the tiny models gain).",
    )
    activation_checkpointing: bool = runtime_field(
        False,
        description="Recompute each layer's activations in the backward pass: less memory, about "
        "30% more compute.",
    )
    parallel: Literal["ddp", "fsdp"] = runtime_field(
        "ddp",
        description="With processes x nodes > 1: `ddp` (every rank holds the whole model) or `fsdp` "
        "(FSDP2: weights, gradients and optimizer state sharded over the ranks).",
    )
    eval_batches: int = Field(
        8,
        ge=1,
        description="Validation batches over which the validation loss is measured, before and "
        "after training.",
    )
    seed: int = Field(0, description="Seed of the initial weights, the data order and any sampling.")
    log_every: int = runtime_field(
        10,
        ge=1,
        description="Report loss, learning rate and throughput (log, MLflow, progress bar) every N "
        "optimizer steps.",
    )
    checkpoint_every: int = runtime_field(
        50,
        ge=1,
        description="Write resume state (weights, optimizer, scheduler, RNG, data position) every N "
        "optimizer steps; an interrupted build resumes from the last one.",
    )


class LoraFields(StrictModel):
    """LoRA adapters: small low-rank updates trained on the attention projections while the
    model's other weights mostly stay frozen (sft with `method: lora`, dpo, reward, rl)."""

    lora_r: int = Field(
        8,
        ge=1,
        description="Rank of the adapters: more parameters to train, and more capacity.",
    )
    lora_alpha: int = Field(
        16, ge=1, description="LoRA scale: adapter updates are multiplied by lora_alpha / lora_r."
    )
    lora_dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the adapters' inputs during training."
    )


class GainFields(StrictModel):
    """The check that training helped: the build measures its task metric on validation data,
    before and after training."""

    require_gain: bool = Field(
        True,
        description="The stage's task metric must beat the model it started from (sft: chrF, "
        "ROUGE-L and QA F1 on the task-token prompts; dpo: preference accuracy; reward: reward "
        "accuracy), else the build fails showing the figures. `false` marks a smoke-test budget, "
        "too small to learn: a miss is then a warning in the manifest, and the build is published.",
    )


def training_figures(s: dict) -> str:
    """Losses, and what shows the model learned: the unigram baseline, generation metrics,
    preference accuracy (each "before -> after"). Older manifests lack some; they are skipped.
    `train loss 5.1, val loss 7.9 -> 5.3 (unigram baseline 6.37)`."""
    figures = f"train loss {s['train_loss']}, val loss {s['val_loss_before']} -> {s['val_loss']}"
    if "unigram_baseline" in s:
        figures += f" (unigram baseline {s['unigram_baseline']})"
    if "val_masked_accuracy" in s:
        figures += f", masked accuracy {s['val_masked_accuracy']}"
    before, after = s.get("generation_before", {}), s.get("generation", {})
    for task, metric in (("translation", "chrf"), ("summarization", "rougeL"), ("qa", "f1")):
        if metric in after.get(task, {}) and task in before:
            figures += f", {metric} {before[task][metric]:.1f} -> {after[task][metric]:.1f}"
        elif metric in after.get(task, {}):
            figures += f", {metric} {after[task][metric]:.1f}"
    seen, heldout = (
        s.get(k, {}).get("translation", {}) for k in ("generation_instruct", "generation_heldout")
    )
    if "chrf" in seen and "chrf" in heldout:
        figures += f", instruct chrf {seen['chrf']:.1f} (held-out phrasings {heldout['chrf']:.1f})"
    if "val_preference_accuracy" in s:
        figures += (
            f", preference accuracy {s['val_preference_accuracy_before']} -> {s['val_preference_accuracy']}"
        )
    return figures
