"""The outline every stage flow follows:

    resolve inputs -> fingerprint -> skip or build -> validate -> publish manifest + UI artifacts

Nothing is published when the build or a contract fails: the staging directory is removed and
the flow run fails with the contract's message.
"""

import importlib
import time
from datetime import UTC, datetime
from importlib import metadata

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from schemas.base import fingerprint_view
from schemas.config import PROJECT_ROOT, load_config
from schemas.manifest import Manifest
from schemas.stages import STAGES
from tasks import remote
from tasks.artifacts import (
    Home,
    artifact_dir,
    collect_garbage,
    file_entries,
    find,
    publish,
    read_manifest,
    staging,
)
from tasks.faults import crash_point
from tasks.plan import code_version, plan_single, read_input
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
        logger.info(f"{stage}: up to date, skipped ({plan.path})")
        _push(h, stage, plan.path)
        return summary(stage, "skipped", read_manifest(plan.path), 0.0, plan.path)
    logger.info(f"{stage}: building {plan.path.name} because " + "; ".join(plan.reasons or ["--force"]))
    module = importlib.import_module(f"tasks.{stage}")
    inputs = {ref.stage: read_input(ref) for ref in plan.inputs if ref.stage != "raw"}
    section = cfg.section(stage)
    started = time.perf_counter()
    with staging(h, stage, cfg.name, plan.fingerprint, resume=STAGES[stage].resumable) as tmp:
        if not force and find(h, stage, plan.fingerprint):  # another run built it while we waited
            return summary(stage, "skipped", read_manifest(plan.path), 0.0, plan.path)
        stats = (
            build(section, inputs, tmp)
            if build
            else _task(module.build, f"{stage}-build")(section, inputs, tmp)
        )
        built = time.perf_counter()
        crash_point(stage, "after_build")
        contracts = _task(module.validate, f"{stage}-validate")(section, inputs, tmp, stats)
        crash_point(stage, "after_validate")
        manifest = Manifest(
            stage=stage,
            name=cfg.name,
            fingerprint=plan.fingerprint,
            inputs=plan.inputs,
            config=section.model_dump(mode="json"),
            fingerprint_config=fingerprint_view(section),
            code={**code_version(stage), "package": metadata.version("lmpipe"), "git": _git_commit()},
            files=file_entries(tmp, stats.get("rows") if isinstance(stats.get("rows"), dict) else None),
            stats=stats,
            contracts=contracts,
            timings={
                "build_s": round(built - started, 2),
                "validate_s": round(time.perf_counter() - built, 2),
            },
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            libraries={lib: metadata.version(lib) for lib in LIBRARIES},
            created_at=datetime.now(UTC).isoformat(),
        )
        final = publish(tmp, artifact_dir(h, stage, cfg.name, plan.fingerprint), manifest)
    _push(h, stage, final)
    result = summary(stage, "ran", manifest, time.perf_counter() - started, final)
    _ui_artifacts(stage, cfg.name, manifest, result)
    return result


def _push(home: Home, stage: str, path) -> None:
    if home.remote and remote.push(home, stage, path):
        get_run_logger().info(f"pushed {path.name} to {home.remote}")


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


def _ui_artifacts(stage: str, name: str, manifest: Manifest, result: dict) -> None:
    key = f"{stage}-{name}".lower().replace("_", "-").replace(".", "-")
    contracts = "\n".join(
        f"- {'✅' if c.success else '❌'} {c.name} ({c.checked} checked)" for c in manifest.contracts
    )
    plots = "\n".join(
        f"- [{f.path}](file://{result['path']}/{f.path})" for f in manifest.files if f.path.endswith(".png")
    )
    create_markdown_artifact(
        key=key,
        markdown=(
            f"# {stage} `{manifest.fingerprint[:12]}`\n\n{result['figures']}\n\n"
            f"Path: `{result['path']}`\n\nManifest: `{result['path']}/manifest.json`\n\n## Contracts\n{contracts}\n"
            + (f"\n## Plots\n{plots}\n" if plots else "")
        ),
        description=f"{stage} artifact summary",
    )
    flat = [{"stat": k, "value": str(v)} for k, v in manifest.stats.items() if k != "rows"]
    create_table_artifact(key=f"{key}-stats", table=flat, description=f"{stage} stats")
