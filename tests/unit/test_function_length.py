"""No function outside tests is over 80 lines (issue 25): a long function is several ideas that
want names. Reads the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.source import parse

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 80
NOT_YET: set[tuple[str, str]] = set()  # (file, function) allowed to be long for now: none


def long_functions(files, root: Path = ROOT) -> list[tuple[str, str, int]]:
    """(file, qualified name, lines) of every function or method over ``LIMIT`` lines."""
    found = []
    for path in files:
        tree = parse(path.read_text(encoding="utf-8"), filename=str(path))

        def visit(node, prefix=""):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    lines = child.end_lineno - child.lineno + 1
                    if not isinstance(child, ast.ClassDef) and lines > LIMIT:
                        found.append((path.relative_to(root).as_posix(), name, lines))
                    visit(child, name + ".")
                else:
                    visit(child, prefix)

        visit(tree)
    return found


def source_files() -> list[Path]:
    files = [ROOT / "app.py", *sorted((ROOT / "sports_classifier").rglob("*.py")),
             *sorted((ROOT / "scripts").glob("*.py"))]
    return [f for f in files if f.is_file()]


def test_no_function_outside_tests_is_over_80_lines():
    over = [(f, name, n) for f, name, n in long_functions(source_files()) if (f, name) not in NOT_YET]
    assert not over, "split these into named steps: " + ", ".join(f"{f}:{name} ({n} lines)" for f, name, n in over)


def test_the_check_sees_nested_functions_and_methods(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    planted = tmp_path / "planted.py"
    planted.write_text(f"class A:\n    def method(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n\n"
                       f"def outer():\n    def inner():\n    {body.replace(chr(10), chr(10) + '    ')}\n    return inner\n")
    assert {name for _, name, _ in long_functions([planted], tmp_path)} == {"A.method", "outer", "outer.inner"}
