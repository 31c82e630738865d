"""The `plan` deployment: what `lmpipe run` would do with a config and overrides, running nothing.

    prefect deployment run plan/plan --param 'overrides=["sft.lr=0.0001"]'

publishes one table, per stage: run or skip, the fingerprint, and why (the config field that
changed, the input whose fingerprint changed, the raw file whose content changed).
"""

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.lineage import artifact_key
from flows.stage import Override, Preset, described
from schemas.config import load_config
from schemas.stages import PIPELINE
from tasks.artifacts import Home
from tasks.plan import StagePlan, plan_pipeline


def plan_markdown(plan: list[StagePlan]) -> str:
    rows = ["| stage | action | fingerprint | why |", "|---|---|---|---|"]
    rows += [
        f"| {p.stage} | {p.action} | `{p.fingerprint[:12]}` | {'; '.join(p.reasons) or 'up to date'} |"
        for p in plan
    ]
    return "# Plan\n\n" + "\n".join(rows) + "\n"


def run_plan(
    config: Preset | str = "tiny", overrides: list[Override] | None = None, home: str | None = None
) -> list[dict]:
    cfg = load_config(config, overrides)
    plan = plan_pipeline(cfg, Home.resolve(home), PIPELINE)
    create_markdown_artifact(
        key=artifact_key("plan", cfg.name), markdown=plan_markdown(plan), description="what would run and why"
    )
    for p in plan:
        print(f"{p.stage:<10} {p.action:<5} {p.fingerprint[:12]}  {'; '.join(p.reasons) or 'up to date'}")
    return [
        {"stage": p.stage, "action": p.action, "fingerprint": p.fingerprint, "why": p.reasons} for p in plan
    ]


plan_flow = flow(name="plan", log_prints=True, persist_result=False)(
    described(
        run_plan, "Publish, per pipeline stage, whether a run would build or skip it, and why. Runs nothing."
    )
)
