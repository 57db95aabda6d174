"""No import cycle inside ``litdistill``: every module has a layer.

Every ``import`` / ``from ... import`` anywhere in a module counts, at module level or inside a
function (a function-level import is still a dependency; it only hides the cycle until the
function runs). Relative imports are resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import litdistill

PACKAGE = Path(litdistill.__file__).resolve().parent

# Cycles allowed, each as its sorted module names: none.
KNOWN_CYCLES: set[tuple[str, ...]] = set()
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(name: str, source: str, modules: set[str], is_package: bool = False) -> set[str]:
    """The ``litdistill`` modules that module ``name`` (its ``source``) imports
    (``from litdistill import x``: module x)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # The longest litdistill module the name starts with: a.b.c -> a.b when c is a name.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != "litdistill":
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports(module_name(p), p.read_text(), modules,
                                    p.name == "__init__.py") for p in files}


def cycles(edges: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_on_a_hand_graph() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": set()}
    assert cycles(edges) == [("a", "b", "c")]


def test_imports_resolve_relative_and_function_level() -> None:
    """Parsed, not imported: a function-level relative import is an edge too."""
    modules = {"litdistill", "litdistill.a", "litdistill.c", "litdistill.sub",
               "litdistill.sub.b", "litdistill.sub.d"}
    source = ("import os\nfrom litdistill import a\nfrom .b import thing\n"
              "def f():\n    from ..c import x\n    import litdistill.sub.d as d\n")
    assert imports("litdistill.sub.e", source, modules) == {
        "litdistill.a", "litdistill.sub.b", "litdistill.c", "litdistill.sub.d"}
    edges = graph()
    assert "litdistill.latency" in edges["litdistill.onnx_graphs"]
    assert "litdistill.runs" in edges["litdistill.tables"]  # config_label's local import


def test_no_import_cycle_inside_litdistill() -> None:
    found = set(cycles(graph()))
    new = sorted(found - KNOWN_CYCLES)
    assert not new, "import cycles: " + "; ".join(" <-> ".join(c) for c in new)
    assert not KNOWN_CYCLES - found, f"cleared, drop from KNOWN_CYCLES: {KNOWN_CYCLES - found}"


def test_modules_and_functions_stay_small():
    """Small flat modules: no module over 400 lines, no function over 60 (a longer one is a
    recipe that wants its steps named)."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if (n := len(source.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {n} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                    (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                too_long.append(f"{path.name}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, too_long


# The tools that read finished runs (ARCHITECTURE.md, "Layers"): training never imports them,
# and they never import the training entry point.
TOOLS = {"report", "sweeps", "tables", "plots", "intervals", "wandb_report", "wandb_files",
         "export", "onnx_graphs", "latency", "zoo_cli"}
# Old configs name litdistill.callbacks.ReportCallback: a lazy alias, imported only then.
ALLOWED = {("callbacks", "report")}


def test_training_never_imports_the_tools_that_read_finished_runs():
    edges = {k.removeprefix("litdistill."): {d.removeprefix("litdistill.") for d in v}
             for k, v in graph().items()}
    up = sorted((m, d) for m, deps in edges.items() for d in deps
                if m not in TOOLS and m != "demo" and d in TOOLS and (m, d) not in ALLOWED)
    assert not up, f"modules below the tools import them: {up}"
    into_train = sorted(m for m in TOOLS if "train" in edges.get(m, ()))
    assert not into_train, f"tools import the training entry point: {into_train}"
