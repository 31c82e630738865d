"""Lineage in the Prefect UI: the `lineage` deployment, and the picture every stage run publishes.

    prefect deployment run lineage/lineage -p target=checkpoints/dpo/tiny-<fp>   # or a fingerprint, or a raw file

publishes, on the run's Artifacts tab: the picture of the graph (upstream to the raw files,
downstream to what used it), a table of its nodes with each producing flow run's link, the
"used by" list, and what `lmpipe verify` finds (artifacts only).
"""

import base64
import tempfile
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks import lineage, lineage_graph
from tasks.artifacts import Home, sha256_file, verify
from tasks.compare import resolve


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from its parts:
    `artifact_key("sft", "My_run", fp[:12], "lineage") == "sft-my-run-41f461862573-lineage"`."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in text)


def publish_picture(tree: dict, users: list[dict], key: str) -> None:
    """The graph as an inline image (the browser cannot open the worker's files) and its table."""
    graph = lineage_graph.lineage_graph(tree, users)
    with tempfile.TemporaryDirectory() as scratch:
        png = lineage_graph.draw(graph, Path(scratch) / "lineage.png").read_bytes()
    title = (
        tree["name"]
        if tree["stage"] == "raw"
        else f"{tree['stage']}/{tree['name']} {tree['fingerprint'][:12]}"
    )
    create_markdown_artifact(
        key=key,
        markdown=f"# Lineage of {title}\n\n![lineage](data:image/png;base64,{base64.b64encode(png).decode()})\n",
        description=f"lineage of {title}: raw files -> ... -> what used it",
    )
    create_table_artifact(
        key=f"{key}-runs",
        table=lineage_graph.table(graph),
        description=f"{title}: each node and its flow run",
    )


def raw_tree(path: Path) -> dict:
    return {"stage": "raw", "name": path.name, "sha256": sha256_file(path), "path": str(path)}


@flow(name="lineage", log_prints=True, persist_result=False)
def lineage_flow(target: str, home: str | None = None) -> dict:
    """Publish the lineage of one artifact or raw file: picture, runs, "used by", verify.

    Args:
        target: An artifact directory, a fingerprint (or a prefix of one), or a raw file.
        home: The artifact home (default: LMPIPE_HOME, else the project's).
    """
    h = Home.resolve(home)
    raw = Path(target).expanduser()
    path = raw.resolve() if raw.is_file() else resolve(target, h)
    tree = raw_tree(path) if raw.is_file() else lineage.upstream(path, h)
    users = lineage.downstream(h, path)
    label = path.name if raw.is_file() else f"{tree['stage']}-{tree['name']}-{tree['fingerprint'][:12]}"
    key = artifact_key("lineage", label)
    publish_picture(tree, users, key)
    used_by = [{k: u[k] for k in ("stage", "name", "fingerprint", "path")} for u in users]
    create_table_artifact(key=f"{key}-used-by", table=used_by or [{"used by": "nothing published"}])
    problems = [] if raw.is_file() else verify(path, h)
    verdict = (
        "ok: every file matches its manifest, ancestors included" if not problems else "\n".join(problems)
    )
    create_markdown_artifact(key=f"{key}-verify", markdown=f"# verify\n\n```\n{verdict}\n```\n")
    print(
        f"{label}: {len(tree.get('inputs', []))} inputs, used by {len(users)}, verify: {len(problems)} problem(s)"
    )
    return {"target": str(path), "used_by": used_by, "problems": problems}
