"""One stage's transaction, without Prefect:

    tidy the home -> plan (fingerprint) -> skip, or build -> validate -> manifest -> publish
    -> push to the remote home -> lineage events

Nothing is published when the build or a contract fails: the staging directory is removed
(tasks.artifacts.staging) and the error goes up with its message. What only an orchestrator
knows comes in as `Hooks`: flows/stage.py passes Prefect's logger, its task wrapper, the flow
run's id and link, and the MLflow run with its progress bar; a test passes nothing.

>>> outcome = run_stage("corpus", load_config("tiny"), Home.resolve(None))
>>> outcome.status, outcome.path.name
('ran', 'tiny-3f2a0c9b1d4e')
"""

import contextlib
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from schemas.base import fingerprint_view
from schemas.config import PROJECT_ROOT, PipelineConfig
from schemas.manifest import MANIFEST, Manifest, Ref
from schemas.stages import STAGES
from tasks import lineage_events, remote
from tasks.artifacts import (
    Home,
    artifact_dir,
    collect_garbage,
    file_entries,
    find,
    publish,
    read_manifest,
    sealed,
    sha256_json,
    skipped_intact,
    staging,
)
from tasks.faults import crash_point
from tasks.plan import StagePlan, check_unchanged, code_version, plan_single, plan_stage, read_input

logger = logging.getLogger(__name__)

LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "trl",
    "peft",
    "pyarrow",
    "prefect",
    "great_expectations",
    "datasets",
)


def no_tracking(stage: str, cfg: PipelineConfig, plan: StagePlan, record: dict, home: Home):
    """The default `Hooks.tracked`: no MLflow run (the manifest's mlflow fields stay None)."""
    return contextlib.nullcontext(None)


@dataclass
class Hooks:
    """What the caller adds to a transaction. The defaults run it as plain Python."""

    log: Callable[[str], None] = logger.info
    warn: Callable[[str], None] = logger.warning
    # wraps the stage's build and validate (flows/stage.py makes them Prefect tasks)
    task: Callable[[Callable, str], Callable] = lambda fn, name: fn
    run_id: str | None = None  # the orchestrator's run, recorded in the manifest
    run_url: str | None = None
    attempt: int = 1  # the orchestrator's try of this run (a retry is a new OpenLineage run)
    # (stage, cfg, plan, record, home) -> a context yielding the MLflow run (tasks.tracking.Run) or None
    tracked: Callable = no_tracking


@dataclass
class Outcome:
    status: str  # "ran" or "skipped"
    manifest: Manifest
    path: Path
    seconds: float


def run_stage(
    stage: str,
    cfg: PipelineConfig,
    home: Home,
    force: bool = False,
    inputs: list[Ref] | None = None,
    build: Callable | None = None,
    hooks: Hooks | None = None,
) -> Outcome:
    """Skip `stage` when its artifact is up to date, else build, check and publish it.

    `inputs`: the input refs a caller already resolved (the pipeline plans once for every
    stage); None plans on the latest matching inputs. `build(section, inputs, staging_dir) ->
    stats` replaces `tasks.<stage>.build` (the corpus and shards flows submit their own jobs).
    """
    hooks = hooks or Hooks()
    tidy(home, stage, hooks)
    plan = plan_single(stage, cfg, home) if inputs is None else plan_stage(stage, cfg, home, inputs)
    for warning in plan.warnings:
        hooks.warn(warning)
    if plan.up_to_date and not force:
        skipped_intact(plan.path)
        hooks.log(f"{stage}: up to date, skipped ({plan.path})")
        push(home, stage, plan.path, hooks)
        return Outcome("skipped", read_manifest(plan.path), plan.path, 0.0)
    hooks.log(f"{stage}: building {plan.path.name} because " + "; ".join(plan.reasons or ["--force"]))
    return build_stage(Job(stage, cfg, home, plan, hooks), force, build)


def tidy(home: Home, stage: str, hooks: Hooks) -> None:
    """Remove what earlier runs left unpublished; bring the stage and its inputs from a remote home."""
    for leftover in collect_garbage(home):
        hooks.log(f"removed unpublished leftover {leftover}")
    for run_id in lineage_events.abort_orphans(home):
        hooks.log(f"OpenLineage run {run_id}: its process died before its last event; sent ABORT")
    if home.remote:
        for fetched in remote.pull(home, (*STAGES[stage].inputs, stage)):
            hooks.log(f"pulled {fetched} from {home.remote}")


def push(home: Home, stage: str, path: Path, hooks: Hooks) -> None:
    if home.remote and remote.push(home, stage, path):
        hooks.log(f"pushed {path.name} to {home.remote}")


@dataclass
class Job:
    """One planned build: what every step after the plan needs."""

    stage: str
    cfg: PipelineConfig
    home: Home
    plan: StagePlan
    hooks: Hooks

    @property
    def section(self):
        return self.cfg.section(self.stage)


