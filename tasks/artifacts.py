"""The artifact store: where artifacts live, how they are named, published, found and checked.

An artifact is a directory `<root>/<stage>/<name>-<fp12>/` whose `manifest.json` lists every
file with its sha256. It is built in a hidden staging directory next to its final place, the
manifest is written into it last (fsync), and the whole directory is renamed into place, so a
reader sees either nothing or a complete artifact:

    data/artifacts/corpus/.tmp-tiny-3f2a9c01b7de-4711/   <- being built (pid 4711)
    data/artifacts/corpus/tiny-3f2a9c01b7de/             <- published, manifest inside

Leftover staging directories of dead processes are removed by `collect_garbage`.
"""

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas.config import PROJECT_ROOT
from schemas.manifest import MANIFEST, FileEntry, Manifest
from schemas.stages import STAGES


class ArtifactError(RuntimeError):
    """An artifact that is missing, unreadable or does not match its manifest."""


@dataclass(frozen=True)
class Home:
    """Roots of the data artifacts and model checkpoints."""

    artifacts: Path
    checkpoints: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> "Home":
        """`--home` wins, then `LMPIPE_HOME`, then the project's `data/artifacts` + `checkpoints`."""
        chosen = home or os.environ.get("LMPIPE_HOME")
        if chosen:
            base = Path(chosen).expanduser().resolve()
            return cls(base / "artifacts", base / "checkpoints")
        return cls(PROJECT_ROOT / "data" / "artifacts", PROJECT_ROOT / "checkpoints")

    def stage_dir(self, stage: str) -> Path:
        root = self.checkpoints if STAGES[stage].root == "checkpoints" else self.artifacts
        return root / stage


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(data: object) -> str:
    """Hash of canonical JSON: key order and whitespace never change it."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def artifact_dir(home: Home, stage: str, name: str, fingerprint: str) -> Path:
    return home.stage_dir(stage) / f"{name}-{fingerprint[:12]}"


def read_manifest(path: Path) -> Manifest:
    file = path / MANIFEST
    try:
        return Manifest.model_validate_json(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no {MANIFEST}; not a published artifact") from None
    except ValueError as e:
        raise ArtifactError(f"{file}: invalid manifest: {e}") from None


def published(home: Home, stage: str) -> list[tuple[Path, Manifest]]:
    """Every published artifact of a stage, oldest first (unreadable manifests are skipped)."""
    found = []
    for d in sorted(home.stage_dir(stage).glob("[!.]*")):
        if (d / MANIFEST).is_file():
            with contextlib.suppress(ArtifactError):
                found.append((d, read_manifest(d)))
    return sorted(found, key=lambda item: item[1].created_at)


def find(home: Home, stage: str, fingerprint: str) -> Path | None:
    for d, m in published(home, stage):
        if m.fingerprint == fingerprint:
            return d
    return None


def latest(home: Home, stage: str, name: str) -> tuple[Path, Manifest] | None:
    same = [(d, m) for d, m in published(home, stage) if m.name == name]
    return same[-1] if same else None


@contextlib.contextmanager
def staging(home: Home, stage: str, name: str, fingerprint: str) -> Iterator[Path]:
    """A fresh hidden directory to build into; removed if the build raises."""
    parent = home.stage_dir(stage)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{name}-{fingerprint[:12]}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_entries(directory: Path, rows: dict[str, int] | None = None) -> list[FileEntry]:
    """Every file under `directory` (except the manifest) with sha256 and size."""
    entries = []
    for f in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = f.relative_to(directory).as_posix()
        entries.append(
            FileEntry(path=rel, sha256=sha256_file(f), bytes=f.stat().st_size, rows=(rows or {}).get(rel))
        )
    return entries


def publish(tmp: Path, final: Path, manifest: Manifest) -> Path:
    """Write the manifest last, fsync, and rename the staging directory into place."""
    _write_synced(tmp / MANIFEST, manifest.model_dump_json(indent=2))
    _fsync_dir(tmp)
    if final.exists():  # a forced rebuild replaces the old artifact
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def collect_garbage(home: Home) -> list[Path]:
    """Remove staging leftovers of dead processes and directories without a manifest."""
    removed = []
    for stage in STAGES:
        for d in home.stage_dir(stage).glob("*"):
            if not d.is_dir() or (d / MANIFEST).is_file() and not d.name.startswith("."):
                continue
            if d.name.startswith((".tmp-", ".old-")) and _pid_alive(d.name.rsplit("-", 1)[-1]):
                continue
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_files(path: Path, manifest: Manifest | None = None) -> list[str]:
    """Problems with the files of one artifact (empty when every hash and size matches)."""
    manifest = manifest or read_manifest(path)
    problems = []
    for entry in manifest.files:
        f = path / entry.path
        if not f.is_file():
            problems.append(f"{f}: missing (manifest lists {entry.bytes} bytes, sha256 {entry.sha256[:12]})")
            continue
        size = f.stat().st_size
        digest = sha256_file(f)
        if digest != entry.sha256 or size != entry.bytes:
            problems.append(
                f"{f}: sha256 {digest[:12]} ({size} bytes), manifest says {entry.sha256[:12]} ({entry.bytes} bytes)"
            )
    return problems


def verify(path: Path) -> list[str]:
    """Recheck every file of an artifact and of all its ancestors (raw files included)."""
    problems, seen = [], set()

    def walk(p: Path) -> None:
        if p in seen:
            return
        seen.add(p)
        try:
            manifest = read_manifest(p)
        except ArtifactError as e:
            problems.append(str(e))
            return
        problems.extend(check_files(p, manifest))
        for ref in manifest.inputs:
            if ref.stage == "raw":
                raw = Path(ref.path)
                if not raw.is_file():
                    problems.append(f"{raw}: raw input missing")
                elif sha256_file(raw) != ref.fingerprint:
                    problems.append(f"{raw}: raw input changed since {manifest.stage} was built")
            else:
                walk(Path(ref.path))

    walk(Path(path))
    return problems


def lineage(path: Path, depth: int = 0, seen: set | None = None) -> list[str]:
    """The chain from an artifact back to its raw files, one line per node, indented by depth."""
    seen = set() if seen is None else seen
    m = read_manifest(path)
    pad = "  " * depth
    lines = [f"{pad}{m.stage} {m.name} fp={m.fingerprint[:12]} run={m.flow_run_id or '-'} {path}"]
    if path in seen:
        return [lines[0] + " (see above)"]
    seen.add(path)
    for ref in m.inputs:
        if ref.stage == "raw":
            lines.append(f"{pad}  raw {ref.name} sha256={ref.fingerprint}")
        else:
            lines.extend(lineage(Path(ref.path), depth + 1, seen))
    return lines
