"""Lineage as the Prefect UI shows it: the picture and the table of one artifact's graph."""

from PIL import Image
from test_artifacts import publish_dummy

from schemas.manifest import Ref
from tasks import artifacts, lineage, lineage_graph


def ref_of(path):
    m = artifacts.read_manifest(path)
    return Ref(stage=m.stage, name=m.name, fingerprint=m.fingerprint, path=str(path))


def small_home(tmp_path):
    """raw.jsonl -> corpus -> two tokenizer variants; the first variant has a flow run link."""
    home = artifacts.Home.resolve(tmp_path / "home")
    raw = tmp_path / "raw.jsonl"
    raw.write_text("{}\n")
    raw_ref = Ref(stage="raw", name="raw.jsonl", fingerprint=artifacts.sha256_file(raw), path=str(raw))
    corpus = publish_dummy(home, inputs=[raw_ref])
    url = "http://127.0.0.1:4200/runs/flow-run/abc"
    a = publish_dummy(home, "tokenizer", artifacts.sealed([ref_of(corpus)]), {"v": 1}, flow_run_url=url)
    b = publish_dummy(home, "tokenizer", artifacts.sealed([ref_of(corpus)]), {"v": 2})
    return home, raw, corpus, a, b


def test_graph_reaches_raw_files_and_what_used_the_artifact(tmp_path):
    home, raw, corpus, a, b = small_home(tmp_path)
    graph = lineage_graph.lineage_graph(lineage.upstream(corpus, home), lineage.downstream(home, corpus))
    fp = {p: artifacts.read_manifest(p).fingerprint for p in (corpus, a, b)}
    sha = artifacts.sha256_file(raw)
    assert set(graph.edges) == {(sha, fp[corpus]), (fp[corpus], fp[a]), (fp[corpus], fp[b])}
    assert graph.nodes[fp[corpus]]["label"] == f"corpus/t\n{fp[corpus][:12]}"
    assert graph.nodes[sha]["label"] == f"raw.jsonl\nsha256 {sha[:12]}"
    roles = {graph.nodes[k]["role"] for k in (sha, fp[corpus], fp[a])}
    assert roles == {"raw", "target", "downstream"}


def test_table_lists_nodes_left_to_right_with_their_runs(tmp_path):
    home, _, _, a, _ = small_home(tmp_path)
    graph = lineage_graph.lineage_graph(lineage.upstream(a, home), lineage.downstream(home, a))
    rows = lineage_graph.table(graph)
    assert [r["role"] for r in rows] == ["raw", "upstream", "target"]
    assert rows[-1]["run"] == "[flow run](http://127.0.0.1:4200/runs/flow-run/abc)"
    assert rows[0]["run"] == ""


def test_picture_is_a_png_wider_for_longer_chains(tmp_path):
    home, raw, corpus, a, _ = small_home(tmp_path)
    raw_tree = {"stage": "raw", "name": raw.name, "sha256": artifacts.sha256_file(raw), "path": str(raw)}
    short = lineage_graph.draw(lineage_graph.lineage_graph(raw_tree, []), tmp_path / "short.png")
    full = lineage_graph.lineage_graph(raw_tree, lineage.downstream(home, raw))
    long = lineage_graph.draw(full, tmp_path / "long.png")
    assert len(full) == 4
    with Image.open(short) as s, Image.open(long) as g:
        assert s.format == g.format == "PNG" and g.width > s.width


def artifacts_of(flow_run_id) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def test_lineage_deployment_flow_publishes_picture_runs_users_and_verify(prefect_harness, tmp_path):
    from flows.lineage import lineage_flow

    home, raw, corpus, a, b = small_home(tmp_path)
    fp = artifacts.read_manifest(corpus).fingerprint
    state = lineage_flow(target=fp[:10], home=str(tmp_path / "home"), return_state=True)
    result = state.result()
    assert result["target"] == str(corpus) and result["problems"] == []
    assert {u["path"] for u in result["used_by"]} == {str(a), str(b)}
    found = artifacts_of(state.state_details.flow_run_id)
    key = f"lineage-corpus-t-{fp[:12]}"
    assert set(found) == {key, f"{key}-runs", f"{key}-used-by", f"{key}-verify"}
    assert "data:image/png;base64," in found[key].data
    (a / "data.txt").write_text("changed")
    assert lineage_flow(target=str(a), home=str(tmp_path / "home"))["problems"]  # verify speaks up


def test_plan_deployment_flow_says_what_would_run_and_why(prefect_harness, tiny_config, tmp_path):
    from flows.plan import plan_flow

    state = plan_flow(
        config=str(tiny_config), overrides=["sft.lr=0.0001"], home=str(tmp_path / "h"), return_state=True
    )
    plan = state.result()
    assert [p["stage"] for p in plan] == ["corpus", "tokenizer", "shards", "pretrain", "sft", "dpo"]
    assert all(p["action"] == "run" and p["why"] for p in plan)
    table = artifacts_of(state.state_details.flow_run_id)["plan-t"].data
    assert "| sft | run |" in table and "no earlier sft artifact" in table
    assert not list((tmp_path / "h").rglob("manifest.json"))  # it ran nothing
