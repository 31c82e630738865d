"""The tokenizer stage as a deployable Prefect flow. Byte-level BPE trained on the corpus, special tokens from schemas/tokens.py."""

from prefect import flow

from flows.stage import run_stage
from schemas.config import PipelineConfig
from schemas.manifest import Ref


@flow(name="tokenizer", log_prints=True, persist_result=False)
def tokenizer_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """Byte-level BPE trained on the corpus, special tokens from schemas/tokens.py.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("tokenizer", config, overrides, force, home, inputs)
