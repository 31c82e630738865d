"""Config of the RL stage: online RL of the SFT model against the reward model (TRL's RLOO;
TRL 1.16 has no PPO trainer, see the README)."""

from pydantic import Field, model_validator

from schemas.training import LoraFields, TrainConfig, learning_rate


class RlConfig(TrainConfig, LoraFields):
    """RLOO: `num_generations` sampled completions per prompt, each one's advantage its reward
    minus the mean reward of the others; the KL to the SFT model (`beta`) is subtracted from
    the reward. `batch_size` counts completions, so it holds batch_size / num_generations prompts."""

    lr: float = learning_rate(5e-4)
    max_steps: int = Field(20, ge=1, description="Optimizer steps to train (each samples fresh completions).")
    beta: float = Field(
        0.05,
        ge=0,
        description="Weight of the KL penalty to the SFT model, subtracted from the reward; 0 turns it off.",
    )
    num_generations: int = Field(
        4,
        ge=2,
        description="Completions sampled per prompt; each is judged against the mean reward of the "
        "others. `batch_size` must be a multiple of it.",
    )
    max_completion_length: int = Field(48, ge=1, description="Most tokens sampled for one completion.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature of the completions: lower is more greedy."
    )
    eval_prompts: int = Field(
        64,
        ge=1,
        description="Validation prompts answered greedily and scored by the reward model, for the SFT "
        "model, the DPO model and the result.",
    )
    eval_max_new_tokens: int = Field(48, ge=1, description="Most tokens generated for one evaluation answer.")

    @model_validator(mode="after")
    def whole_groups(self) -> "RlConfig":
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations ({self.num_generations}): "
                "every prompt's completions go into the same batch"
            )
        return self


def key_figures(s: dict) -> str:
    """Mean reward and preference accuracy of the SFT, DPO and RL models, and the last KL."""
    return (
        ", ".join(
            f"{m}: reward {s[f'val_mean_reward_{m}']}, preference accuracy {s[f'val_preference_accuracy_{m}']}"
            for m in ("sft", "dpo", "rl")
        )
        + f" (KL {s['train_kl_last']})"
    )
