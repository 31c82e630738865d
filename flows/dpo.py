"""The dpo stage as a deployable Prefect flow. Preference alignment of the SFT model with TRL's DPO and a LoRA adapter."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


# log_prints off: TRL fingerprints datasets with dill, which reads globals from dis.dis output
# captured on sys.stdout; Prefect's print patch would log the disassembly and leave dill none.
@flow(name="dpo", log_prints=False, persist_result=False)
def dpo_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """Preference alignment of the SFT model with TRL's DPO and a LoRA adapter.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("dpo", config, overrides, force, home, inputs)
