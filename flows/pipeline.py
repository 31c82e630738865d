"""The whole pipeline, top to bottom: raw text to an aligned model.

    corpus -> tokenizer -> shards -> pretrain -> sft -> dpo

The optional RLHF stages (reward, rl) are flows of their own, run with `lmpipe run reward`
and `lmpipe run rl`; they are not part of this run.

Each stage is its own flow (a subflow here) that skips itself when its artifact is up to
date. The pipeline loads the config and plans every stage once, publishes the plan (run or
skip, and why) as a Prefect markdown artifact, and hands each stage flow the loaded config and
the input refs of its plan: no stage loads the YAML or hashes the raw files again.
"""

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows import tracking
from flows.corpus import corpus_flow
from flows.dpo import dpo_flow
from flows.encoder import encoder_flow
from flows.heads import heads_flow
from flows.plan import plan_markdown
from flows.pretrain import pretrain_flow
from flows.reward import reward_flow
from flows.rl import rl_flow
from flows.seq2seq import seq2seq_flow
from flows.sft import sft_flow
from flows.shards import shards_flow
from flows.stage import Override, Preset, described, loaded
from flows.tokenizer import tokenizer_flow
from schemas.config import PipelineConfig
from schemas.stages import PIPELINE
from tasks.artifacts import Home
from tasks.plan import plan_pipeline

# The pipeline, in order: each stage reads what the ones before it published.
CHAIN = (corpus_flow, tokenizer_flow, shards_flow, pretrain_flow, sft_flow, dpo_flow)
# Optional stages: run by name (`lmpipe run reward`, `lmpipe run encoder`), not by the pipeline.
OPTIONAL = (reward_flow, rl_flow, encoder_flow, heads_flow, seq2seq_flow)
STAGE_FLOWS = {f.name: f for f in (*CHAIN, *OPTIONAL)}


def run_pipeline(
    config: Preset | str | PipelineConfig = "tiny",
    overrides: list[Override] | None = None,
    force: bool = False,
    home: str | None = None,
) -> list[dict]:
    logger = get_run_logger()
    cfg, h = loaded(config, overrides), Home.resolve(home)
    plans = {p.stage: p for p in plan_pipeline(cfg, h, PIPELINE)}
    create_markdown_artifact(
        key="pipeline-plan", markdown=plan_markdown(list(plans.values())), description="what will run and why"
    )
    results = []
    try:
        with tracking.pipeline_run(cfg, h, {"flow_run_id": str(flow_run.id) if flow_run.id else None}):
            for stage_flow in CHAIN:  # training stages' MLflow runs nest under the pipeline's
                inputs = plans[stage_flow.name].inputs
                result = stage_flow(config=cfg, force=force, home=home, inputs=inputs)
                logger.info(
                    f"{result['stage']}: {result['status']} in {result['seconds']}s: {result['figures']}"
                )
                results.append(result)
    except BaseException as e:  # the summary still says how far it got, which stage failed and why
        failed = CHAIN[len(results)].name
        results.append({"stage": failed, "status": "failed", "seconds": "", "figures": reason(e)})
        publish_summary(results, f"failed at {failed}")
        raise
    publish_summary(results, "every stage done")
    return results


pipeline = flow(name="pipeline", log_prints=True, persist_result=False)(
    described(
        run_pipeline,
        "Run every stage in order (corpus, tokenizer, shards, pretrain, sft, dpo); each skips itself when "
        "up to date. The stages are planned once, here: each stage flow gets the loaded config and the "
        "input refs of its plan, so none loads the config or hashes the raw files again.",
    )
)


def reason(error: BaseException) -> str:
    """The first lines of an error, as a person reads it in a table cell."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 600 else text[:600] + "…"


def publish_summary(results: list[dict], outcome: str) -> None:
    create_table_artifact(
        key="pipeline-summary",
        table=results,
        description=f"per stage: ran/skipped/failed, time, figures ({outcome})",
    )
