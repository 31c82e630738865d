"""The manifest: the record that makes a directory an artifact.

`manifest.json` is written last. A directory without one does not exist for any reader.
"""

from pydantic import BaseModel, Field

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class Ref(BaseModel):
    """A reference to an input: another artifact, or a raw file (stage "raw")."""

    stage: str
    name: str
    fingerprint: str
    path: str
    # The sha256 of the input's manifest.json when this artifact was built from it: the link
    # `lmpipe verify` checks, so an edit of any ancestor's manifest is seen (None: a raw file).
    manifest_sha256: str | None = None


class FileEntry(BaseModel):
    path: str  # relative to the artifact directory
    sha256: str
    bytes: int
    rows: int | None = None


class ContractResult(BaseModel):
    name: str
    success: bool
    checked: int  # records or rows examined
    details: str = ""


class Manifest(BaseModel):
    manifest_version: int = MANIFEST_VERSION
    stage: str
    name: str
    fingerprint: str
    inputs: list[Ref]
    config: dict  # the stage's full resolved config section
    fingerprint_config: dict  # the part of it that the fingerprint hashes
    code: dict  # stage format version, registry hash, package version, git commit
    files: list[FileEntry]
    stats: dict = Field(default_factory=dict)
    contracts: list[ContractResult] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    flow_run_id: str | None = None
    flow_run_url: str | None = None  # the run's page in the Prefect UI (from PREFECT_UI_URL)
    mlflow_run_id: str | None = None  # the build's MLflow run (tasks/tracking.py), if tracked
    mlflow_run_url: str | None = None
    libraries: dict[str, str] = Field(default_factory=dict)
    created_at: str
