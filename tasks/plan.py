"""Fingerprints and the plan: for each stage, run or skip, and why.

A stage's fingerprint hashes its name, the artifact-defining part of its config, its code
version (format version, plus the token registry and templates where they shape the output)
and the fingerprints of its inputs. Raw files enter by content hash, so editing one reruns
everything downstream, while moving it (or changing LMPIPE_HOME) changes nothing.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from schemas.base import fingerprint_view
from schemas.config import PROJECT_ROOT, PipelineConfig
from schemas.manifest import Ref
from schemas.stages import ORDER, STAGES
from schemas.templates import registry_payload
from tasks.artifacts import (
    ArtifactError,
    Home,
    artifact_dir,
    check_files,
    find,
    latest,
    read_manifest,
    sha256_json,
    source_hash,
    stage_fingerprint,
)


@dataclass
class StagePlan:
    stage: str
    name: str
    fingerprint: str
    inputs: list[Ref]
    path: Path  # where the artifact is (or will be)
    up_to_date: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        return "skip" if self.up_to_date else "run"


def code_version(stage: str) -> dict:
    """What of the code defines this stage's output (never the git commit: see docs/how-it-works.md, "Fingerprints")."""
    d = STAGES[stage]
    code = {"format": d.version}
    if d.uses_registry:
        code["registry"] = sha256_json(registry_payload())[:16]
    return code


def fingerprint(stage: str, config_view: dict, inputs: list[Ref]) -> str:
    return stage_fingerprint(stage, config_view, code_version(stage), inputs)


def data_roots() -> list[Path]:
    """Where raw sources may live: the project, plus folders listed in LMPIPE_DATA_ROOTS."""
    extra = [
        Path(p).expanduser().resolve() for p in os.environ.get("LMPIPE_DATA_ROOTS", "").split(os.pathsep) if p
    ]
    return [PROJECT_ROOT.resolve(), *extra]


def raw_path(path: str) -> Path:
    """A source path, relative to the project root, confined to the data roots.

    `..`, absolute paths and symlinks are resolved first, so none of them can reach outside
    (`/etc/passwd`, `data/raw/../../x`, a symlink to /proc) unless that folder is listed in
    LMPIPE_DATA_ROOTS. Inside a folder, every file is checked the same way (`raw_files`).
    """
    p = Path(path).expanduser()
    p = p if p.is_absolute() else PROJECT_ROOT / p
    inside_roots(p, f"corpus source {path!r}")
    return p


def inside_roots(p: Path, what: str) -> Path:
    """`p` unchanged when its real path is inside a data root; PermissionError naming both.

    >>> inside_roots(Path("data/raw/folder/link.jsonl"), "corpus source 'data/raw/folder'")
    Traceback (most recent call last):
    PermissionError: corpus source 'data/raw/folder': .../link.jsonl resolves to /etc/x, outside ...
    """
    real = p.resolve()
    roots = data_roots()
    if not any(real.is_relative_to(root) for root in roots):
        raise PermissionError(
            f"{what}: {p} resolves to {real}, outside the allowed data roots "
            f"{[str(r) for r in roots]}; add its folder to LMPIPE_DATA_ROOTS to allow it"
        )
    return p


def raw_files(folder: Path, what: str) -> list[Path]:
    """Every file under `folder`, sorted, each checked against the data roots: a symlink in a
    folder source (or a `save_to_disk` folder) that leads outside them is refused, naming it,
    rather than pulled into the corpus."""
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    return [inside_roots(f, what) for f in files]


def raw_refs(cfg: PipelineConfig) -> list[Ref]:
    """One ref per corpus source, fingerprinted by content.

    A file by its sha256; a folder by its sorted relative paths and each file's sha256; a hub
    dataset by name, subset, split and pinned revision.
    """
    refs = []
    for src in cfg.corpus.sources:
        if src.format == "hub":
            pin = {"hub": src.path, "subset": src.subset, "split": src.split, "revision": src.revision}
            refs.append(Ref(stage="raw", name=src.path, fingerprint=sha256_json(pin), path=f"hub:{src.path}"))
            continue
        refs.append(file_ref(src.path, f"corpus source {src.path!r} ({src.task})"))
    return refs


def file_ref(path: str, what: str) -> Ref:
    """A raw file or folder as an input, fingerprinted by content."""
    p = raw_path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: not found at {p}")
    if p.is_dir():
        raw_files(p, what)  # before source_hash reads them
    return Ref(stage="raw", name=path, fingerprint=source_hash(p), path=str(p))


def check_unchanged(stage: str, refs: list[Ref]) -> None:
    """ArtifactError naming the raw file (or folder) whose content changed since the plan hashed
    it: the stage may have read other bytes than its fingerprint and manifest record (a file
    appended to while the stage read it), so nothing of it may be published.

    >>> check_unchanged("corpus", refs)  # after `echo '{...}' >> data/raw/qa.jsonl` mid-stage
    ArtifactError: raw file data/raw/qa.jsonl changed while the corpus stage read it ...
    """
    for ref in refs:
        if ref.stage != "raw" or ref.path.startswith("hub:"):
            continue
        path = Path(ref.path)
        now = source_hash(path) if path.exists() else "(gone)"
        if now != ref.fingerprint:
            raise ArtifactError(
                f"raw file {ref.name} changed while the {stage} stage read it (sha256 {ref.fingerprint[:12]} "
                f"when planned, {now[:12]} now); nothing was published: rerun once it stops changing"
            )


