"""The reward stage as a deployable Prefect flow. A reward model (sequence-score head on the SFT model) from the preference pairs."""

from flows.stage import stage_flow

reward_flow = stage_flow(
    "reward",
    "Train a reward model on the preference pairs: TRL's RewardTrainer, LoRA on the SFT model.",
    trl=True,
)
