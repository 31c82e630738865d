"""The rl stage as a deployable Prefect flow. Online RL (TRL's RLOO) of the SFT model against the reward model."""

from prefect import flow

from flows.stage import run_stage


# log_prints off: TRL fingerprints datasets with dill, which reads globals from dis.dis output
# captured on sys.stdout; Prefect's print patch would log the disassembly and leave dill none.
@flow(name="rl", log_prints=False, persist_result=False)
def rl_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """Online RL of the SFT model against the reward model (RLOO, KL penalty to the SFT model),
    compared with the DPO model on validation preference accuracy and mean reward.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("rl", config, overrides, force, home)
