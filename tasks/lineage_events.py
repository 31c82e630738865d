"""OpenLineage run events for stage runs, so Marquez or any OpenLineage consumer gets the graph.

    START     job lmpipe/tokenizer, run <Prefect flow-run id>, inputs: file:/.../corpus/tiny-3f2a…
    COMPLETE  the same run, outputs: file:/.../tokenizer/tiny-9f8e… (datasetVersion = fingerprint)
    FAIL      the same run, with an errorMessage facet (an exception)
    ABORT     the same run, with an errorMessage facet (interrupted, or its process died)

A retry of a Prefect flow run (attempt 2, 3, ...) is a new OpenLineage run, whose id derives from
the flow-run id and the attempt, with a `parent` facet naming the first attempt's run: one run
id never gets two STARTs. A process killed outright (SIGKILL, a lost machine) cannot say
anything, so every START leaves a marker under `<artifact home>/openlineage/running/` until its
COMPLETE, FAIL or ABORT; the next stage run on the same host finds the markers of dead processes
and sends their ABORT (`abort_orphans`).

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

import json
import logging
import os
import socket
import uuid
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
    parent_run,
    processing_engine_run,
)
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.uuid import generate_new_uuid

from schemas.manifest import Manifest, Ref
from tasks.artifacts import Home, pid_alive

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
    """The OpenLineage side of one stage build: start(), then complete(), fail() or abort()."""

    def __init__(self, home: Home, inputs: list[Ref], facet: LmpipeRunFacet, attempt: int = 1):
        self.home, self.inputs, self.facet = home, inputs, facet
        first = facet.flow_run_id or str(generate_new_uuid())
        self.first_run_id = first
        self.run_id = first if attempt <= 1 else str(uuid.uuid5(uuid.UUID(first), f"attempt-{attempt}"))
        self.namespace = os.environ.get("OPENLINEAGE_NAMESPACE", "lmpipe")

    def start(self) -> None:
        self._emit(RunState.START, self._run())
        marker = self.marker()
        marker.parent.mkdir(parents=True, exist_ok=True)
        facet = {k: getattr(self.facet, k) for k in attr.fields_dict(LmpipeRunFacet) if not k.startswith("_")}
        refs = [r.model_dump(mode="json") for r in self.inputs]
        record = {"pid": os.getpid(), "host": socket.gethostname(), "first_run_id": self.first_run_id}
        marker.write_text(json.dumps(record | {"run_id": self.run_id, "inputs": refs, "facet": facet}))

    def marker(self) -> Path:
        return running_dir(self.home) / f"{self.run_id}.json"

    def abort(self, reason: str) -> None:
        message = error_message_run.ErrorMessageRunFacet(message=reason, programmingLanguage="python")
        self._emit(RunState.ABORT, self._run(errorMessage=message))
        self.marker().unlink(missing_ok=True)

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
        self.marker().unlink(missing_ok=True)

    def fail(self, error: BaseException) -> None:
        message = error_message_run.ErrorMessageRunFacet(
            message=f"{type(error).__name__}: {error}", programmingLanguage="python"
        )
        self._emit(RunState.FAIL, self._run(errorMessage=message))
        self.marker().unlink(missing_ok=True)

    def _run(self, **extra) -> Run:
        engine = processing_engine_run.ProcessingEngineRunFacet(
            version=metadata.version("prefect"),
            name="prefect",
            openlineageAdapterVersion=metadata.version("lmpipe"),
        )
        if self.run_id != self.first_run_id:  # a retry: linked to the first attempt
            job = parent_run.Job(namespace=self.namespace, name=self.facet.stage)
            extra["parent"] = parent_run.ParentRunFacet(run=parent_run.Run(runId=self.first_run_id), job=job)
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


def running_dir(home: Home) -> Path:
    return home.artifacts / "openlineage" / "running"


def abort_orphans(home: Home) -> list[str]:
    """Send ABORT for the stage runs whose process died on this host without a last event; the
    run ids. Markers of other hosts are left to a run on that host."""
    aborted = []
    for marker in sorted(running_dir(home).glob("*.json")):  # none when the folder does not exist
        record = json.loads(marker.read_text())
        if record["host"] != socket.gethostname() or pid_alive(str(record["pid"])):
            continue
        run = StageRun(home, [Ref(**r) for r in record["inputs"]], LmpipeRunFacet(**record["facet"]))
        run.first_run_id, run.run_id = record["first_run_id"], record["run_id"]
        run.abort(
            f"process {record['pid']} on {record['host']} died while building (found by a later stage run)"
        )
        aborted.append(record["run_id"])
    return aborted
