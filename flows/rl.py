"""The rl stage as a deployable Prefect flow. Online RL (TRL's RLOO) of the SFT model against the reward model."""

from flows.stage import stage_flow

rl_flow = stage_flow(
    "rl",
    "Online RL of the SFT model against the reward model (RLOO, KL penalty to the SFT model), compared with the DPO model on validation preference accuracy and mean reward.",
    trl=True,
)
