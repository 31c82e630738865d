"""The sft stage as a deployable Prefect flow. Supervised fine-tuning of the pretrained decoder, loss on answers only."""

from prefect import flow

from flows.stage import run_stage


@flow(name="sft", log_prints=True, persist_result=False)
def sft_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """Supervised fine-tuning of the pretrained decoder, loss on answers only.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("sft", config, overrides, force, home)
