"""The artifact store: where artifacts live, how they are named, published, found and checked.

An artifact is a directory `<root>/<stage>/<name>-<fp12>/` whose `manifest.json` lists every
file with its sha256. It is built in a hidden staging directory next to its final place, the
manifest is written into it last (fsync), and the whole directory is renamed into place, so a
reader sees either nothing or a complete artifact:

    data/artifacts/corpus/.lock-tiny-3f2a9c01b7de        <- lease of the one writer
    data/artifacts/corpus/.tmp-tiny-3f2a9c01b7de/        <- being built
    data/artifacts/corpus/tiny-3f2a9c01b7de/             <- published, manifest inside

`collect_garbage` removes what no reader can see and no writer will resume.
"""

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas.config import PROJECT_ROOT
from schemas.manifest import MANIFEST, FileEntry, Manifest, Ref
from schemas.stages import STAGES
from tasks.contracts import ContractError
from tasks.faults import crash_point


class ArtifactError(RuntimeError):
    """An artifact that is missing, unreadable or does not match its manifest."""


class DiskFull(OSError):
    """No space left where a stage writes: the message names that filesystem and its free
    space, not the input the stage happened to be reading when a write failed."""

    def __init__(self, where: Path, need: str = ""):
        free = shutil.disk_usage(where)
        mount = where
        while mount != mount.parent and os.stat(mount.parent).st_dev == os.stat(where).st_dev:
            mount = mount.parent
        super().__init__(
            errno.ENOSPC,
            f"No space left on device: the filesystem mounted at {mount} (holding {where}) has "
            f"{free.free / 2**20:.0f} MiB free of {free.total / 2**30:.1f} GiB{need}; free space there "
            "or set LMPIPE_HOME to a larger disk, then rerun (resume progress is kept)",
        )


def space_needed(home: "Home", stage: str, name: str, written: int) -> str:
    """How much room a build needs, for DiskFull's message: at least what it had written when
    the disk filled, or the size of the stage's last published artifact (of this name if any)
    when that is more.

    >>> space_needed(home, "corpus", "tiny", 3 << 20)
    '; the corpus build needs about 25 MiB (it had written 3 MiB; its last artifact takes 25 MiB)'
    """
    last = max(
        ((m.name == name, m.created_at, sum(f.bytes for f in m.files)) for _, m in published(home, stage)),
        default=None,
    )
    need = max(written, last[2] if last else 0)
    before = f"; its last artifact takes {last[2] / 2**20:.0f} MiB" if last else ""
    return (
        f"; the {stage} build needs about {need / 2**20:.0f} MiB "
        f"(it had written {written / 2**20:.0f} MiB when the disk filled{before})"
    )


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def disk_full(e: BaseException) -> bool:
    """An error from a write that found its device full (pyarrow's too: it only says so)."""
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e)


@dataclass(frozen=True)
class Home:
    """Roots of the data artifacts and model checkpoints."""

    artifacts: Path
    checkpoints: Path
    remote: str | None = None  # an fsspec URL whose local cache `artifacts`/`checkpoints` are

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> "Home":
        """`--home` wins, then `LMPIPE_HOME`, then the project's `data/artifacts` + `checkpoints`.

        A URL such as `s3://bucket/prefix` is a remote home (tasks/remote.py): stages work in its
        local cache and push what they publish.
        """
        chosen = str(home or os.environ.get("LMPIPE_HOME") or "")
        if "://" in chosen and not chosen.startswith("file://"):
            url = chosen.rstrip("/")
            base = cache_for(url)
            return cls(base / "artifacts", base / "checkpoints", url)
        if chosen:
            base = Path(chosen.removeprefix("file://")).expanduser().resolve()
            return cls(base / "artifacts", base / "checkpoints")
        return cls(PROJECT_ROOT / "data" / "artifacts", PROJECT_ROOT / "checkpoints")

    def stage_dir(self, stage: str) -> Path:
        root = self.checkpoints if STAGES[stage].root == "checkpoints" else self.artifacts
        return root / stage


def cache_for(url: str) -> Path:
    """The local cache of one remote home: the same URL always maps to the same folder."""
    base = Path(os.environ.get("LMPIPE_CACHE", Path.home() / ".cache" / "lmpipe")).expanduser()
    return base / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(path: Path, file_hash=None) -> str:
    """A file's sha256, or for a folder the hash of its sorted relative paths and file hashes."""
    file_hash = file_hash or sha256_file
    if path.is_file():
        return file_hash(path)
    files = sorted(f for f in path.rglob("*") if f.is_file())
    return sha256_json([(f.relative_to(path).as_posix(), file_hash(f)) for f in files])


