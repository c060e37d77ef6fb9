"""Print the package's import graph by layer, or check it against the layer contracts.

    python scripts/import_graph.py            # the layers and every import between two of them
    python scripts/import_graph.py --check    # run the import-linter contracts (exit status 1 if broken)

The layers are read from pyproject.toml's ``[tool.importlinter]`` "layers" contract, the one
source of truth that docs/architecture.md draws; the graph comes from grimp (import-linter's
graph library), which also sees imports inside functions: those are marked ``(lazy)``. Needs the
dev extra (import-linter).
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sports_classifier"


def read_layers(pyproject: Path = ROOT / "pyproject.toml") -> tuple[list[list[str]], set[tuple[str, str]]]:
    """The layers, top first, each a list of module names; and the ignored (importer, imported) pairs."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c.get("id") == "layers")
    layers = [[m.strip() for m in layer.replace("|", ":").split(":")] for layer in contract["layers"]]
    ignored = {tuple(s.strip() for s in rule.split("->")) for rule in contract.get("ignore_imports", [])}
    return layers, ignored


def layer_index(module: str, layers: list[list[str]]) -> int | None:
    relative = module.removeprefix(PACKAGE + ".")
    for i, names in enumerate(layers):
        if any(relative == n or relative.startswith(n + ".") for n in names):
            return i
    return None


def function_lines(module: str) -> set[int]:
    """Line numbers inside function bodies of ``module``'s source."""
    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.update(range(node.body[0].lineno, node.end_lineno + 1))
    return lines


def cross_layer_imports(layers):
    """(importer layer, imported layer) -> sorted [(importer, imported, lazy)] for imports between layers."""
    import grimp

    graph = grimp.build_graph(PACKAGE)
    edges = defaultdict(list)
    for importer in sorted(graph.modules):
        a = layer_index(importer, layers)
        inside = None
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            b = layer_index(imported, layers)
            if a is None or b is None or a == b:
                continue
            inside = function_lines(importer) if inside is None else inside
            details = graph.get_import_details(importer=importer, imported=imported)
            lazy = all(d["line_number"] in inside for d in details)
            edges[(a, b)].append((importer, imported, lazy))
    return edges


def show(layers, ignored) -> int:
    """Print the graph; returns how many upward imports the contract does not allow."""
    short = lambda m: m.removeprefix(PACKAGE + ".")  # noqa: E731
    print("Layers, top to bottom (pyproject.toml [tool.importlinter], contract 'layers'):")
    for i, names in enumerate(layers):
        print(f"  {i}  {' '.join(names)}")
    upward = 0
    print("\nImports between layers (importer -> imported; lazy: inside a function):")
    for (a, b), found in sorted(cross_layer_imports(layers).items()):
        direction = "down" if a < b else "UP"
        print(f"  layer {a} -> layer {b} ({direction}):")
        for importer, imported, lazy in found:
            allowed = (importer, imported) in ignored
            note = " (lazy)" if lazy else ""
            if direction == "UP":
                note += "  allowed by ignore_imports" if allowed else "  NOT ALLOWED"
                upward += not allowed
            print(f"    {short(importer)} -> {short(imported)}{note}")
    return upward


def check() -> int:
    from importlinter.cli import lint_imports

    return lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run the import-linter contracts instead")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's package, not an installed one
    if args.check:
        return check()
    return 1 if show(*read_layers()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
