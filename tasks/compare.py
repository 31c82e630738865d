"""Two or more builds side by side, from their manifests (`lmpipe compare A B [C...]`).

    compare([sft_a, sft_b]) ->
    {"artifacts": [{"stage": "sft", "fingerprint": "0a1b...", "path": ..., "mlflow_run_id": ...}, ...],
     "config": [{"field": "sft.lr", "values": [0.001, 0.0001]}],          # only fields that differ
     "inputs": [{"input": "pretrain", "values": ["9f8e...", "77aa..."]}],  # only inputs that differ
     "metrics": [{"metric": "val_loss", "values": [4.95, 5.12]}, ...]}     # every final figure

An artifact is named by its directory or by (a prefix of) its fingerprint.
"""

from pathlib import Path

from schemas.stages import ORDER
from tasks.artifacts import ArtifactError, Home, published, read_manifest
from tasks.tracking import flatten, numbers


def resolve(target: str, home: Home) -> Path:
    """An artifact directory, or the one published artifact whose fingerprint starts with `target`."""
    path = Path(target).expanduser()
    if path.is_dir():
        return path.resolve()
    found = [p for stage in ORDER for p, m in published(home, stage) if m.fingerprint.startswith(target)]
    if len(found) != 1:
        what = (
            "no published artifact" if not found else f"{len(found)} artifacts ({', '.join(map(str, found))})"
        )
        raise ArtifactError(
            f"{target}: {what} in {home.artifacts.parent} has this fingerprint, and it is not a directory; "
            "give an artifact path or a longer fingerprint (`lmpipe list`)"
        )
    return found[0]


def compare(paths: list[Path]) -> dict:
    manifests = [read_manifest(p) for p in paths]
    configs = [flatten({m.stage: m.config}) for m in manifests]
    inputs = [
        {ref.stage if ref.stage != "raw" else ref.name: ref.fingerprint for ref in m.inputs}
        for m in manifests
    ]
    metrics = [numbers({k: v for k, v in m.stats.items() if k != "rows"}) for m in manifests]
    return {
        "artifacts": [
            {
                "stage": m.stage,
                "name": m.name,
                "fingerprint": m.fingerprint,
                "path": str(p),
                "mlflow_run_id": m.mlflow_run_id,
            }
            for m, p in zip(manifests, paths, strict=True)
        ],
        "config": side_by_side(configs, "field", differing=True),
        "inputs": side_by_side(inputs, "input", differing=True),
        "metrics": side_by_side(metrics, "metric", differing=False),
    }


def side_by_side(dicts: list[dict], label: str, differing: bool) -> list[dict]:
    """One row per key of any dict, with each dict's value (None where missing)."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    rows = [{label: k, "values": [d.get(k) for d in dicts]} for k in keys]
    return [r for r in rows if len({repr(v) for v in r["values"]}) > 1] if differing else rows


def render(result: dict) -> list[str]:
    """The comparison as text tables: one column per artifact (stage and fingerprint prefix)."""
    heads = [f"{a['stage']} {a['fingerprint'][:12]}" for a in result["artifacts"]]
    lines = [f"{'':<32}" + "".join(f"{h:>22}" for h in heads)]
    sections = (
        ("config", "config fields that differ"),
        ("inputs", "inputs that differ"),
        ("metrics", "final metrics"),
    )
    for key, title in sections:
        rows = result[key]
        lines.append(f"\n{title}:" + ("" if rows else " none"))
        for r in rows:
            name = next(v for k, v in r.items() if k != "values")
            lines.append(f"  {name:<30}" + "".join(f"{cell(v):>22}" for v in r["values"]))
    return lines


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text[:12] if len(text) == 64 else text[:20]  # fingerprints and sha256 by their prefix
