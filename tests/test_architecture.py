"""The package's folders are its architecture: imports go down the flow of a submission, never round.

Read from the source (every ``import`` and ``from ... import`` anywhere in a module, in functions
too, except under ``if __name__ == "__main__":``, which runs only when the module is the program):
- no import cycle between coursekit's modules;
- each subpackage imports only the layers below it (LAYERS), so the shared vocabulary never
  reaches up into the sandbox or the runner, and the students' package imports nothing else;
- the students' wheel is built from its subpackage: what it ships is exactly coursekit/student/
  (plus the public names the notebooks import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coursekit"

# Lowest first. A module may import its own subpackage and any listed before it.
LAYERS = [
    ("student",),
    ("core",),
    ("execution", "rendering"),
    ("transfer", "submissions"),
    ("grading",),
    ("term", "hosting"),
    ("",),  # top level: the public aliases of the students' package and coursekit.pipeline
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The coursekit modules ``path`` imports, anywhere but under a ``__main__`` guard."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out = set()
    for name in found:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != "coursekit" and name != here:
            out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def layer_of(module: str) -> int:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else ""
    for i, names in enumerate(LAYERS):
        if sub in names:
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS")


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = dfs(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            found = dfs(n)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle_and_an_upward_import():
    """The checks below can fail: a made-up graph with a cycle is caught, and so is an upward edge."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("coursekit.core.layout") < layer_of("coursekit.execution.sandbox")


def test_no_import_cycle_in_coursekit():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_import_goes_down_the_layers():
    upward = []
    for module, deps in graph().items():
        for dep in deps:
            if layer_of(dep) > layer_of(module) or (
                    layer_of(dep) == layer_of(module) and dep.split(".")[:2] != module.split(".")[:2]
                    and dep.split(".")[1:2] != [""]):
                upward.append(f"{module} imports {dep}")
    assert not upward, "\n".join(sorted(upward))


def test_the_vocabulary_and_the_students_package_import_nothing_above_them():
    g = graph()
    for module, deps in g.items():
        if module.startswith("coursekit.student."):
            assert all(d.startswith("coursekit.student") for d in deps), (module, deps)
        if module.startswith("coursekit.core."):
            assert all(d.startswith(("coursekit.core", "coursekit.student")) for d in deps), (module, deps)


@pytest.mark.parametrize("folder", sorted(p.name for p in PACKAGE.iterdir()
                                          if p.is_dir() and (p / "__init__.py").exists()))
def test_every_subpackage_says_what_its_files_do(folder):
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
    assert doc and len(doc) > 40, folder
