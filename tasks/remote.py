"""An artifact home on object storage (`s3://`, `gs://`, any fsspec URL), with a local cache.

Stages read and write artifacts on local disk; a remote home is their durable, shared copy:

    --home s3://bucket/lmpipe
      local cache  ~/.cache/lmpipe/<sha of the URL>/{artifacts,checkpoints}/<stage>/<name-fp>/
      remote       s3://bucket/lmpipe/{artifacts,checkpoints}/<stage>/<name-fp>/

Object stores have no atomic rename of a directory, so publication keeps the same promise as the
local store another way: every file goes first under a hidden temporary prefix, is copied to the
final prefix, and `manifest.json` is copied LAST. A reader trusts a remote artifact only when its
manifest exists, and checks every file's sha256 against it after download. A push killed midway
leaves a `.tmp-*` prefix (removed by the next push of that artifact) and never a manifest.

Credentials and endpoints come from the storage library's own settings (for S3: the AWS_* variables
or ~/.aws, `AWS_ENDPOINT_URL` for MinIO or any S3-compatible server).
"""

import os
import shutil
import uuid
from pathlib import Path

import fsspec

from schemas.manifest import MANIFEST
from schemas.stages import ORDER
from tasks.artifacts import ArtifactError, Home, check_files, fsync_path, read_manifest
from tasks.faults import crash_point


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(url.rstrip("/"))
    fs.invalidate_cache()  # listings must see what other machines pushed since
    return fs, root


def _remote_stage(home: Home, stage: str) -> str:
    local = home.stage_dir(stage)
    return f"{home.remote}/{local.parent.name}/{stage}"


def remote_url(home: Home, stage: str, local: Path) -> str:
    """Where a published local artifact lives on the remote home."""
    return f"{_remote_stage(home, stage)}/{local.name}"


def push(home: Home, stage: str, local: Path) -> bool:
    """Upload one published local artifact; False when the remote already has it."""
    fs, root = _fs(_remote_stage(home, stage))
    final = f"{root}/{local.name}"
    if fs.exists(f"{final}/{MANIFEST}"):
        return False
    manifest = read_manifest(local)
    for old in fs.glob(f"{root}/.tmp-{local.name}-*"):
        fs.rm(old, recursive=True)
    tmp = f"{root}/.tmp-{local.name}-{uuid.uuid4().hex[:8]}"
    names = [entry.path for entry in manifest.files]
    for name in names:
        fs.put_file(str(local / name), f"{tmp}/{name}")
    fs.put_file(str(local / MANIFEST), f"{tmp}/{MANIFEST}")
    for name in names:
        fs.copy(f"{tmp}/{name}", f"{final}/{name}")
    crash_point(stage, "push_before_manifest")
    fs.copy(f"{tmp}/{MANIFEST}", f"{final}/{MANIFEST}")
    fs.rm(tmp, recursive=True)
    return True


def pull(home: Home, stages: tuple[str, ...] = ORDER) -> list[Path]:
    """Download every remote artifact of `stages` that the local cache lacks, checked by sha256."""
    fetched = []
    for stage in stages:
        fs, root = _fs(_remote_stage(home, stage))
        for manifest_file in sorted(fs.glob(f"{root}/[!.]*/{MANIFEST}")):
            name = manifest_file.rsplit("/", 2)[-2]
            local = home.stage_dir(stage) / name
            if (local / MANIFEST).is_file():
                continue
            fetched.append(_download(fs, manifest_file.rsplit("/", 1)[0], local))
    return fetched


def _download(fs: fsspec.AbstractFileSystem, remote: str, local: Path) -> Path:
    tmp = local.with_name(f".pull-{local.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fs.get_file(f"{remote}/{MANIFEST}", str(tmp / MANIFEST))
        for entry in read_manifest(tmp).files:
            (tmp / entry.path).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{remote}/{entry.path}", str(tmp / entry.path))
        problems = check_files(tmp)
        if problems:
            raise ArtifactError(
                f"{remote}: download does not match its manifest:\n  " + "\n  ".join(problems)
            )
        os.replace(tmp, local)
        fsync_path(local.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local
