"""Prefect glue around the stage transaction (tasks/transaction.py):

    resolve inputs -> fingerprint -> skip or build -> validate -> publish manifest + UI artifacts

The transaction does the work; this runs its build and validate as Prefect tasks, logs to the
flow run, records the run's id and UI link, tracks training in MLflow with a progress bar in the
UI, and publishes the summary, stats, manifest link, lineage and plots as Prefect artifacts.
"""

import base64
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for

from flows import tracking
from runners import prefect_task
from schemas.config import PipelineConfig, load_config
from schemas.manifest import MANIFEST, Manifest, Ref
from tasks import lineage, remote, transaction
from tasks.artifacts import Home
from tasks.report import summary


def run_stage(
    stage: str,
    config: str | PipelineConfig,
    overrides: list[str] | None,
    force: bool,
    home: str | None,
    inputs: list[Ref] | None = None,
    build=None,
) -> dict:
    """`config` is a preset name or YAML path (then `overrides` apply), or the config the
    pipeline loaded; `inputs` are the refs the pipeline planned (None: plan here). `build`
    replaces `tasks.<stage>.build` for a stage that submits its own Prefect tasks."""
    cfg, h = loaded(config, overrides), Home.resolve(home)
    logger = get_run_logger()
    run_id = str(flow_run.id) if flow_run.id else None
    hooks = transaction.Hooks(
        log=logger.info,
        warn=logger.warning,
        task=prefect_task,
        run_id=run_id,
        # PREFECT_UI_URL, else derived from PREFECT_API_URL; None on a temporary server
        run_url=url_for("flow-run", obj_id=run_id) if run_id else None,
        tracked=tracking.stage_run,
    )
    done = transaction.run_stage(stage, cfg, h, force, inputs, build, hooks)
    result = summary(stage, done.status, done.manifest, done.seconds, done.path)
    if done.status == "ran":
        _ui_artifacts(stage, cfg.name, done.manifest, result, h)
        tracking.link(stage, cfg.name, done.manifest)
    return result


def loaded(config: str | PipelineConfig, overrides: list[str] | None) -> PipelineConfig:
    """The config a caller already loaded, or the preset (or YAML file) with the overrides applied:
    flows take either, so a pipeline run parses its `--set` overrides once."""
    return config if isinstance(config, PipelineConfig) else load_config(config, overrides)


def _ui_artifacts(stage: str, name: str, manifest: Manifest, result: dict, home: Home) -> None:
    """Summary (with the manifest itself), stats, a link to the manifest, the lineage table and the
    plots of one build."""
    key = f"{stage}-{name}".lower().replace("_", "-").replace(".", "-")
    path = Path(result["path"])
    # The browser showing the UI cannot open file:// paths on the worker, so the manifest is
    # also shown inline; the link is for a shell on that machine, or the object-store URL.
    where = remote.remote_url(home, stage, path) if home.remote else path.as_uri()
    contracts = "\n".join(
        f"- {'✅' if c.success else '❌'} {c.name} ({c.checked} checked)" for c in manifest.contracts
    )
    create_markdown_artifact(
        key=key,
        markdown=(
            f"# {stage} `{manifest.fingerprint[:12]}`\n\n{result['figures']}\n\n"
            f"Path: `{path}`\n\nManifest: `{path / MANIFEST}`\n\n## Contracts\n{contracts}\n\n"
            f"## Manifest\n\n```json\n{(path / MANIFEST).read_text()}\n```\n"
        ),
        description=f"{stage} artifact summary",
    )
    flat = [{"stat": k, "value": str(v)} for k, v in manifest.stats.items() if k != "rows"]
    create_table_artifact(key=f"{key}-stats", table=flat, description=f"{stage} stats")
    if "comparisons" in manifest.stats:  # training stages: before -> after on validation
        create_table_artifact(
            key=f"{key}-evaluation", table=manifest.stats["comparisons"], description=f"{stage} evaluation"
        )
    create_link_artifact(
        key=f"{key}-manifest",
        link=f"{where}/{MANIFEST}",
        link_text=f"{stage} manifest {manifest.fingerprint[:12]}",
        description=f"{stage}: manifest.json (files, sha256, config, code version, inputs)",
    )
    create_table_artifact(
        key=f"{key}-lineage",
        table=lineage.rows(lineage.upstream(path)),
        description=f"{stage}: upstream artifacts and raw files, with fingerprints (sha256 for raw files)",
    )
    plots = [f.path for f in manifest.files if f.path.endswith(".png")]
    if plots:
        # Inline (data URI): the UI runs in a browser that cannot open file:// paths on the worker.
        images = "\n\n".join(
            f"## {p}\n\n![{p}](data:image/png;base64,{base64.b64encode((path / p).read_bytes()).decode()})"
            for p in plots
        )
        create_markdown_artifact(key=f"{key}-plots", markdown=images, description=f"{stage} plots")
