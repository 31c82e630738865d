"""The outline every stage flow follows:

    resolve inputs -> fingerprint -> skip or build -> validate -> publish manifest + UI artifacts

Nothing is published when the build or a contract fails: the staging directory is removed and
the flow run fails with the contract's message.
"""

import base64
import importlib
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for

from flows import tracking
from schemas.base import fingerprint_view
from schemas.config import PROJECT_ROOT, load_config
from schemas.manifest import MANIFEST, Manifest
from schemas.stages import STAGES
from tasks import lineage, lineage_events, remote
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
from tasks.plan import check_unchanged, code_version, plan_single, read_input
from tasks.report import summary

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


def run_stage(
    stage: str, config: str, overrides: list[str] | None, force: bool, home: str | None, build=None
) -> dict:
    """`build(section, inputs, staging_dir) -> stats` replaces `tasks.<stage>.build` for a stage
    that submits its own Prefect tasks (it then runs in the flow, not as one task)."""
    logger = get_run_logger()
    cfg = load_config(config, overrides)
    h = Home.resolve(home)
    for leftover in collect_garbage(h):
        logger.info(f"removed unpublished leftover {leftover}")
    if h.remote:
        for fetched in remote.pull(h, (*STAGES[stage].inputs, stage)):
            logger.info(f"pulled {fetched} from {h.remote}")
    plan = plan_single(stage, cfg, h)
    for warning in plan.warnings:
        logger.warning(warning)
    if plan.up_to_date and not force:
        skipped_intact(plan.path)
        logger.info(f"{stage}: up to date, skipped ({plan.path})")
        _push(h, stage, plan.path)
        return summary(stage, "skipped", read_manifest(plan.path), 0.0, plan.path)
    logger.info(f"{stage}: building {plan.path.name} because " + "; ".join(plan.reasons or ["--force"]))
    module = importlib.import_module(f"tasks.{stage}")
    inputs = {ref.stage: read_input(ref) for ref in plan.inputs if ref.stage != "raw"}
    section = cfg.section(stage)
    run = _run_record(stage, cfg.name, plan.fingerprint, section)
    events = lineage_events.StageRun(h, plan.inputs, lineage_events.LmpipeRunFacet(**run))
    started = time.perf_counter()
    with (
        staging(h, stage, cfg.name, plan.fingerprint, resume=STAGES[stage].resumable) as tmp,
        tracking.stage_run(stage, cfg, plan, run, h) as tracked,
    ):
        if not force and find(h, stage, plan.fingerprint):  # another run built it while we waited
            return summary(stage, "skipped", read_manifest(plan.path), 0.0, plan.path)
        events.start()
        try:
            stats = (
                build(section, inputs, tmp)
                if build
                else _task(module.build, f"{stage}-build")(section, inputs, tmp)
            )
            built = time.perf_counter()
            check_unchanged(stage, plan.inputs)  # what was read is what the fingerprint names
            crash_point(stage, "after_build")
            contracts = _task(module.validate, f"{stage}-validate")(section, inputs, tmp, stats)
            crash_point(stage, "after_validate")
            manifest = Manifest(
                stage=stage,
                name=cfg.name,
                fingerprint=plan.fingerprint,
                inputs=sealed(plan.inputs),  # with each input manifest's sha256: the chain verify checks
                config=section.model_dump(mode="json"),
                fingerprint_config=fingerprint_view(section),
                code=run["code"],
                files=file_entries(tmp, stats.get("rows") if isinstance(stats.get("rows"), dict) else None),
                stats=stats,
                contracts=contracts,
                timings={
                    "build_s": round(built - started, 2),
                    "validate_s": round(time.perf_counter() - built, 2),
                },
                flow_run_id=run["flow_run_id"],
                flow_run_url=run["flow_run_url"],
                mlflow_run_id=tracked.run_id if tracked else None,
                mlflow_run_url=tracked.url if tracked else None,
                libraries={lib: metadata.version(lib) for lib in LIBRARIES},
                created_at=datetime.now(UTC).isoformat(),
            )
            final = publish(tmp, artifact_dir(h, stage, cfg.name, plan.fingerprint), manifest)
            if tracked:
                tracked.finish(
                    stats,
                    [final / MANIFEST, *(final / f.path for f in manifest.files if f.path.endswith(".png"))],
                )
        except Exception as e:
            events.fail(e)
            raise
    _push(h, stage, final)
    events.complete(manifest, final)
    result = summary(stage, "ran", manifest, time.perf_counter() - started, final)
    _ui_artifacts(stage, cfg.name, manifest, result, h)
    tracking.link(stage, cfg.name, manifest)
    return result


def _push(home: Home, stage: str, path) -> None:
    if home.remote and remote.push(home, stage, path):
        get_run_logger().info(f"pushed {path.name} to {home.remote}")


def _run_record(stage: str, name: str, fp: str, section) -> dict:
    """What identifies this build: fingerprints, code version, and the Prefect run with its UI link."""
    run_id = str(flow_run.id) if flow_run.id else None
    return {
        "stage": stage,
        "config_name": name,
        "fingerprint": fp,
        "config_fingerprint": sha256_json(fingerprint_view(section)),
        "code": {**code_version(stage), "package": metadata.version("lmpipe"), "git": _git_commit()},
        "flow_run_id": run_id,
        # PREFECT_UI_URL, else derived from PREFECT_API_URL; None on a temporary server
        "flow_run_url": url_for("flow-run", obj_id=run_id) if run_id else None,
    }


def _task(fn, name: str):
    # Results stay in memory (flows and tasks use persist_result=False): no pickled result
    # files, no cache keyed on path strings.
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)


def _git_commit() -> str | None:
    head = PROJECT_ROOT / ".git" / "HEAD"
    if not head.is_file():
        return None
    ref = head.read_text().strip()
    if ref.startswith("ref: "):
        target = PROJECT_ROOT / ".git" / ref[5:]
        return target.read_text().strip() if target.is_file() else None
    return ref


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
