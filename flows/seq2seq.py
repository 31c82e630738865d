"""The seq2seq stage as a deployable Prefect flow. An encoder-decoder assembled from the encoder and the pretrained decoder, compared with SFT (optional stage)."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


@flow(name="seq2seq", log_prints=True, persist_result=False)
def seq2seq_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """An encoder-decoder assembled from the encoder and the pretrained decoder, compared with SFT (optional stage).

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("seq2seq", config, overrides, force, home, inputs)
