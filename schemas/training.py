"""Configs of the three training stages (pretrain, sft, dpo), which share one outline.

Runtime-only fields (`log_every`, `checkpoint_every`) do not change the trained weights (a
resumed run equals an uninterrupted one), so they are left out of the fingerprint.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.base import StrictModel, runtime_field


class ModelConfig(StrictModel):
    """A small transformer built from scratch (random init): Llama-style decoder, or a
    ModernBERT-style encoder when pretraining with the masked objective."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(384, ge=8)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "ModelConfig":
        # Checked here, before any stage runs: transformers would fail only when the model is built.
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self


class TrainConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    max_steps: int = Field(100, ge=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    batch_size: int = Field(8, ge=1)  # per process
    # N > 1: the stage trains as N processes through torchrun (DDP; gloo on CPU, one GPU each on
    # CUDA). Each optimizer step then sees processes x grad_accum x batch_size rows.
    processes: int = Field(1, ge=1)
    # M > 1: as many nodes, `processes` each (DDP over nodes x processes ranks; each optimizer
    # step sees nodes x processes x grad_accum x batch_size rows). The flow's node is node 0 and
    # listens on `rendezvous` ("host:port", reachable from the others); the other nodes run the
    # command it logs (docs/scale.md, section 5).
    nodes: int = Field(1, ge=1)
    rendezvous: str | None = runtime_field(None)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    # auto: bf16 autocast on a GPU that has it, float32 elsewhere; float32: also on such a GPU
    # (to rule precision out when a loss misbehaves). It changes the weights: fingerprinted.
    precision: Literal["auto", "float32"] = "auto"
    # The step loop (tasks.training, tasks.steps). None of these changes what is learned, only
    # float rounding, speed and memory, so they are not fingerprinted (like the device).
    # torch.compile of the model's layers: auto = on CUDA only (on CPU compiling costs more than
    # the tiny models gain).
    compile: Literal["auto", "on", "off"] = runtime_field("auto")
    # Recompute each layer's activations in the backward pass: less memory, ~30% more compute.
    activation_checkpointing: bool = runtime_field(False)
    # With processes x nodes > 1: ddp (every rank holds the whole model) or fsdp (FSDP2: weights,
    # gradients and optimizer state sharded over the ranks).
    parallel: Literal["ddp", "fsdp"] = runtime_field("ddp")
    eval_batches: int = Field(8, ge=1)
    seed: int = 0
    log_every: int = runtime_field(10, ge=1)
    # Resume state (weights, optimizer, scheduler, RNG, data position) every N optimizer steps.
    checkpoint_every: int = runtime_field(50, ge=1)


class LoraFields(StrictModel):
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)


class GainFields(StrictModel):
    # The stage's task metric must beat the model it started from (sft: chrF, ROUGE-L and QA F1
    # on the task-token prompts; dpo: preference accuracy; reward: reward accuracy), else the
    # build fails showing the figures. false marks a smoke-test budget, too small to learn: a
    # miss is then a warning in the manifest's contract results, and the build is published.
    require_gain: bool = True


class PretrainConfig(TrainConfig):
    model: ModelConfig = Field(default_factory=ModelConfig)
    # causal: next-token prediction (decoder); masked: BERT-style masked LM (encoder).
    objective: Literal["causal", "masked"] = "causal"
    mask_prob: float = Field(0.15, gt=0, lt=1)
    # The attention kernel on packed rows (tasks.attention): auto = flex (FlexAttention, a block
    # mask, no L x L mask) on CUDA, sdpa (a dense mask) on CPU, where flex cannot train.
    attention: Literal["auto", "flex", "sdpa", "eager"] = runtime_field("auto")


class NoiseConfig(StrictModel):
    """Noisy teacher forcing (tasks.noise): this share of the ordinary input tokens of each
    training example is replaced by a random token or `<mask>`; labels and special tokens never."""

    fraction: float = Field(0.0, ge=0, lt=1)
    replace_with: Literal["random", "mask"] = "random"


class SftConfig(TrainConfig, LoraFields, GainFields):
    lr: float = Field(5e-4, gt=0)
    # full: every weight trains; lora: adapters on attention + the task tokens' embeddings.
    method: Literal["full", "lora"] = "full"
    eval_examples: int = Field(48, ge=1)  # per task, for generation metrics (before vs after)
    eval_max_new_tokens: int = Field(64, ge=1)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    # Each training example of these tasks appears this many times per epoch ({qa: 8}): a task
    # with few records (the default corpus has 219 QA records against 9660 translations) is
    # otherwise seen too rarely to be learned.
    repeat: dict[Literal["translation", "summarization", "qa"], Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict
    )


class DpoConfig(TrainConfig, LoraFields, GainFields):
    lr: float = Field(5e-4, gt=0)
    beta: float = Field(0.1, gt=0)
