"""Prefect glue around the stage transaction (tasks/transaction.py):

    resolve inputs -> fingerprint -> skip or build -> validate -> publish manifest + UI artifacts

The transaction does the work; this runs its build and validate as Prefect tasks, logs to the
flow run, records the run's id and UI link, tracks training in MLflow with a progress bar in the
UI, and publishes the summary, stats, manifest link, lineage and plots as Prefect artifacts.
"""

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for
from pydantic import Field

from flows import tracking
from flows.lineage import artifact_key, publish_picture
from runners import WorkerDied, prefect_task, tie_to_worker, worker_died
from schemas.config import PRESETS_DIR, PipelineConfig, load_config
from schemas.manifest import MANIFEST, Manifest, Ref
from schemas.reference import override_pattern
from tasks import lineage, remote, transaction
from tasks.artifacts import Home
from tasks.report import summary

# The run form of the Prefect UI shows these types and descriptions, and the server refuses a
# value that does not fit before a run exists (deployments enforce their parameter schema).
Preset = Literal[tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))]
Override = Annotated[str, Field(pattern=override_pattern())]
ARGS = {
    "config": "A preset (tiny: the embedded default; gpu: the GPU worker's) or the path of a YAML "
    "config on the worker. The pipeline passes the config it loaded.",
    "overrides": "Config changes as stage.field=value items, e.g. sft.lr=0.0001 or "
    "pretrain.model.hidden_size=256 (the value is read as YAML). An unknown key is refused before "
    "the run starts; docs/config.md lists every field.",
    "force": "Rebuild even when a published artifact is up to date.",
    "home": "Where artifacts live: a folder, or an s3:// URL. Default: LMPIPE_HOME, else the checkout's data/ and checkpoints/.",
    "inputs": "Set by the pipeline (the input artifacts it planned); leave empty.",
}


def described(fn: Callable, summary: str) -> Callable:
    """`fn` with `summary` and a Google-style Args section for each of its parameters, which
    Prefect shows as the parameters' descriptions."""
    names = [n for n in fn.__code__.co_varnames[: fn.__code__.co_argcount] if n in ARGS]
    fn.__doc__ = f"{summary}\n\nArgs:\n" + "".join(f"    {n}: {ARGS[n]}\n" for n in names)
    return fn


def stage_flow(stage: str, summary: str, build: Callable | None = None, trl: bool = False):
    """The deployable flow of one stage: `sft_flow = stage_flow("sft", "Supervised fine-tuning ...")`.
    `build(section, inputs, staging_dir) -> stats` replaces `tasks.<stage>.build` (a stage that
    submits its own Prefect tasks). `trl`: the stage trains with TRL, whose dataset fingerprinting
    (dill) reads globals from `dis.dis` output captured on sys.stdout; Prefect's print capture
    (log_prints) would log the disassembly and leave dill none, so it is off for those."""

    def run(
        config: Preset | str | PipelineConfig = "tiny",
        overrides: list[Override] | None = None,
        force: bool = False,
        home: str | None = None,
        inputs: list[Ref] | None = None,
    ) -> dict:
        return run_stage(stage, config, overrides, force, home, inputs, build)

    run.__name__ = run.__qualname__ = f"{stage}_flow"
    return flow(name=stage, log_prints=not trl, persist_result=False)(described(run, summary))


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
    worker = tie_to_worker()
    try:
        done = transaction.run_stage(stage, cfg, h, force, inputs, build, prefect_hooks())
    except BaseException as e:
        if not worker_died(worker):
            failed(stage, cfg.name, e)
            raise
        died = WorkerDied(f"the worker (pid {worker}) that started this run died while {stage} was building")
        failed(stage, cfg.name, died)
        raise died from e
    result = summary(stage, done.status, done.manifest, done.seconds, done.path)
    if done.status == "ran":
        _ui_artifacts(stage, cfg.name, done.manifest, result, h)
        tracking.link(stage, cfg.name, done.manifest)
    else:
        reused(done.manifest, done.path)
    return result


def failed(stage: str, name: str, error: BaseException) -> None:
    """Why the run failed, on its Artifacts tab (the state message alone hides in Details)."""
    create_markdown_artifact(
        key=artifact_key(stage, name, "failed"),
        markdown=f"# {stage}/{name} failed\n\n```\n{type(error).__name__}: {error}\n```\n\n"
        "Nothing was published: the staging directory is removed, or kept for a resumable stage's next run.",
        description=f"{stage}: why this run failed",
    )


