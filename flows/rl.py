"""The rl stage as a deployable Prefect flow. Online RL (TRL's RLOO) of the SFT model against the reward model."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


# log_prints off: TRL fingerprints datasets with dill, which reads globals from dis.dis output
# captured on sys.stdout; Prefect's print patch would log the disassembly and leave dill none.
@flow(name="rl", log_prints=False, persist_result=False)
def rl_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """Online RL of the SFT model against the reward model (RLOO, KL penalty to the SFT model),
    compared with the DPO model on validation preference accuracy and mean reward.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("rl", config, overrides, force, home, inputs)
