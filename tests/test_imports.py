"""The package's import graph, read from its source with ast: no two modules import each other, directly or
through others (lazy imports inside functions included), and tasks.py holds task functions only. And, from every
module imported: no two classes of darts_lite share a name."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import darts_lite

PACKAGE = Path(darts_lite.__file__).resolve().parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: darts_lite modules it imports}, a package's __init__ counted as the package itself."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from pkg import sub` imports the submodule sub; `from mod import name` imports mod
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for target in targets:
                while target and target not in files:  # `import darts_lite.run.folder as x` and the like
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None. Entering a package runs its __init__, so an edge into a
    package's submodule from the package's own __init__ does not count as a way back."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # a package's __init__ re-exporting its own submodules is no circle: the submodules never import it back
    # through the package (they import siblings directly), which the remaining edges still check
    packages = {name for name in graph if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()}
    return {name: {t for t in targets if not (name in packages and t.startswith(name + "."))}
            for name, targets in graph.items()}


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert "darts_lite.run.folder" in graph and "darts_lite.config" in graph["darts_lite.tasks"]
    cycle = find_cycle(_without_package_inits(graph))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n    return g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("from . import b\n")  # b -> c -> b
    assert find_cycle(import_graph(pkg)) == ["pkg.b", "pkg.c", "pkg.b"]


def test_tasks_module_holds_task_functions_only():
    tree = ast.parse((PACKAGE / "tasks.py").read_text())
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert defined and all(name.startswith("run_") for name in defined), defined
    assigned = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))]
    assert not assigned, "tasks.py keeps no tables or settings: they belong with the code that reads them"


# A space is a package with one interface (darts_lite.spaces reads these names from it), so each space defines its
# own classes of these names on purpose.
SPACE_INTERFACE = ("SearchNetwork", "EvalNetwork", "Genotype", "MixedEdge", "SearchCell", "EvalCell")
SPACE_MODULES = ("darts_lite.spaces.",)


def _classes_within(cls: type) -> list[type]:
    nested = [v for v in vars(cls).values() if inspect.isclass(v) and v.__qualname__.startswith(cls.__qualname__ + ".")]
    return [cls, *(c for n in nested for c in _classes_within(n))]


def package_classes() -> dict[str, set[str]]:
    """{class name: the qualified names of the darts_lite classes so named}, from every module of the package."""
    def refuse(name: str) -> None:
        raise ImportError(f"{name} cannot be imported")  # walk_packages would otherwise skip the package unseen

    defined: dict[str, set[str]] = {}
    for info in pkgutil.walk_packages(darts_lite.__path__, "darts_lite.", onerror=refuse):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__.startswith("darts_lite"):
                for cls in _classes_within(value):
                    defined.setdefault(cls.__name__, set()).add(f"{cls.__module__}.{cls.__qualname__}")
    return defined


def test_no_two_classes_of_darts_lite_share_a_name():
    defined = package_classes()
    assert "darts_lite.econas.archive.Archive" in defined["Archive"]  # the walk reached subpackages
    shared = {name: sorted(where) for name, where in defined.items() if len(where) > 1}
    for name in SPACE_INTERFACE:
        outside = [w for w in shared.get(name, ()) if not w.startswith(SPACE_MODULES)]
        assert not outside, f"{name} is a space's interface name; {outside} is no space module"
    clashes = {name: where for name, where in shared.items() if name not in SPACE_INTERFACE}
    assert not clashes, f"classes of one name (rename them to say what each is): {clashes}"
