"""The reward stage as a deployable Prefect flow. A reward model (sequence-score head on the SFT model) from the preference pairs."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


# log_prints off: TRL fingerprints datasets with dill, which reads globals from dis.dis output
# captured on sys.stdout; Prefect's print patch would log the disassembly and leave dill none.
@flow(name="reward", log_prints=False, persist_result=False)
def reward_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """Train a reward model on the preference pairs: TRL's RewardTrainer, LoRA on the SFT model.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("reward", config, overrides, force, home, inputs)
