"""The package's import rules (README's module map): the pipeline reads in one direction.

toolkit (``errors``, ``_sparse``, ``_lapack``, ``_cached``, ``_threads``, ``cones/``) ← the stages (``_compile/``, ``_solve/``,
``_derivative/``, which never import each other) and ``_labels/`` ← ``_solution`` ←
``_forward`` ← ``_program`` ← ``sensitivity/``, ``__init__`` and the adapters (``torch``,
``jax``), which alone import their frameworks. No cycles, and no import of dpplayers inside
a function (where one would hide a cycle); imports under ``if TYPE_CHECKING:`` (annotations
only, never run) are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dpplayers"

TOOLKIT = ("errors", "_sparse", "_lapack", "_cached", "_threads", "cones")
STAGES = ("_compile", "_solve", "_derivative")
#: Each top-level part of the package, and the parts it may import.
ALLOWED: dict[str, tuple[str, ...]] = {
    **{part: TOOLKIT for part in TOOLKIT},
    **{stage: (*TOOLKIT, stage) for stage in STAGES},
    "_solution": (*TOOLKIT, *STAGES, "_labels"),
    "_forward": (*TOOLKIT, *STAGES, "_solution"),
    "_version": (),
    "_cache": (*TOOLKIT, "_version"),
    "_distributed": (*TOOLKIT, *STAGES, "_solution", "_forward"),
    "_program": (*TOOLKIT, *STAGES, "_solution", "_forward", "_cache", "_distributed"),
    "_labels": (*TOOLKIT, "_labels"),
    "_recent": ("_solution",),
    "sensitivity": (*TOOLKIT, *STAGES, "_labels", "_solution", "_program", "sensitivity"),
    "__init__": (*TOOLKIT, *STAGES, "_solution", "_program", "sensitivity", "_version"),
    "torch": (*TOOLKIT, *STAGES, "_solution", "_program", "_recent"),
    "jax": (*TOOLKIT, *STAGES, "_solution", "_program", "_recent"),
}
FRAMEWORKS = {"torch": "torch", "jax": "jax"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def part_of(module: str) -> str:
    """The top-level part of dpplayers a module belongs to (``__init__`` for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, inside a function) for every import in a file; relative imports
    resolved, ``from package import module`` read as the module."""
    here = module_name(path).split(".")
    package = here if is_package(path) else here[:-1]
    tree = ast.parse(path.read_text())
    in_functions = {id(node) for fn in ast.walk(tree)
                    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for node in ast.walk(fn)}
    typing_only = {id(node) for block in ast.walk(tree)  # ``if TYPE_CHECKING:``: never run
                   if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        inside = id(node) in in_functions
        if isinstance(node, ast.Import):
            found += [(alias.name, inside) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = (PACKAGE.parent / f"{base}.{alias.name}".replace(".", "/"))
                is_module = candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists()
                found.append((f"{base}.{alias.name}" if is_module else base, inside))
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_layer_allows(path):
    module = module_name(path)
    part = part_of(module)
    assert part in ALLOWED, f"{module}: a new top-level part; give it a row in ALLOWED"
    for name, in_function in imports(path):
        if name.split(".")[0] == "dpplayers":
            assert not in_function, f"{module} imports {name} inside a function"
            target = part_of(name)
            assert target == part or target in ALLOWED[part], (
                f"{module} ({part}) imports {name} ({target}); allowed: {ALLOWED[part]}")
        top = name.split(".")[0]
        if top in FRAMEWORKS:
            assert part == FRAMEWORKS[top], f"{module} imports {top}: only the adapter may"


def test_the_module_graph_has_no_cycle():
    graph = {module_name(p): {name for name, _ in imports(p) if name.startswith("dpplayers.")}
             for p in FILES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            # importing a submodule runs its package's __init__ first; that edge is implied
            assert state.get(nxt) != 1 or nxt in path[:1], " → ".join([*path, nxt])
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node, [node])


def test_the_public_api_is_re_exported_explicitly():
    import dpplayers

    for name in dpplayers.__all__:
        value = getattr(dpplayers, name)
        assert getattr(value, "__module__", getattr(value, "__name__", "")).startswith(
            "dpplayers"), name
    assert not [name for name in dir(dpplayers) if not name.startswith("_")
                and name not in dpplayers.__all__
                and name not in ("torch", "jax", "errors", "cones")], (
        "public names outside __all__")
