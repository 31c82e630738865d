"""A training stage's MLflow run and its live progress bar in the Prefect UI.

The MLflow work is in tasks/tracking.py; this adds what only a flow knows: the Prefect run and
its UI link as tags, and a progress artifact (`<stage>-<config>-progress`) that the training
loop moves while the build runs.
"""

import contextlib
import json
from collections.abc import Iterator

from prefect.artifacts import create_link_artifact, create_progress_artifact, update_progress_artifact

from flows.lineage import artifact_key
from schemas.base import fingerprint_view
from schemas.manifest import Manifest
from schemas.stages import STAGES
from tasks import lineage, tracking
from tasks.artifacts import Home, input_dir


@contextlib.contextmanager
def stage_run(stage: str, cfg, plan, record: dict, home: Home) -> Iterator[tracking.Run | None]:
    """The build's MLflow run, named `<stage>-<config>-<fp12>`, for a training stage (None for
    data stages, or when tracking is off or unreachable)."""
    if STAGES[stage].root != "checkpoints":
        yield None
        return
    # manifests only: run_stage has checked the inputs' files already
    upstream = [lineage.upstream(input_dir(ref, home), home) for ref in plan.inputs if ref.stage != "raw"]
    tags = {
        "lmpipe.stage": stage,
        "lmpipe.config": cfg.name,
        "lmpipe.code": json.dumps(record["code"], sort_keys=True),
        "lmpipe.flow_run_id": record["flow_run_id"],
        "lmpipe.flow_run_url": record["flow_run_url"],
        **tracking.lineage_tags(upstream),
    }
    with tracking.stage_run(
        tracking.store(cfg.tracking, home.artifacts),
        f"{stage}-{cfg.name}-{plan.fingerprint[:12]}",
        plan.fingerprint,
        tracking.flatten({stage: fingerprint_view(cfg.section(stage))}),
        tags,
        resume=STAGES[stage].resumable,
        progress=tracking.Progress(progress_bar(stage, cfg.name, plan.fingerprint)),
    ) as run:
        yield run


def progress_bar(stage: str, name: str, fingerprint: str):
    """A Prefect progress artifact at 0%, and the function that moves it."""
    artifact = create_progress_artifact(
        progress=0.0,
        key=artifact_key(stage, name, fingerprint[:12], "progress"),
        description=f"{stage}: training",
    )

    def show(step: int, max_steps: int, figures: dict) -> None:
        said = ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
        update_progress_artifact(
            artifact,
            100.0 * step / max(max_steps, 1),
            description=f"{stage}: step {step}/{max_steps}, {said}",
        )

    return show


def link(stage: str, name: str, manifest: Manifest) -> None:
    """The stage run's Prefect artifact that points at its MLflow run."""
    if manifest.mlflow_run_url:
        create_link_artifact(
            key=artifact_key(stage, name, manifest.fingerprint[:12], "mlflow"),
            link=manifest.mlflow_run_url,
            link_text=f"MLflow run {stage}-{name}-{manifest.fingerprint[:12]}",
            description=f"{stage}: metrics per step, params, tags and plots in MLflow (run {manifest.mlflow_run_id})",
        )


@contextlib.contextmanager
def pipeline_run(cfg, home: Home, record: dict) -> Iterator[tracking.Run | None]:
    """The parent MLflow run of a pipeline run: stage runs opened inside it are nested."""
    tags = {"lmpipe.config": cfg.name, **{f"lmpipe.{k}": v for k, v in record.items()}}
    with tracking.pipeline_run(
        tracking.store(cfg.tracking, home.artifacts), f"pipeline-{cfg.name}", tags
    ) as run:
        yield run
