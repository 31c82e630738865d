"""Config of the reward stage: a reward model from the preference pairs, which the RL stage
scores its completions with."""

from pydantic import Field

from schemas.training import GainFields, LoraFields, TrainConfig, learning_rate


class RewardConfig(TrainConfig, LoraFields, GainFields):
    """A sequence-score head on the SFT model (LoRA on attention, the head trained in full)."""

    lr: float = learning_rate(5e-4)
    # So that the RL stage sees rewards on a stable scale.
    center_rewards: float | None = Field(
        0.01,
        ge=0,
        description="Weight of a loss term pulling the mean reward of each pair towards 0 (TRL's "
        "`center_rewards_coefficient`); null turns it off.",
    )
    eval_pairs: int = Field(
        512, ge=1, description="Validation pairs scored for reward accuracy (chosen scored above rejected)."
    )


def key_figures(s: dict) -> str:
    """Losses and reward accuracy, before -> after."""
    return (
        f"train loss {s['train_loss']}, val loss {s['val_loss_before']} -> {s['val_loss']}, "
        f"reward accuracy {s['val_reward_accuracy_before']} -> {s['val_reward_accuracy']}"
    )