def source_hash(path: Path) -> str:
    """`content_hash` of a raw source, reading each file once per process while the file system
    shows it unchanged. One `lmpipe run` hashes the sources to plan, the corpus stage makes its
    ids from them and checks after reading that they did not change: one read serves all three.
    `lmpipe verify` uses `content_hash`: it is there to reread."""
    return content_hash(path, remembered_sha256)


# A file whose status changed this recently is hashed every time: a write within the same
# timestamp tick (2 s on FAT, a few ms on ext4) can leave its times as they were.
RECENT_NS = 2_000_000_000


def remembered_sha256(path: Path) -> str:
    """sha256_file, remembered by the file's device, inode, size, mtime and ctime. Any write
    changes ctime, which `touch` cannot set back, so a changed file is always read again."""
    st = path.stat()
    if time.time_ns() - st.st_ctime_ns < RECENT_NS:
        return sha256_file(path)
    return _sha256_of(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=65536)
def _sha256_of(path: str, *state: int) -> str:
    return sha256_file(Path(path))  # `state` only keys the cache


def sha256_json(data: object) -> str:
    """Hash of canonical JSON: key order and whitespace never change it."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stage_fingerprint(stage: str, config_view: dict, code: dict, inputs: list[Ref]) -> str:
    """The fingerprint of a stage's output (tasks.plan.fingerprint, and `verify` from a manifest)."""
    return sha256_json(
        {
            "stage": stage,
            "config": config_view,
            "code": code,
            "inputs": sorted((r.stage, r.fingerprint) for r in inputs),
        }
    )


def sealed(refs: list[Ref]) -> list[Ref]:
    """The refs with the sha256 of each input artifact's manifest.json filled in."""
    return [
        r
        if r.stage == "raw"
        else r.model_copy(update={"manifest_sha256": sha256_file(Path(r.path) / MANIFEST)})
        for r in refs
    ]


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


def input_dir(ref: Ref, home: Home | None = None) -> Path:
    """An input artifact's directory: the recorded path, else (the home moved, or the artifact was
    pulled from another machine's remote home) the artifact with that fingerprint in `home`."""
    path = Path(ref.path)
    if home is None or (path / MANIFEST).is_file() and read_manifest(path).fingerprint == ref.fingerprint:
        return path
    return find(home, ref.stage, ref.fingerprint) or path


def latest(home: Home, stage: str, name: str) -> tuple[Path, Manifest] | None:
    same = [(d, m) for d, m in published(home, stage) if m.name == name]
    return same[-1] if same else None


@contextlib.contextmanager
def staging(home: Home, stage: str, name: str, fingerprint: str, resume: bool = False) -> Iterator[Path]:
    """The hidden directory to build one fingerprint into, held under a lease.

    One writer per fingerprint: a second process waits until the first one releases the lease
    (then usually finds the artifact published). A lease whose holder died, or whose heartbeat
    stopped for LEASE_S seconds, is taken over. With `resume`, what a killed holder left in the
    directory is kept for the builder to continue from; otherwise it starts empty. When the
    build raises an ordinary exception, the partial outputs are removed but the resume progress
    (PROGRESS) is kept, so a rerun after, say, a full disk continues from its last checkpoint.
    """
    parent = home.stage_dir(stage)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{name}-{fingerprint[:12]}"
    with Lease(parent / f".lock-{name}-{fingerprint[:12]}"):
        if not resume:
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(exist_ok=True)
        try:
            yield tmp
        except Exception as e:
            written = tree_bytes(tmp) if disk_full(e) else 0
            kept = keep_diagnosis(tmp, parent.parent / FAILED / f"{stage}-{name}-{fingerprint[:12]}")
            drop_partial(tmp, keep=PROGRESS if resume else ())
            if disk_full(e):  # named for the home's disk, with the room the build needs
                raise DiskFull(tmp.parent, space_needed(home, stage, name, written)) from e
            if kept and isinstance(e, ContractError):
                raise ContractError(f"{e} (kept at {kept})") from e
            raise


FAILED = "failed"  # <home root>/failed/<stage>-<name>-<fp12>/: what a failed build leaves to read
DIAGNOSIS = ("rejects.jsonl",)


