"""The package's import graph: no import loops and no lower layer importing a higher one (ARCHITECTURE.md's layout).

Every module is parsed (not imported), so imports inside functions count as much as those at the top: a lazy import
still ties the two modules together. Importing `a.b.c` from outside `a.b` also runs `a.b`'s __init__, so that edge
is counted too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llf_recipes"

# Lowest first. A module belongs to the longest prefix listed; it may import its own layer and the ones below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("llf_recipes", "llf_recipes.errors", "llf_recipes.atomic", "llf_recipes.paths",
                    "llf_recipes.yamlio", "llf_recipes.suggest", "llf_recipes.console", "llf_recipes.ownership",
                    "llf_recipes.templating", "llf_recipes.hardware", "llf_recipes.progress", "llf_recipes.manifest",
                    "llf_recipes.records", "llf_recipes.checkpoints", "llf_recipes.changes", "llf_recipes.schema", "llf_recipes.sampling",
                    "llf_recipes.stepslog")),
    # What engines exist and where they live, and the catalog that names recipes and datasets by their engines.
    ("registry", ("llf_recipes.engines", "llf_recipes.engines.translate", "llf_recipes.engines.env",
                  "llf_recipes.engines.install", "llf_recipes.engines.check", "llf_recipes.engines.handoff",
                  "llf_recipes.engines.lf_templates", "llf_recipes.recipe", "llf_recipes.plain_config",
                  "llf_recipes.catalog")),
    ("data", ("llf_recipes.data",)),
    ("render", ("llf_recipes.render", "llf_recipes.provenance", "llf_recipes.grpo", "llf_recipes.stage_dirs",
                "llf_recipes.deepspeed_choice")),
    ("validate and launchers", ("llf_recipes.validation", "llf_recipes.launchers")),
    ("plan", ("llf_recipes.launch",)),
    ("engines' planning", ("llf_recipes.engines.stages", "llf_recipes.engines.grpo_plan", "llf_recipes.engines.grpo_stage",
                           "llf_recipes.engines.trl", "llf_recipes.engines.easyr1", "llf_recipes.engines.llf")),
    ("pipeline and verbs' work", ("llf_recipes.pipeline", "llf_recipes.dry_run", "llf_recipes.preflight", "llf_recipes.summary",
                                  "llf_recipes.eval", "llf_recipes.generate", "llf_recipes.judge", "llf_recipes.use", "llf_recipes.chat_loop", "llf_recipes.serve_app",
                                  "llf_recipes.merge", "llf_recipes.report", "llf_recipes.smoke")),
    ("cli", ("llf_recipes.cli", "llf_recipes.__main__")),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the llf_recipes modules it imports anywhere in its body (and the packages those imports run)."""

    def known(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        found = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names if a.name.split(".")[0] == "llf_recipes"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "llf_recipes":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in mods else known(node.module))
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; the package imports by absolute name")
        for target in list(found):
            parent = target.rpartition(".")[0]
            while parent and parent != "llf_recipes":
                if name != parent and not name.startswith(parent + "."):
                    found.add(parent)
                parent = parent.rpartition(".")[0]
        found.discard(name)
        graph[name] = found
    return graph


def _runtime_nodes(tree: ast.AST):
    """Every node that can run: all of them but the bodies of `if TYPE_CHECKING:` (annotations only, never imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def layer_of(module: str) -> int:
    best, rank = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "llf_recipes" and module.startswith(prefix + "."))
            if inside and len(prefix) > len(best):
                best, rank = prefix, i
    assert rank is not None, f"{module} is in no layer of tests/test_layers.py: add it where ARCHITECTURE.md puts it"
    return rank


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_lazy_imports():
    graph = imports(modules())
    # Imports inside functions count: eval.runner loads eval.session only when it scores a run.
    assert "llf_recipes.eval.session" in graph["llf_recipes.eval.runner"]
    assert "llf_recipes.launchers" in graph["llf_recipes.launch"]  # via launchers.command: the package runs too


def test_type_checking_imports_are_not_runtime_imports():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import llf_recipes.cli\n"
                     "def f():\n    import llf_recipes.pipeline\n")
    names = {a.name for n in _runtime_nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    assert names == {"llf_recipes.pipeline"}


def test_the_cycle_finder_finds_a_lazy_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_loops():
    loops = cycles(imports(modules()))
    assert not loops, "import loops (each list imports itself round): " + "; ".join(" <-> ".join(c) for c in loops)


def test_no_lower_layer_imports_a_higher_one():
    graph = imports(modules())
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not wrong, "\n".join(wrong)


def test_eval_runner_and_session_do_not_import_each_other():
    graph = imports(modules())
    assert "llf_recipes.eval.runner" not in graph["llf_recipes.eval.session"]
