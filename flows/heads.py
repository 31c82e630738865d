"""The heads stage as a deployable Prefect flow. Task heads (classification, tagging, extractive QA) fine-tuned from the masked-LM encoder (optional stage)."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


@flow(name="heads", log_prints=True, persist_result=False)
def heads_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """Task heads (classification, tagging, extractive QA) fine-tuned from the masked-LM encoder (optional stage).

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("heads", config, overrides, force, home, inputs)
