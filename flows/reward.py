"""The reward stage as a deployable Prefect flow. A reward model (sequence-score head on the SFT model) from the preference pairs."""

from prefect import flow

from flows.stage import run_stage


# log_prints off: TRL fingerprints datasets with dill, which reads globals from dis.dis output
# captured on sys.stdout; Prefect's print patch would log the disassembly and leave dill none.
@flow(name="reward", log_prints=False, persist_result=False)
def reward_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """Train a reward model on the preference pairs: TRL's RewardTrainer, LoRA on the SFT model.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("reward", config, overrides, force, home)
