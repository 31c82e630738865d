"""The heads stage as a deployable Prefect flow. Task heads (classification, tagging, extractive QA) fine-tuned from the masked-LM encoder (optional stage)."""

from prefect import flow

from flows.stage import run_stage


@flow(name="heads", log_prints=True, persist_result=False)
def heads_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """Task heads (classification, tagging, extractive QA) fine-tuned from the masked-LM encoder (optional stage).

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("heads", config, overrides, force, home)
