"""OpenLineage run events for stage runs, so Marquez or any OpenLineage consumer gets the graph.

    START     job lmpipe/tokenizer, run <Prefect flow-run id>, inputs: file:/.../corpus/tiny-3f2a…
    COMPLETE  the same run, outputs: file:/.../tokenizer/tiny-9f8e… (datasetVersion = fingerprint)
    FAIL      the same run, with an errorMessage facet

A dataset is named by where it lives (namespace "file", the absolute path, as the OpenLineage
naming spec asks) and versioned by its fingerprint, or by its sha256 for a raw file. The artifact
a corpus run outputs is the very dataset a tokenizer run reads, so a consumer draws
raw files -> corpus -> tokenizer -> shards -> ... The `lmpipe` run facet carries the stage
fingerprint, the config fingerprint, the code version and the Prefect run's UI link.

Where events go follows the library's own configuration when there is one: OPENLINEAGE_URL
(HTTP, plus OPENLINEAGE_ENDPOINT / OPENLINEAGE_API_KEY), OPENLINEAGE_CONFIG or an
openlineage.yml, OPENLINEAGE__TRANSPORT__* variables, OPENLINEAGE_DISABLED=true. Without one,
each event is appended as one JSON line to `<artifact home>/openlineage/events.jsonl`.
"""

import logging
import os
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
)
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.uuid import generate_new_uuid

from schemas.manifest import Manifest, Ref
from tasks.artifacts import Home

log = logging.getLogger(__name__)
PRODUCER = "https://github.com/lmpipe/lmpipe"
FACET_SCHEMA = "https://github.com/lmpipe/lmpipe/blob/main/tasks/lineage_events.py"


def events_file(home: Home) -> Path:
    """The default destination: one JSON event per line, under the artifact home."""
    return home.artifacts / "openlineage" / "events.jsonl"


@attr.define
class LmpipeRunFacet(RunFacet):
    """What identifies a stage run's output: fingerprints, code version, the Prefect run."""

    stage: str
    config_name: str
    fingerprint: str
    config_fingerprint: str
    code: dict
    flow_run_id: str | None = None
    flow_run_url: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{FACET_SCHEMA}#LmpipeRunFacet"


@attr.define
class LmpipeDatasetFacet(DatasetFacet):
    """The artifact behind a dataset (stage "raw": a source file; fingerprint = its sha256)."""

    stage: str
    name: str
    fingerprint: str

    @staticmethod
    def _get_schema() -> str:
        return f"{FACET_SCHEMA}#LmpipeDatasetFacet"


def library_configured() -> bool:
    """True when the user configured OpenLineage the library's own way (see the module doc)."""
    env = os.environ
    files = [
        env.get("OPENLINEAGE_CONFIG"),
        "openlineage.yml",
        str(Path.home() / ".openlineage/openlineage.yml"),
    ]
    return (
        bool(env.get("OPENLINEAGE_URL"))
        or env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true"
        or any(k.startswith("OPENLINEAGE__TRANSPORT") for k in env)
        or any(f and Path(f).is_file() for f in files)
    )


def client(home: Home) -> OpenLineageClient:
    if library_configured():
        return OpenLineageClient()
    path = events_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(path), append=True)))


def dataset_facets(ref: Ref) -> dict:
    return {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=ref.fingerprint),
        "lmpipe": LmpipeDatasetFacet(stage=ref.stage, name=ref.name, fingerprint=ref.fingerprint),
    }


def location(ref: Ref) -> tuple[str, str]:
    """(namespace, name) of a dataset: a hub dataset by its id, everything else by its path."""
    if ref.path.startswith("hub:"):
        return "huggingface", ref.name
    return "file", ref.path


class StageRun:
    """The OpenLineage side of one stage build: start(), then complete() or fail()."""

    def __init__(self, home: Home, inputs: list[Ref], facet: LmpipeRunFacet):
        self.home, self.inputs, self.facet = home, inputs, facet
        self.run_id = facet.flow_run_id or str(generate_new_uuid())
        self.namespace = os.environ.get("OPENLINEAGE_NAMESPACE", "lmpipe")

    def start(self) -> None:
        self._emit(RunState.START, self._run())

    def complete(self, manifest: Manifest, path: Path) -> None:
        out = Ref(stage=manifest.stage, name=manifest.name, fingerprint=manifest.fingerprint, path=str(path))
        rows = manifest.stats.get("rows")
        stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=sum(rows.values()) if isinstance(rows, dict) else None,
            size=sum(f.bytes for f in manifest.files),
            fileCount=len(manifest.files),
        )
        output = OutputDataset(
            *location(out), facets=dataset_facets(out), outputFacets={"outputStatistics": stats}
        )
        self._emit(RunState.COMPLETE, self._run(), [output])

    def fail(self, error: BaseException) -> None:
        message = error_message_run.ErrorMessageRunFacet(
            message=f"{type(error).__name__}: {error}", programmingLanguage="python"
        )
        self._emit(RunState.FAIL, self._run(errorMessage=message))

    def _run(self, **extra) -> Run:
        engine = processing_engine_run.ProcessingEngineRunFacet(
            version=metadata.version("prefect"),
            name="prefect",
            openlineageAdapterVersion=metadata.version("lmpipe"),
        )
        return Run(runId=self.run_id, facets={"processing_engine": engine, "lmpipe": self.facet, **extra})

    def _emit(self, state: RunState, run: Run, outputs: list[OutputDataset] | None = None) -> None:
        job_type = job_type_job.JobTypeJobFacet(processingType="BATCH", integration="LMPIPE", jobType="STAGE")
        event = RunEvent(
            eventType=state,
            eventTime=datetime.now(UTC).isoformat(),
            run=run,
            job=Job(namespace=self.namespace, name=self.facet.stage, facets={"jobType": job_type}),
            producer=PRODUCER,
            inputs=[InputDataset(*location(r), facets=dataset_facets(r)) for r in self.inputs],
            outputs=outputs or [],
        )
        try:
            c = client(self.home)
            c.emit(event)
            c.close()
        except Exception as e:  # a lineage sink that is down must not fail (or undo) a build
            log.warning(f"OpenLineage {state.value} event for {self.facet.stage} not sent: {e}")
