"""The lineage of one artifact as a picture and a table, for the Prefect UI.

Prefect's open-source UI has no lineage page, so each stage publishes its artifact's graph:
upstream down to the raw files, downstream to what already used it. Nodes read
`stage/config/fingerprint12`, raw files `name` and `sha256 <12>`; the table beside the
picture gives each node's producing flow run as a link.

    graph = lineage_graph(upstream(path), downstream(home, path))
    draw(graph, out / "lineage.png")
    table(graph)  # [{"node": "sft/tiny/5b3942cafb6f", "role": "upstream", "run": "[run](http://…)"}, …]
"""

from pathlib import Path

import networkx as nx

ROLE_COLOURS = {"target": "#f4a261", "upstream": "#a8dadc", "downstream": "#b7e4c7", "raw": "#e9ecef"}


def lineage_graph(tree: dict, users: list[dict]) -> nx.DiGraph:
    """A graph whose edges run from input to what was built from it. `tree` is
    `lineage.upstream(path)`, or for a raw file `{"stage": "raw", "name", "sha256", "path"}`;
    `users` is `lineage.downstream(home, path)`."""
    graph = nx.DiGraph()
    add_upstream(graph, tree, role="target")
    for user in users:
        graph.add_node(user["fingerprint"], **node_data(user, "downstream"))
    for user in users:
        for parent in user["inputs"]:
            if parent in graph:
                graph.add_edge(parent, user["fingerprint"])
    return graph


def add_upstream(graph: nx.DiGraph, node: dict, role: str) -> str:
    key = node.get("sha256") or node["fingerprint"]
    if key not in graph:
        graph.add_node(key, **node_data(node, "raw" if node["stage"] == "raw" and role != "target" else role))
        for child in node.get("inputs", []):
            graph.add_edge(add_upstream(graph, child, "upstream"), key)
    return key


def node_data(node: dict, role: str) -> dict:
    if node["stage"] == "raw":
        label = f"{Path(node['name']).name}\nsha256 {node['sha256'][:12]}"
    else:
        label = f"{node['stage']}/{node['name']}\n{node['fingerprint'][:12]}"
    return {"label": label, "role": role, "stage": node["stage"], "run": node.get("flow_run_url")}


def layers(graph: nx.DiGraph) -> dict[str, int]:
    """Each node's column: the longest path from a raw file to it, so every arrow points right."""
    depth: dict[str, int] = {}
    for key in nx.topological_sort(graph):
        depth[key] = max((depth[p] + 1 for p in graph.predecessors(key)), default=0)
    return depth


def draw(graph: nx.DiGraph, out: Path) -> Path:
    """The graph as a PNG, columns left to right from raw files, the target highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    nx.set_node_attributes(graph, layers(graph), "layer")
    pos = nx.multipartite_layout(graph, subset_key="layer", align="vertical")
    columns = max(nx.get_node_attributes(graph, "layer").values()) + 1
    rows = max(list(nx.get_node_attributes(graph, "layer").values()).count(c) for c in range(columns))
    fig, ax = plt.subplots(figsize=(2.4 * columns + 1, 0.9 * rows + 1.5))
    boxes = {}
    for key, (x, y) in pos.items():
        data = graph.nodes[key]
        box = {"boxstyle": "round,pad=0.4", "facecolor": ROLE_COLOURS[data["role"]], "edgecolor": "#495057"}
        boxes[key] = ax.text(
            x, y, data["label"], ha="center", va="center", fontsize=8, family="monospace", bbox=box
        )
    for a, b in graph.edges:
        # An edge that skips columns bends, so it is not hidden behind the boxes between.
        skip = graph.nodes[b]["layer"] - graph.nodes[a]["layer"] > 1
        style = {
            "arrowstyle": "-|>",
            "color": "#6c757d",
            "connectionstyle": f"arc3,rad={0.25 if skip else 0}",
        }
        ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops=style | {"patchA": boxes[a], "patchB": boxes[b]})
    xs, ys = zip(*pos.values(), strict=True)
    ax.set_xlim(min(xs) - 0.15, max(xs) + 0.15)  # text and arrows do not widen the axes themselves
    ax.set_ylim(min(ys) - 0.15, max(ys) + 0.15)
    ax.set_axis_off()
    legend = [
        Patch(facecolor=colour, edgecolor="#495057", label=role) for role, colour in ROLE_COLOURS.items()
    ]
    ax.legend(handles=legend, loc="lower right", fontsize=8, frameon=False, ncols=4)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def table(graph: nx.DiGraph) -> list[dict]:
    """One row per node, columns left to right: the node, its role and its flow run's link."""
    order = layers(graph)
    rows = []
    for key in sorted(graph, key=lambda k: (order[k], graph.nodes[k]["label"])):
        data = graph.nodes[key]
        run = f"[flow run]({data['run']})" if data["run"] else ""
        rows.append({"node": data["label"].replace("\n", " "), "role": data["role"], "run": run})
    return rows
