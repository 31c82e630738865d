"""The dpo stage as a deployable Prefect flow. Preference alignment of the SFT model with TRL's DPO and a LoRA adapter."""

from flows.stage import stage_flow

dpo_flow = stage_flow(
    "dpo", "Preference alignment of the SFT model with TRL's DPO and a LoRA adapter.", trl=True
)
