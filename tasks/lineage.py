"""Lineage: what made an artifact (upstream, down to raw files) and what it made (downstream).

    upstream(dpo_dir) ->
    {"stage": "dpo", "name": "tiny", "fingerprint": "...", "path": "...", "flow_run_id": "...",
     "inputs": [{"stage": "sft", ... "inputs": [...]}, ..., {"stage": "raw", "name": "data/raw/qa.jsonl",
                "sha256": "...", "path": "..."}]}

Both directions read only manifests, so they work on any home, local or copied.
"""

from pathlib import Path

from schemas.manifest import Manifest
from schemas.stages import ORDER
from tasks.artifacts import Home, input_dir, published, read_manifest, sha256_file


def upstream(path: Path, home: Home | None = None) -> dict:
    """The tree of inputs of an artifact, recursively, raw files as leaves."""
    m = read_manifest(path)
    node = {
        "stage": m.stage,
        "name": m.name,
        "fingerprint": m.fingerprint,
        "path": str(path),
        "flow_run_id": m.flow_run_id,
        "flow_run_url": m.flow_run_url,
        "created_at": m.created_at,
        "inputs": [],
    }
    for ref in m.inputs:
        if ref.stage == "raw":
            node["inputs"].append(
                {"stage": "raw", "name": ref.name, "sha256": ref.fingerprint, "path": ref.path}
            )
        else:
            node["inputs"].append(upstream(input_dir(ref, home), home))
    return node


def downstream(home: Home, target: Path) -> list[dict]:
    """Every published artifact in `home` that was built, directly or not, from `target`.

    `target` is an artifact directory or a raw file (matched by content hash).
    """
    if target.is_file():
        wanted = {sha256_file(target)}
    else:
        wanted = {read_manifest(target).fingerprint}
    found = []
    for stage in ORDER:  # stages in order, so parents are seen before children
        for path, m in published(home, stage):
            if any(ref.fingerprint in wanted for ref in m.inputs):
                wanted.add(m.fingerprint)
                found.append(
                    {
                        "stage": stage,
                        "name": m.name,
                        "fingerprint": m.fingerprint,
                        "path": str(path),
                        "flow_run_url": m.flow_run_url,
                        "inputs": [ref.fingerprint for ref in m.inputs],
                    }
                )
    return found


def made_stale(home: Home, built: Manifest) -> list[dict]:
    """What the artifact `built` makes out of date: the published artifacts of its config name built,
    directly or not, from another artifact of its stage and config name. A run of the config
    that built it would rebuild them on it (after `sft --set sft.lr=...`, the dpo of that config).

    made_stale(home, read_manifest(new_sft)) ->
    [{"stale": "dpo/tiny eeab0b3e5180", "built from": "sft 41f461862573", "now": "sft 9c1d...",
      "run": "[flow run](http://...)", "path": ".../dpo/tiny-eeab0b3e5180"}]
    """
    rows = []
    for path, m in published(home, built.stage):
        if m.name != built.name or m.fingerprint == built.fingerprint:
            continue
        for d in downstream(home, path):
            if d["name"] == built.name:
                run = f"[flow run]({d['flow_run_url']})" if d["flow_run_url"] else ""
                rows.append(
                    {
                        "stale": f"{d['stage']}/{d['name']} {d['fingerprint'][:12]}",
                        "built from": f"{built.stage} {m.fingerprint[:12]}",
                        "now": f"{built.stage} {built.fingerprint[:12]}",
                        "run": run,
                        "path": d["path"],
                    }
                )
    return rows


def render(node: dict, depth: int = 0, seen: set[str] | None = None) -> list[str]:
    """Indented text of an upstream tree; an artifact met twice is expanded once."""
    seen = set() if seen is None else seen
    pad = "  " * depth
    if node["stage"] == "raw":
        return [f"{pad}raw {node['name']} sha256={node['sha256']}"]
    head = f"{pad}{node['stage']} {node['name']} fp={node['fingerprint'][:12]} run={node['flow_run_id'] or '-'} {node['path']}"
    if node["fingerprint"] in seen:
        return [head + " (see above)"]
    seen.add(node["fingerprint"])
    return [head] + [line for child in node["inputs"] for line in render(child, depth + 1, seen)]


def rows(node: dict, parent: str = "", seen: set[str] | None = None) -> list[dict]:
    """The upstream tree as table rows, one per (artifact or raw file, reader), ancestors once.

    rows(upstream(shards_dir)) ->
    [{"stage": "shards", "name": "tiny", "fingerprint": "9f8e...", "input of": "", "path": "..."},
     {"stage": "corpus", ..., "input of": "shards"}, {"stage": "raw", "name": "data/raw/qa.jsonl",
      "fingerprint": "<sha256>", "input of": "corpus", ...}, {"stage": "tokenizer", ...}, ...]
    """
    seen = set() if seen is None else seen
    fp = node.get("sha256") or node["fingerprint"]
    row = {"stage": node["stage"], "name": node["name"], "fingerprint": fp, "input of": parent}
    out = [{**row, "path": node["path"]}]
    if node["stage"] == "raw" or fp in seen:
        return out
    seen.add(fp)
    return out + [r for child in node["inputs"] for r in rows(child, node["stage"], seen)]
