#!/usr/bin/env python3
"""Structure checks run by `make lint`: no two folders of the package import each other, and no
function is longer than the limit. Prints every offence with its files and exits 1 on any."""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "sevenp_pipeline"
MAX_FUNCTION_LINES = 120


def unit_of(module: str) -> str:
    """The folder a module belongs to (``config`` for ``sevenp_pipeline.config.loader``); a
    top-level module of the package is its own unit (``files``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """Every package module ``path`` imports (absolute or relative), with the line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            # ``from sevenp_pipeline import config`` imports the folder itself.
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def folder_cycles(root: Path) -> list[str]:
    folders = {p.name for p in (root / PACKAGE).iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted((root / PACKAGE).rglob("*.py")):
        module = module_name(path, root)
        source = unit_of(module)
        for target, line in imports_of(path, module):
            if target == PACKAGE:
                continue
            dest = unit_of(target)
            if dest != source and dest in folders and source in folders:
                edges[(source, dest)].append(f"{path.relative_to(root)}:{line} imports {target}")
    problems = []
    for (a, b), where in sorted(edges.items()):
        if a < b and (b, a) in edges:
            problems.append(f"folders {a}/ and {b}/ import each other:\n    "
                            + "\n    ".join(where + edges[(b, a)]))
    return problems


def long_functions(root: Path, limit: int) -> list[str]:
    problems = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - first + 1
                if length > limit:
                    problems.append(f"{path.relative_to(root)}:{node.lineno} {node.name} is {length} lines "
                                    f"(limit {limit})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--max-function-lines", type=int, default=MAX_FUNCTION_LINES)
    args = parser.parse_args()
    problems = folder_cycles(args.root) + long_functions(args.root, args.max_function_lines)
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_structure: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check_structure: no folders import each other; no function over "
          f"{args.max_function_lines} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
