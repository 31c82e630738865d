"""The encoder stage as a deployable Prefect flow. A ModernBERT-style encoder pretrained with masked LM on the packed shards (optional stage)."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


@flow(name="encoder", log_prints=True, persist_result=False)
def encoder_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """A ModernBERT-style encoder pretrained with masked LM on the packed shards (optional stage).

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("encoder", config, overrides, force, home, inputs)
