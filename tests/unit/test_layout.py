"""The tree keeps its layers: what tests and the bench share lives in testkit/, and nothing reaches
across into another test module, another scenario or another module's private names.

- a test module (conftest.py included) imports nothing from `tests`, and from `bench` only to
  test the bench itself;
- a conftest.py holds fixtures only;
- testkit/ imports neither `tests` nor `bench`;
- the bench is layered: bench/harness/ imports neither bench/load/ nor bench/scenarios/,
  bench/load/ no scenario, and a scenario no other scenario;
- no module of tests/, testkit/ or bench/ imports a private name (`_name`) of another of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("tests", "testkit", "bench")
# The tests whose subject is the bench's own code.
BENCH_TESTS = {"tests.unit.test_bench_guard", "tests.integration.test_simulator"}


def modules(folder: str) -> dict[str, Path]:
    """Dotted name → file of every Python module under `folder`."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import in the module, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                yield module, alias.name, node.lineno


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def targets(module: str, imported: str | None) -> list[str]:
    """The modules an import may load: `from a import b` loads a, and a.b if b is a module."""
    return [module] if imported is None else [module, f"{module}.{imported}"]


def offences(folder: str, forbidden) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line}: {module}" + (f" import {imported}" if imported else "")
        for name, path in modules(folder).items()
        for module, imported, line in imports(name, path)
        if any(forbidden(name, target) for target in targets(module, imported))
    ]


def test_no_test_module_imports_from_tests():
    assert offences("tests", lambda _name, target: under(target, "tests")) == []


def test_only_the_bench_tests_import_the_bench():
    forbidden = lambda name, target: under(target, "bench") and name not in BENCH_TESTS
    assert offences("tests", forbidden) == []


def test_testkit_imports_neither_tests_nor_bench():
    forbidden = lambda _name, target: under(target, "tests") or under(target, "bench")
    assert offences("testkit", forbidden) == []


def test_no_scenario_imports_another_scenario():
    scenarios = {name for name in modules("bench") if name.startswith("bench.scenarios.")}

    def forbidden(name: str, target: str) -> bool:
        return name in scenarios and target in scenarios and target != name

    assert offences("bench", forbidden) == []


def test_the_harness_and_the_load_import_nothing_above_them():
    def forbidden(name: str, target: str) -> bool:
        if under(name, "bench.harness"):
            return under(target, "bench.load") or under(target, "bench.scenarios")
        return under(name, "bench.load") and under(target, "bench.scenarios")

    assert offences("bench", forbidden) == []


def test_no_private_name_is_imported_from_another_module():
    found = []
    for folder in OURS:
        for name, path in modules(folder).items():
            for module, imported, line in imports(name, path):
                private = imported and imported.startswith("_") and not imported.startswith("__")
                if private and module.split(".")[0] in OURS and module != name:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {module} import {imported}")
    assert found == []


def test_conftest_files_hold_fixtures_only():
    found = []
    for path in sorted((ROOT / "tests").rglob("conftest.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: class {node.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not any(
                "fixture" in ast.unparse(decorator) for decorator in node.decorator_list
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: def {node.name}")
    assert found == []
