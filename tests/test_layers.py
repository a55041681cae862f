"""The layers held apart: imports read from the source of every module, never run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Each package's layer, from the ground up: a module imports only its own package and
# packages of lower layers (leaves are the modules directly in `bnlab`).
LAYERS = {
    "leaves": 0,
    "conf": 0,
    "config": 1,
    "experiment": 2,
    "tracking": 2,
    "plugins": 3,
    "stack": 3,
    "job": 4,
    "sweep": 5,
    "hydra_plugins": 6,
    "report": 6,
    "claims": 7,
    "bench": 8,
    "cli": 9,
}
# Which packages may import each heavy library (`hydra_plugins` is the sweeper's front).
ALLOWED = {
    "mlflow": {"tracking", "bench"},
    "keras": {"experiment", "plugins", "bench"},
    "tensorflow": {"experiment", "plugins", "bench"},
    "jax": {"experiment", "plugins", "bench"},
    "optuna": {"sweep"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[0] not in ("bnlab", "hydra_plugins"):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every name imported anywhere in the module (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(MODULES)
            # `from package import module` depends on that module, not on the package.
            names |= submodules if len(submodules) == len(node.names) else {node.module}
    return names


def _package(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "hydra_plugins":
        return "hydra_plugins"
    if module == "bnlab.__main__":
        return "cli"
    if (
        len(parts) == 1
        or f"bnlab.{parts[1]}" not in MODULES
        or MODULES[f"bnlab.{parts[1]}"].name != "__init__.py"
    ):
        return "leaves"
    return parts[1]


def _first_party(module: str) -> list[str]:
    return [name for name in _imports(MODULES[module]) if name in MODULES and name != module]


def test_every_package_has_a_layer_and_a_one_line_purpose() -> None:
    packages = {_package(module) for module in MODULES}
    assert packages <= set(LAYERS), packages - set(LAYERS)
    for module, path in MODULES.items():
        if path.name == "__init__.py" and module.startswith("bnlab."):
            docstring = ast.get_docstring(ast.parse(path.read_text()))
            assert docstring and docstring.strip(), f"{module} has no purpose line"


def test_no_module_imports_a_higher_layer_or_a_sibling_layer() -> None:
    wrong = []
    for module in MODULES:
        own = _package(module)
        for imported in _first_party(module):
            other = _package(imported)
            if other != own and (
                LAYERS[other] > LAYERS[own] or (LAYERS[other] == LAYERS[own] and other != "leaves")
            ):
                wrong.append(f"{module} ({own}) imports {imported} ({other})")
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_cycles() -> None:
    graph = {module: _first_party(module) for module in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for imported in graph[module]:
            if state.get(imported) == 1:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_heavy_libraries_are_imported_only_by_their_layer(library: str) -> None:
    importers = {
        module
        for module, path in MODULES.items()
        if any(name == library or name.startswith(f"{library}.") for name in _imports(path))
    }
    wrong = {module for module in importers if _package(module) not in ALLOWED[library]}
    assert not wrong, f"{library} imported by {sorted(wrong)}"


def test_the_sweeper_plugins_import_nothing_heavy_at_discovery() -> None:
    # Hydra imports every plug-in module of every app in the environment at discovery.
    code = (
        "import sys\n"
        "import hydra_plugins.bnlab_grid_sweeper.grid_sweeper\n"
        "import hydra_plugins.bnlab_optuna_sweeper.optuna_sweeper\n"
        "heavy = ('optuna', 'mlflow', 'pandas', 'keras', 'tensorflow', 'matplotlib')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_architecture_page_lists_every_module_with_its_purpose() -> None:
    sys.path.insert(0, str(SRC.parent / "docs"))
    from architecture import render

    page = SRC.parent / "docs" / "architecture.md"
    assert page.read_text() == render(), (
        "docs/architecture.md is stale: python docs/architecture.py > docs/architecture.md"
    )


# Third-party APIs outside their projects' documented surface, and the one module each
# may appear in (its docstring says why it is used).
INTERNAL_APIS = {
    r"hydra\.core\.override_parser": "bnlab.config.overrides",
    r"hydra\._internal\.core_plugins": "bnlab.config.launchers",
    r"compat\.v1": "bnlab.experiment.batchnorm",
    r"mlflow\.store\.": "bnlab.tracking",
}


@pytest.mark.parametrize("pattern", sorted(INTERNAL_APIS))
def test_each_internal_third_party_api_stays_in_one_module(pattern: str) -> None:
    import re

    users = {module for module, path in MODULES.items() if re.search(pattern, path.read_text())}
    assert users == {INTERNAL_APIS[pattern]}, f"{pattern} used by {sorted(users)}"


# The general pipeline's layers: they name no experiment (the BN study's names, its
# comparison and its prose live in its config and plug-ins).
GENERAL = ("report", "tracking", "job", "sweep")
STUDY_WORDS = r"Batch ?Normalization|bn_impl|\bBN vs\b|no BN"


def test_the_general_pipeline_names_no_experiment() -> None:
    import re

    found = []
    for module, path in MODULES.items():
        if _package(module) not in GENERAL:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and re.search(STUDY_WORDS, node.value):
                found.append(f"{module}:{node.lineno}: {node.value[:60]!r}")
    assert not found, "\n".join(found)
