"""The sft stage as a deployable Prefect flow. Supervised fine-tuning of the pretrained decoder, loss on answers only."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


@flow(name="sft", log_prints=True, persist_result=False)
def sft_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """Supervised fine-tuning of the pretrained decoder, loss on answers only.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("sft", config, overrides, force, home, inputs)
