"""The package's import graph points down its layers and has no cycle (docs/architecture.md).

Read from the source with `ast`, lazy imports inside functions included (they run too); imports under
`if TYPE_CHECKING:` are left out (they never run).
"""

import ast
from pathlib import Path

from support.reference import REPO_ROOT

PACKAGE = REPO_ROOT / "trt_metric3d"

# Bottom to top. A module may import from its own layer and the ones below, never from above.
LAYERS = [
    ["errors", "logs", "choices", "lazy"],
    ["io", "output_files", "workspace"],
    ["model", "settings"],
    ["processing", "focal", "visualize", "pointcloud"],
    ["checkpoint"],
    ["export"],
    ["engine"],
    ["runtime"],
    ["annotator", "results", "video", "benchmark"],
    ["ray", "raycluster", "serving"],
    ["comfyui"],
    ["cli"],
]
LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """The trt_metric3d modules `path` imports when it runs (names resolved to absolute modules)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if is_type_checking_block(node):
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("trt_metric3d"):
                found.add(target)
                # `from . import x` / `from .export import stages` may name submodules
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("trt_metric3d"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path) & paths.keys() for name, path in paths.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None  # the package root is above every layer


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if m != "trt_metric3d" and layer(m) is None]
    assert not unplaced, f"add these to LAYERS (and docs/architecture.md): {unplaced}"


def test_no_module_imports_from_a_layer_above_it():
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer(module) is not None and layer(target) is not None and layer(target) > layer(module)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_import_graph_has_no_cycle():
    graph = import_graph()
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    edges = {m: {t for t in ts if not m.startswith(t + ".") and t != m} for m, ts in graph.items()}
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def walk(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target) :] + [target])
            elif target not in state:
                walk(target, [*trail, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_reader_sees_lazy_relative_and_submodule_imports(tmp_path):
    """So that the checks above can fail: what a module imports inside a function, by relative name,
    and as `from . import submodule`, is found; what it imports only for type checking is not."""
    module = tmp_path / "trt_metric3d" / "engine" / "example.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import cache\n"
        "if TYPE_CHECKING:\n"
        "    from ..serving import server\n"
        "def load():\n"
        "    from ..runtime.tensorrt_backend import TensorRTBackend\n"
    )
    found = imported_modules(module, tmp_path)
    assert {"trt_metric3d.engine.cache", "trt_metric3d.runtime.tensorrt_backend"} <= found
    assert not any(m.startswith("trt_metric3d.serving") for m in found)
    assert layer("trt_metric3d.runtime.tensorrt_backend") > layer("trt_metric3d.engine.example")