def keep_diagnosis(tmp: Path, where: Path) -> Path | None:
    """Move the files that explain a failure (the corpus stage's rejects) out of a staging dir
    about to be removed; the file kept, or None."""
    kept = None
    for name in DIAGNOSIS:
        if (tmp / name).is_file() and (tmp / name).stat().st_size:
            where.mkdir(parents=True, exist_ok=True)
            kept = Path(shutil.move(tmp / name, where / name))
    return kept


# What a failed build of a resumable stage keeps in its staging directory: training's verified
# resume states (tasks.training.RESUME) and the shards stage's chunks and shard markers
# (tasks.shard_chunks.WORK).
PROGRESS = ("resume", ".work")


def drop_partial(tmp: Path, keep: tuple[str, ...]) -> None:
    """Remove a failed build's staging dir, except the entries named in `keep`."""
    kept = [p for p in tmp.iterdir() if p.name in keep] if tmp.is_dir() else []
    if not kept:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for p in tmp.iterdir():
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


LEASE_S = 300.0  # a lease not refreshed for this long is considered abandoned
HEARTBEAT_S = 30.0


class Lease:
    """An exclusive lock file with a heartbeat, taken over when its holder is gone.

    The file holds `{"pid", "host"}`; its mtime is the heartbeat. Taking over a dead holder's
    lease is a rename of our own fresh file over it, then a read-back to see who won.
    """

    def __init__(self, path: Path, poll_s: float = 1.0):
        self.path, self.poll_s = path, poll_s
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "token": os.urandom(8).hex()}
        self._stop = threading.Event()

    def __enter__(self) -> "Lease":
        while not self._try_acquire():
            time.sleep(self.poll_s)
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._holder() == self.me:
            self.path.unlink(missing_ok=True)

    def _try_acquire(self) -> bool:
        text = json.dumps(self.me)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not self._abandoned():
                return False
            mine = self.path.with_name(f"{self.path.name}.{self.me['token']}")
            mine.write_text(text)
            os.replace(mine, self.path)
            time.sleep(0.05)  # let a concurrent taker's rename land, then see who won
            return self._holder() == self.me
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _abandoned(self) -> bool:
        holder = self._holder()
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder is None:
            return age > 5  # a half-written lock file (the writer died between create and write)
        if holder.get("host") == self.me["host"] and not pid_alive(str(holder.get("pid"))):
            return True
        return age > LEASE_S

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)


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
    fsync_path(tmp)
    crash_point(manifest.stage, "before_rename")
    if final.exists():  # a forced rebuild replaces the old artifact
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_path(final.parent)
    crash_point(manifest.stage, "after_rename")
    return final


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def collect_garbage(home: Home, keep_s: float = 7 * 86400) -> list[Path]:
    """Remove what no reader can see and no writer will resume.

    Directories without a manifest under a published name, and replaced artifacts (`.old-*`)
    go at once. Staging directories (`.tmp-*`) are kept while their lease is held, and for
    `keep_s` after that, because the next run of the same fingerprint resumes from them.
    """
    removed = []
    now = time.time()
    for stage in STAGES:
        for d in home.stage_dir(stage).glob("*"):
            if not d.is_dir():
                continue
            if d.name.startswith(".tmp-"):
                lock = d.with_name(".lock-" + d.name.removeprefix(".tmp-"))
                if lock.exists() or now - d.stat().st_mtime < keep_s:
                    continue
            elif d.name.startswith(".old-"):
                if pid_alive(d.name.rsplit("-", 1)[-1]):
                    continue
            elif (d / MANIFEST).is_file():
                continue
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def pid_alive(pid: str) -> bool:
    """Whether process `pid` of this host still runs: `pid_alive(str(os.getpid())) is True`."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unlisted(path: Path, manifest: Manifest) -> list[Path]:
    """Files under an artifact directory that its manifest does not list (the manifest aside)."""
    listed = {entry.path for entry in manifest.files} | {MANIFEST}
    return [
        f for f in sorted(path.rglob("*")) if f.is_file() and f.relative_to(path).as_posix() not in listed
    ]


def check_files(path: Path, manifest: Manifest | None = None) -> list[str]:
    """Problems with the files of one artifact (empty when every hash and size matches).

    A file the manifest does not list is a problem too: nothing planted next to an artifact
    (a pickle, say) is ever read, because readers check their inputs before opening them.
    """
    manifest = manifest or read_manifest(path)
    problems = [
        f"{f}: not listed in the manifest (planted or left over); refusing to use this artifact"
        for f in unlisted(path, manifest)
    ]
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


def quick_check(path: Path, manifest: Manifest | None = None) -> list[str]:
    """`check_files` for the skip path, at the cost of a stat per file: a file whose size
    differs, or that was modified after the manifest was written, is hashed; a missing or
    unlisted file is a problem. (`lmpipe run --verify` hashes everything.)"""
    manifest = manifest or read_manifest(path)
    written = (path / MANIFEST).stat().st_mtime_ns
    if unlisted(path, manifest):
        return check_files(path, manifest)  # names the planted file
    for entry in manifest.files:
        try:
            stat = (path / entry.path).stat()
        except OSError:
            return check_files(path, manifest)
        if stat.st_size != entry.bytes or stat.st_mtime_ns > written:
            return check_files(path, manifest)
    return []


def skipped_intact(path: Path, full: bool = False) -> None:
    """ArtifactError unless an up-to-date artifact that is about to be skipped (or used by
    `generate`) still matches its manifest: `quick_check`, or every hash with `full`."""
    problems = check_files(path) if full else quick_check(path)
    if problems:
        raise ArtifactError(
            f"{path} no longer matches its manifest:\n  "
            + "\n  ".join(problems)
            + "\nrebuild it with `lmpipe run <stage> --force`"
        )


def verify(path: Path, home: Home | None = None) -> list[str]:
    """Recheck an artifact and all its ancestors (raw files included), link by link: every
    file against its manifest, each manifest's fingerprint against its config, code and inputs,
    and each input's manifest against the sha256 its child recorded. Ancestors are looked up
    in `home` first, so a copied home is checked on its own files. The first problem is the
    first broken link, from the artifact upwards."""
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
        problems.extend(check_files(p, manifest) + check_fingerprint(p, manifest))
        for ref in manifest.inputs:
            if ref.stage == "raw":
                problems.extend(check_raw(ref, manifest.stage))
                continue
            d = (find(home, ref.stage, ref.fingerprint) if home else None) or Path(ref.path)
            if ref.manifest_sha256 and (d / MANIFEST).is_file():
                now = sha256_file(d / MANIFEST)
                if now != ref.manifest_sha256:
                    problems.append(
                        f"{d / MANIFEST}: sha256 {now[:12]}, but {p.name} ({manifest.stage}) was built from "
                        f"{ref.manifest_sha256[:12]}: the {ref.stage} manifest was edited after its use"
                    )
            walk(d)

    walk(Path(path))
    return problems


def check_fingerprint(path: Path, m: Manifest) -> list[str]:
    """The manifest's fingerprint recomputed from its config view, code version and inputs, and
    its directory name and full config agreeing with them."""
    code = {k: v for k, v in m.code.items() if k not in ("package", "git")}
    again = stage_fingerprint(m.stage, m.fingerprint_config, code, m.inputs)
    if again != m.fingerprint:
        return [
            f"{path / MANIFEST}: fingerprint {m.fingerprint[:12]} does not follow from its config, code and inputs ({again[:12]}): edited"
        ]
    if not path.name.endswith(m.fingerprint[:12]):
        return [f"{path}: the directory name does not end with its fingerprint {m.fingerprint[:12]}"]
    differ = [k for k, v in m.fingerprint_config.items() if not _within(v, m.config.get(k))]
    if differ:
        return [f"{path / MANIFEST}: config {differ} differs from the fingerprinted config: edited"]
    return []


def _within(view, full) -> bool:
    """The fingerprinted value `view` agrees with the full config's `full` (which may hold more)."""
    if isinstance(view, dict):
        return isinstance(full, dict) and all(_within(v, full.get(k)) for k, v in view.items())
    if isinstance(view, list):
        return isinstance(full, list) and len(view) == len(full) and all(map(_within, view, full))
    return view == full


def check_raw(ref: Ref, stage: str) -> list[str]:
    if ref.path.startswith("hub:"):
        return []  # pinned by name and revision; nothing local to rehash
    raw = Path(ref.path)
    if not raw.exists():
        return [f"{raw}: raw input missing"]
    if content_hash(raw) != ref.fingerprint:
        return [f"{raw}: raw input changed since {stage} was built"]
    return []
