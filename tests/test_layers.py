"""The package layout is the architecture (docs/design.md): a module imports only from its own
layer or the layers below it, so loading a model never pulls in the engine or the CLI; the
command line is a thin layer over the Python API; and no two modules import each other, however
indirectly."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "wn_onnx"

# lower number = lower layer; engine and results are side by side and must not import each other
LAYERS = {
    "errors": 0, "plugins": 0, "noise": 0, "metrics": 0,
    "io": 1,
    "graph_passes": 2,
    "engine": 3, "results": 3,
    "scan_config": 4, "curve": 5, "executors": 6, "scanner": 7, "planner": 7, "gate": 7, "analysis": 7,
    "api": 8, "training": 8,
    "cli": 9, "__main__": 9,
}  # fmt: skip


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _runtime(tree: ast.AST) -> list[ast.AST]:
    """The nodes of ``tree`` outside ``if TYPE_CHECKING:`` blocks (imports for type hints only)."""
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for stmt in block.body for n in ast.walk(stmt)}  # fmt: skip
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in _runtime(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wn_onnx."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "wn_onnx":
            found.update(f"wn_onnx.{a.name}" for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("wn_onnx."))
    return found


def test_every_module_belongs_to_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", "."))}
    tops.discard("py")
    assert tops - LAYERS.keys() == set(), "a new top-level module needs a layer in LAYERS"


def test_no_import_reaches_up_or_across():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        me = _layer(".".join(rel.parts))
        if me == "__init__":
            continue
        for mod in _imports(path):
            other = _layer(mod)
            if other == me or other == "__init__":
                continue
            if LAYERS[other] > LAYERS[me] or {me, other} == {"engine", "results"}:
                wrong.append(f"{rel} imports {mod}")
    assert wrong == []


# What the command line may import: the API, the errors, its own modules, and what renders
# results (the report model, names, figures) or writes files safely.
CLI_MAY_IMPORT = ("wn_onnx.api", "wn_onnx.errors", "wn_onnx.cli", "wn_onnx.results.report", "wn_onnx.results.names",
                  "wn_onnx.results.figures", "wn_onnx.io.safeio", "wn_onnx.io.config")  # fmt: skip
THIN = tuple(p.stem for p in (PACKAGE / "cli").glob("*.py"))  # every command  # the commands built on the API


def test_the_cli_is_a_thin_layer_over_the_api():
    wrong = []
    for name in THIN:
        for mod in _imports(PACKAGE / "cli" / f"{name}.py"):
            if not any(mod == allowed or mod.startswith(allowed + ".") for allowed in CLI_MAY_IMPORT):
                wrong.append(f"cli/{name}.py imports {mod}")
    assert wrong == []


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """Module → the wn_onnx modules it imports (at the top or inside functions; a package's name
    stands for its __init__)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for mod in _imports(path):
            while mod not in modules and "." in mod:  # from wn_onnx.x import name: the module x
                mod = mod.rsplit(".", 1)[0]
            if mod in modules and mod != name:
                found.add(mod)
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (empty when there is none); a package importing its own
    submodules (its public face) does not count."""
    sys.setrecursionlimit(10_000)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package's __init__ re-exporting its own modules
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycle_across_or_within_layers():
    assert _cycle(_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_command_line_starts_without_the_heavy_libraries():
    """``wn-onnx --help`` and option parsing load neither onnx, onnxruntime, onnx_ir, scipy nor
    torch: each command loads what it runs (the API's names load on first use)."""
    import subprocess

    code = ("import sys, wn_onnx.cli.app; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnx_ir', 'scipy', 'torch') if m in sys.modules))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
