"""The layering rule, checked: data -> models -> train -> distill -> search -> studies -> report -> cli, each
importing only from below (import-linter's layers contract in pyproject.toml), and no import hidden inside a
function (those held the old import cycles together) except of optional dependencies."""
import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mimicnet"
OPTIONAL = {"psycopg2", "psycopg",  # imported only where PostgreSQL is asked for
            "submitit",              # the `slurm` extra: imported only by `mimicnet launch`
            "onnx", "onnxruntime",   # the `onnx` extra: imported only when an ONNX file is written or run
            "numpy"}              # numpy._core vs numpy.core: the module moved in numpy 2 (data.cifar)


def test_layers_contract_is_kept():
    r = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                        "lint_imports_command()"], cwd=SRC.parents[1], capture_output=True, text=True)
    assert "1 kept, 0 broken" in r.stdout, r.stdout + r.stderr


def test_no_imports_inside_functions():
    found = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [("." * node.level) + (node.module or "")]
                else:
                    continue
                if not all(n.split(".")[0] in OPTIONAL for n in names):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {fn.name}: {', '.join(names)}")
    assert not found, "imports inside functions:\n" + "\n".join(found)


def test_only_cli_imports_argparse():
    users = [p.relative_to(SRC).parts[0] for p in SRC.rglob("*.py") if "import argparse" in p.read_text()]
    assert set(users) <= {"cli"}, users
