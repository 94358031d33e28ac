"""The package layout is the architecture (docs/design.md): a module imports only from its own
layer or the layers below it, so loading a model never pulls in the engine or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "wn_onnx"

# lower number = lower layer; engine and results are side by side and must not import each other
LAYERS = {
    "errors": 0, "plugins": 0, "noise": 0, "metrics": 0,
    "io": 1,
    "graph_passes": 2,
    "engine": 3, "results": 3,
    "scanner": 4, "cluster": 4, "planner": 4, "gate": 4, "analysis": 4, "api": 5,
    "training": 5,
    "cli": 6, "__main__": 6,
}  # fmt: skip


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
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
