"""The pretrain stage as a deployable Prefect flow. A small Llama-style decoder trained from scratch on the packed shards."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


@flow(name="pretrain", log_prints=True, persist_result=False)
def pretrain_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """A small Llama-style decoder trained from scratch on the packed shards.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("pretrain", config, overrides, force, home, inputs)
