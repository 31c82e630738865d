"""Config of the reward stage: a reward model from the preference pairs, which the RL stage
scores its completions with."""

from pydantic import Field

from schemas.training import GainFields, LoraFields, TrainConfig


class RewardConfig(TrainConfig, LoraFields, GainFields):
    """A sequence-score head on the SFT model (LoRA on attention, the head trained in full)."""

    lr: float = Field(5e-4, gt=0)
    # Pulls the mean reward of each pair towards 0 (TRL's center_rewards_coefficient), so the
    # RL stage sees rewards on a stable scale; null turns it off.
    center_rewards: float | None = Field(0.01, ge=0)
    eval_pairs: int = Field(512, ge=1)  # validation pairs scored for reward accuracy