def data_refs(stage: str, cfg: PipelineConfig) -> list[Ref]:
    """The user's files a stage reads besides artifacts: the heads' labelled data."""
    if stage != "heads":
        return []
    return [
        file_ref(getattr(d, split), f"heads data {d.name!r} ({split})")
        for d in cfg.heads.data
        for split in ("train", "validation")
    ]


def plan_stage(stage: str, cfg: PipelineConfig, home: Home, inputs: list[Ref]) -> StagePlan:
    view = fingerprint_view(cfg.section(stage))
    fp = fingerprint(stage, view, inputs)
    existing = find(home, stage, fp)
    plan = StagePlan(
        stage=stage,
        name=cfg.name,
        fingerprint=fp,
        inputs=inputs,
        path=existing or artifact_dir(home, stage, cfg.name, fp),
        up_to_date=existing is not None,
    )
    if not plan.up_to_date:
        plan.reasons = why_changed(home, stage, cfg.name, view, inputs)
    return plan


def plan_pipeline(cfg: PipelineConfig, home: Home, stages: tuple[str, ...] = ORDER) -> list[StagePlan]:
    """Plan every stage as if the ones before it were built from this config."""
    refs: dict[str, Ref] = {}
    plans = []
    for stage in ORDER:
        inputs = raw_refs(cfg) if stage == "corpus" else [refs[i] for i in STAGES[stage].inputs]
        if stage in stages:  # only what is planned reads its own files (no stage depends on them)
            inputs += data_refs(stage, cfg)
        p = plan_stage(stage, cfg, home, inputs)
        refs[stage] = Ref(stage=stage, name=p.name, fingerprint=p.fingerprint, path=str(p.path))
        if stage in stages:
            plans.append(p)
    return plans


def plan_single(stage: str, cfg: PipelineConfig, home: Home) -> StagePlan:
    """Plan one stage on the latest matching upstream artifacts.

    Each input is the artifact this config would produce if it exists; otherwise the latest
    published artifact of that stage under the same config name (with a warning); otherwise
    an error saying which stage to run first.
    """
    expected = {p.stage: p for p in plan_pipeline(cfg, home, ("corpus", *STAGES[stage].inputs))}
    if stage == "corpus":
        return expected["corpus"]
    inputs, warnings = [], []
    for up in STAGES[stage].inputs:
        p = expected[up]
        if p.up_to_date:
            inputs.append(Ref(stage=up, name=p.name, fingerprint=p.fingerprint, path=str(p.path)))
            continue
        found = latest(home, up, cfg.name)
        if found is None:
            raise ArtifactError(
                f"stage {stage!r} needs a {up!r} artifact and there is none: run `lmpipe run {up}`"
            )
        d, m = found
        warnings.append(
            f"{up}: using latest {d.name}; this config would build {p.fingerprint[:12]} ({'; '.join(p.reasons)})"
        )
        inputs.append(Ref(stage=up, name=m.name, fingerprint=m.fingerprint, path=str(d)))
    plan = plan_stage(stage, cfg, home, inputs + data_refs(stage, cfg))
    plan.warnings = warnings
    return plan


def why_changed(home: Home, stage: str, name: str, view: dict, inputs: list[Ref]) -> list[str]:
    """Differences from the latest artifact of this stage and config name, in words."""
    found = latest(home, stage, name)
    if found is None:
        return [f"no earlier {stage} artifact for config {name!r}"]
    path, old = found
    reasons = [f"config {stage}.{k}: {a!r} -> {b!r}" for k, a, b in _diff(old.fingerprint_config, view)]
    if old.code != {**old.code, **code_version(stage)}:
        reasons.append(f"code version: {_code_part(old.code)} -> {code_version(stage)}")
    old_inputs = {(r.stage, r.name): r.fingerprint for r in old.inputs}
    for r in inputs:
        before = old_inputs.get((r.stage, r.name))
        label = f"raw file {r.name}" if r.stage == "raw" else f"input {r.stage}"
        if before is None:
            reasons.append(f"{label}: new input")
        elif before != r.fingerprint:
            reasons.append(f"{label}: {before[:12]} -> {r.fingerprint[:12]}")
    return reasons or [f"differs from {path.name} (rebuilt or removed)"]


def _code_part(code: dict) -> dict:
    return {k: code[k] for k in ("format", "registry") if k in code}


def _diff(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def read_input(ref: Ref) -> Path:
    """The directory of an input artifact, after checking its files against its manifest."""
    path = Path(ref.path)
    m = read_manifest(path)
    if m.fingerprint != ref.fingerprint:
        raise ArtifactError(f"{path}: fingerprint {m.fingerprint[:12]}, expected {ref.fingerprint[:12]}")
    problems = check_files(path, m)
    if problems:
        raise ArtifactError(f"input {ref.stage} failed its integrity check:\n  " + "\n  ".join(problems))
    return path