def reused(manifest: Manifest, path: Path) -> None:
    """A skipped run says which artifact it reused and links the run that built it."""
    built_by = (
        f"[the flow run that built it]({manifest.flow_run_url})"
        if manifest.flow_run_url
        else "an earlier run"
    )
    create_markdown_artifact(
        key=artifact_key(manifest.stage, manifest.name, manifest.fingerprint[:12], "skipped"),
        markdown=f"Up to date: reused `{manifest.stage}/{manifest.name}` `{manifest.fingerprint[:12]}` at "
        f"`{path}`, built {manifest.created_at[:19]} by {built_by}.",
        description=f"{manifest.stage}: skipped, nothing changed",
    )


def prefect_hooks() -> transaction.Hooks:
    """The transaction's view of this flow run: its logger, tasks, id, UI link, MLflow, try."""
    logger, run_id = get_run_logger(), str(flow_run.id) if flow_run.id else None
    return transaction.Hooks(
        log=logger.info,
        warn=logger.warning,
        task=prefect_task,
        run_id=run_id,
        # PREFECT_UI_URL, else derived from PREFECT_API_URL; None on a temporary server
        run_url=url_for("flow-run", obj_id=run_id) if run_id else None,
        tracked=tracking.stage_run,
        attempt=flow_run.run_count or 1,
    )


def loaded(config: str | PipelineConfig, overrides: list[str] | None) -> PipelineConfig:
    """The config a caller already loaded, or the preset (or YAML file) with the overrides applied:
    flows take either, so a pipeline run parses its `--set` overrides once."""
    return config if isinstance(config, PipelineConfig) else load_config(config, overrides)


def _ui_artifacts(stage: str, name: str, manifest: Manifest, result: dict, home: Home) -> None:
    """Summary (rendered, with the manifest itself), stats, evaluation, a link to the manifest,
    the lineage picture with each node's run, what this build made stale, and the plots. Keys
    carry the fingerprint, so variants of a stage are told apart: `sft-tiny-41f461862573-stats`."""
    key = artifact_key(stage, name, manifest.fingerprint[:12])
    path = Path(result["path"])
    create_markdown_artifact(
        key=key, markdown=summary_markdown(manifest, result, path), description=f"{stage} artifact summary"
    )
    flat = [{"stat": k, "value": str(v)} for k, v in manifest.stats.items() if k != "rows"]
    create_table_artifact(key=f"{key}-stats", table=flat, description=f"{stage} stats")
    if "comparisons" in manifest.stats:  # training stages: before -> after on validation
        create_table_artifact(
            key=f"{key}-evaluation", table=manifest.stats["comparisons"], description=f"{stage} evaluation"
        )
    # The browser cannot open file:// paths on the worker: a remote home gets the object's URL.
    where = remote.remote_url(home, stage, path) if home.remote else path.as_uri()
    create_link_artifact(
        key=f"{key}-manifest",
        link=f"{where}/{MANIFEST}",
        link_text=f"{stage} manifest {manifest.fingerprint[:12]}",
        description=f"{stage}: manifest.json (files, sha256, config, code version, inputs)",
    )
    publish_picture(lineage.upstream(path, home), lineage.downstream(home, path), f"{key}-lineage")
    stale = lineage.made_stale(home, manifest)
    create_table_artifact(
        key=f"{key}-stale",
        table=stale
        or [{"stale": f"nothing: no published artifact was built from an earlier {stage}/{name}"}],
        description=f"published artifacts built from an earlier {stage}/{name}: out of date now",
    )
    plots = [f.path for f in manifest.files if f.path.endswith(".png")]
    if plots:
        images = "\n\n".join(
            f"## {p}\n\n![{p}](data:image/png;base64,{base64.b64encode((path / p).read_bytes()).decode()})"
            for p in plots
        )
        create_markdown_artifact(key=f"{key}-plots", markdown=images, description=f"{stage} plots")


def summary_markdown(manifest: Manifest, result: dict, path: Path) -> str:
    """The manifest rendered for a reader (figures, inputs, contracts, timings), then in full."""
    inputs = "\n".join(f"| {r.stage} | `{r.name}` | `{r.fingerprint[:12]}` |" for r in manifest.inputs)
    contracts = "\n".join(
        f"- {'✅' if c.success else '❌'} {c.name} ({c.checked} checked)" for c in manifest.contracts
    )
    timings = ", ".join(f"{k} {v}" for k, v in manifest.timings.items())
    return (
        f"# {manifest.stage}/{manifest.name} `{manifest.fingerprint[:12]}`\n\n{result['figures']}\n\n"
        f"Path: `{path}`, built {manifest.created_at[:19]} ({timings}); code {manifest.code}\n\n"
        f"## Inputs\n\n| stage | name | fingerprint (sha256 for raw files) |\n|---|---|---|\n{inputs}\n\n"
        f"## Contracts\n{contracts}\n\n## Manifest\n\n```json\n{(path / MANIFEST).read_text()}\n```\n"
    )
