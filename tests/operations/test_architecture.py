"""The shape of the house, drawn from its imports with `ast`: three floors, no arrow back up.

    flows/, cli/, runners/  Prefect flows, the lmpipe command, job runners  floor 3
    tasks/<stage>           one module per stage of schemas.stages.ORDER    floor 2
    tasks/<library>, schemas/                                               floor 1

An arrow (an import, at module level or inside a function) may point down a floor, or stay on
floor 1 or 3; it never points up, and stage modules never import each other.
"""

import ast
import graphlib
import itertools
from dataclasses import dataclass
from pathlib import Path

from schemas.config import PROJECT_ROOT
from schemas.stages import ORDER

PACKAGES = ("flows", "cli", "runners", "tasks", "schemas")
TOP = ("flows", "cli", "runners")  # what drives the stages: nothing below imports them
STAGE_MODULES = {f"tasks.{s}" for s in ORDER}


@dataclass(frozen=True)
class Arrow:
    source: str  # module that imports
    target: str  # module imported (a package's __init__ is the package's name)
    where: str  # "tasks/rl.py:30"

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def module_of(path: Path) -> str:
    """`tasks/rl.py` -> `tasks.rl`; `flows/__init__.py` -> `flows`."""
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_of(p): p for pkg in PACKAGES for p in sorted((PROJECT_ROOT / pkg).glob("*.py"))}


def targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The project modules one import statement reaches: `from tasks import shards` -> `tasks.shards`."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        names = [
            f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
            for a in node.names
        ]
    found = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name not in found:
            found.append(name)
    return found


def third_party(path: Path) -> list[tuple[str, int]]:
    """Top-level names of every import in a file, with their line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.module.split(".")[0], node.lineno))
    return out


def arrows() -> list[Arrow]:
    known = modules()
    out = []
    for source, path in known.items():
        where = path.relative_to(PROJECT_ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or not node.module):
                raise AssertionError(f"{where}:{node.lineno}: a relative import; use the absolute name")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out += [
                    Arrow(source, t, f"{where}:{node.lineno}") for t in targets(node, known) if t != source
                ]
    return out


def kind(module: str) -> str:
    if module.split(".")[0] in TOP:
        return "flows"
    return "stage" if module in STAGE_MODULES else "library"


def floor_step(arrow: Arrow) -> int:
    """0 for an arrow within flows or within the libraries, 1 for an arrow down to another floor."""
    same = kind(arrow.source) == kind(arrow.target)
    return 0 if same and kind(arrow.source) != "stage" else 1


def floors(graph: list[Arrow]) -> tuple[int, list[Arrow]]:
    """Floors of the longest chain of arrows (1 + the floor steps along it), and that chain. An
    arrow that closes a cycle is not followed, so a cyclic graph gives a lower bound."""
    out: dict[str, list[Arrow]] = {}
    for a in graph:
        out.setdefault(a.source, []).append(a)
    height: dict[str, tuple[int, list[Arrow]]] = {}

    def walk(module: str, path: set[str]) -> tuple[int, list[Arrow]]:
        if module not in height:
            path = path | {module}
            down = [(1, [])]
            for a in out.get(module, []):
                if a.target not in path:
                    below, chain = walk(a.target, path)
                    down.append((floor_step(a) + below, [a, *chain]))
            height[module] = max(down, key=lambda d: d[0])
        return height[module]

    return max((walk(m, set()) for m in modules()), key=lambda d: d[0])


def cycle(graph: list[Arrow]) -> list[Arrow]:
    """The arrows of one import cycle, or [] when there is none."""
    sorter = graphlib.TopologicalSorter()
    for a in graph:
        sorter.add(a.source, a.target)
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        loop = error.args[1]  # [m1, m2, ..., m1]: each is imported by the next
        return [a for x, y in itertools.pairwise(loop) for a in graph if (a.source, a.target) == (y, x)]
    return []


def listed(bad: list[Arrow]) -> str:
    return "\n".join(str(a) for a in bad)


def test_no_import_cycle():
    found = cycle(arrows())
    assert not found, f"import cycle:\n{listed(found)}"


def test_nothing_below_flows_imports_flows():
    bad = [a for a in arrows() if kind(a.target) == "flows" and kind(a.source) != "flows"]
    assert not bad, (
        f"tasks/ and schemas/ must not import flows, cli or runners (call what they need explicitly):\n{listed(bad)}"
    )


def test_schemas_do_not_import_prefect():
    bad = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}"
        for name, path in modules().items()
        if name.split(".")[0] == "schemas"
        for top, line in third_party(path)
        if top == "prefect"
    ]
    assert not bad, f"schemas/ imports prefect: {bad}"


def test_stage_modules_do_not_import_each_other():
    bad = [a for a in arrows() if kind(a.source) == kind(a.target) == "stage"]
    assert not bad, (
        f"a stage module imports another; move what they share to a library module:\n{listed(bad)}"
    )


def test_libraries_do_not_import_stages():
    bad = [a for a in arrows() if kind(a.source) == "library" and kind(a.target) in ("stage", "flows")]
    assert not bad, f"a library module imports a stage (or flows); it must sit below them:\n{listed(bad)}"


def test_three_floors():
    count, chain = floors(arrows())
    assert count == 3, f"{count} floors, along:\n{listed(chain)}"
