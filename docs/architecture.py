"""Writes the architecture page from the package itself, so it cannot drift.

python docs/architecture.py > docs/architecture.md     (a test checks it is current)
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

HEADER = """# Architecture

The package is laid out by layer; each layer imports only the layers below it, and a
test (`tests/test_layers.py`) holds them apart: no import cycles, MLflow only under
`tracking/`, Keras and TensorFlow only under `experiment/` and `plugins/`, Optuna only
under `sweep/`. From the ground up:

| layer | package | may import |
|---|---|---|
| 0 | leaves (`bnlab/*.py`), `conf/` | nothing of the project |
| 1 | `config/` | leaves |
| 2 | `experiment/`, `tracking/` | config |
| 3 | `plugins/`, `stack/` | experiment (plug-ins), tracking (stack) |
| 4 | `job/` | experiment, tracking |
| 5 | `sweep/` | job |
| 6 | `report/`, `hydra_plugins/` | sweep |
| 7 | `claims/` | report |
| 8 | `bench/` | everything below |
| 9 | `cli/` | everything below |

This page is generated: `python docs/architecture.py > docs/architecture.md`.

## Every module, one line each
"""


def _purpose(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(docstring.split("\n\n")[0].split()) or "(no docstring)"


def render() -> str:
    """The page's Markdown: the layer table, then a table per package."""
    lines = [HEADER]
    for top in ("bnlab", "hydra_plugins"):
        folders = sorted({path.parent for path in (SRC / top).rglob("*.py")})
        for folder in folders:
            package = ".".join(folder.relative_to(SRC).parts)
            lines += [f"\n### `{package}`\n", "| module | purpose |", "|---|---|"]
            for path in sorted(folder.glob("*.py")):
                name = package if path.stem == "__init__" else f"{package}.{path.stem}"
                purpose = _purpose(path).replace("|", "\\|")
                lines.append(f"| `{name}` | {purpose} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
