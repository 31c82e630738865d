"""The whole pipeline, top to bottom: raw text to an aligned model.

    corpus -> tokenizer -> shards -> pretrain -> sft -> dpo

The optional RLHF stages (reward, rl) are flows of their own, run with `lmpipe run reward`
and `lmpipe run rl`; they are not part of this run.

Each stage is its own flow (a subflow here) that skips itself when its artifact is up to
date. The plan (run or skip, and why) is published first as a Prefect markdown artifact.
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
from flows.tokenizer import tokenizer_flow
from schemas.config import load_config
from schemas.stages import PIPELINE
from tasks.artifacts import Home
from tasks.plan import plan_pipeline

STAGE_FLOWS = {
    "corpus": corpus_flow,
    "tokenizer": tokenizer_flow,
    "shards": shards_flow,
    "pretrain": pretrain_flow,
    "sft": sft_flow,
    "dpo": dpo_flow,
    "reward": reward_flow,
    "rl": rl_flow,
    # Optional stages: run by name (`lmpipe run encoder`), not by the pipeline.
    "encoder": encoder_flow,
    "heads": heads_flow,
    "seq2seq": seq2seq_flow,
}


@flow(name="pipeline", log_prints=True, persist_result=False)
def pipeline(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> list[dict]:
    """Run every stage in order; `force` rebuilds all of them."""
    logger = get_run_logger()
    cfg, h = load_config(config, overrides), Home.resolve(home)
    plan = plan_pipeline(cfg, h, PIPELINE)
    create_markdown_artifact(
        key="pipeline-plan", markdown=plan_markdown(plan), description="what will run and why"
    )
    results = []
    with tracking.pipeline_run(cfg, h, {"flow_run_id": str(flow_run.id) if flow_run.id else None}):
        for stage in PIPELINE:  # training stages' MLflow runs nest under the pipeline's
            result = STAGE_FLOWS[stage](config=config, overrides=overrides, force=force, home=home)
            logger.info(f"{stage}: {result['status']} in {result['seconds']}s: {result['figures']}")
            results.append(result)
    create_table_artifact(
        key="pipeline-summary", table=results, description="per stage: ran/skipped, time, figures"
    )
    return results