def build_stage(job: Job, force: bool, build: Callable | None) -> Outcome:
    """Build into a staging directory under the stage's lease, then publish; lineage events
    say START before the build and COMPLETE (FAIL on an error, ABORT when interrupted) after it."""
    stage, plan = job.stage, job.plan
    # checked before the lease is taken and the MLflow run opened (flows/tracking.py relies on it)
    inputs = {ref.stage: read_input(ref) for ref in plan.inputs if ref.stage != "raw"}
    record = run_record(job)
    facet = lineage_events.LmpipeRunFacet(**record)
    events = lineage_events.StageRun(job.home, plan.inputs, facet, attempt=job.hooks.attempt)
    started = time.perf_counter()
    with (
        staging(job.home, stage, job.cfg.name, plan.fingerprint, resume=STAGES[stage].resumable) as tmp,
        job.hooks.tracked(stage, job.cfg, plan, record, job.home) as tracked,
    ):
        if not force and find(job.home, stage, plan.fingerprint):  # another run built it while we waited
            return Outcome("skipped", read_manifest(plan.path), plan.path, 0.0)
        events.start()
        try:
            manifest, final = build_and_publish(job, build, inputs, record, tmp, tracked, started)
        except Exception as e:
            events.fail(e)
            raise
        except BaseException as e:  # interrupted (SIGTERM, Ctrl-C, cancelled): not a failure of the stage
            events.abort(f"interrupted: {type(e).__name__} {e}".strip())
            raise
    push(job.home, stage, final, job.hooks)
    events.complete(manifest, final)
    return Outcome("ran", manifest, final, time.perf_counter() - started)


def build_and_publish(job: Job, build, inputs: dict, record: dict, tmp: Path, tracked, started: float):
    """(manifest, published path): build, check that the raw inputs did not change meanwhile,
    validate, and publish with the manifest written last. Crash points sit between the steps."""
    module = importlib.import_module(f"tasks.{job.stage}")
    stats = (build or job.hooks.task(module.build, f"{job.stage}-build"))(job.section, inputs, tmp)
    built = time.perf_counter()
    check_unchanged(job.stage, job.plan.inputs)  # what was read is what the fingerprint names
    crash_point(job.stage, "after_build")
    validate = job.hooks.task(module.validate, f"{job.stage}-validate")
    contracts = validate(job.section, inputs, tmp, stats)
    crash_point(job.stage, "after_validate")
    timings = {"build_s": round(built - started, 2), "validate_s": round(time.perf_counter() - built, 2)}
    manifest = make_manifest(job, record, tmp, stats, contracts, timings, tracked)
    final = publish(tmp, artifact_dir(job.home, job.stage, job.cfg.name, job.plan.fingerprint), manifest)
    if tracked:
        plots = [final / f.path for f in manifest.files if f.path.endswith(".png")]
        tracked.finish(stats, [final / MANIFEST, *plots])
    return manifest, final


def make_manifest(
    job: Job, record: dict, tmp: Path, stats: dict, contracts, timings: dict, tracked
) -> Manifest:
    rows = stats.get("rows") if isinstance(stats.get("rows"), dict) else None
    return Manifest(
        stage=job.stage,
        name=job.cfg.name,
        fingerprint=job.plan.fingerprint,
        inputs=sealed(job.plan.inputs),  # with each input manifest's sha256: the chain verify checks
        config=job.section.model_dump(mode="json"),
        fingerprint_config=fingerprint_view(job.section),
        code=record["code"],
        files=file_entries(tmp, rows),
        stats=stats,
        contracts=contracts,
        timings=timings,
        flow_run_id=record["flow_run_id"],
        flow_run_url=record["flow_run_url"],
        mlflow_run_id=tracked.run_id if tracked else None,
        mlflow_run_url=tracked.url if tracked else None,
        libraries={lib: metadata.version(lib) for lib in LIBRARIES},
        created_at=datetime.now(UTC).isoformat(),
    )


def run_record(job: Job) -> dict:
    """What identifies this build: fingerprints, code version, and the orchestrator's run."""
    return {
        "stage": job.stage,
        "config_name": job.cfg.name,
        "fingerprint": job.plan.fingerprint,
        "config_fingerprint": sha256_json(fingerprint_view(job.section)),
        "code": {**code_version(job.stage), "package": metadata.version("lmpipe"), "git": git_commit()},
        "flow_run_id": job.hooks.run_id,
        "flow_run_url": job.hooks.run_url,
    }


def git_commit() -> str | None:
    head = PROJECT_ROOT / ".git" / "HEAD"
    if not head.is_file():
        return None
    ref = head.read_text().strip()
    if ref.startswith("ref: "):
        target = PROJECT_ROOT / ".git" / ref[5:]
        return target.read_text().strip() if target.is_file() else None
    return ref
