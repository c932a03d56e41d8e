"""What a jitvoc source file imports, read statically: the kernel cache's code fingerprint
(jit.code_closure) and the stage check (tests/test_imports.py) both walk imports with it."""
from __future__ import annotations

import ast
from pathlib import Path


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import statement of `path` (the source of `module`) names, anywhere
    in it, relative imports resolved; `from a import b` yields a.b as well as a (the caller
    keeps the names that are modules)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in _statements(ast.parse(path.read_bytes(), str(path)).body):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _statements(body: list):
    """Every statement of `body`, nested ones included (imports are statements: expressions
    need no visit; ast.walk over every node took 10x as long)."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            nested = getattr(node, field, None)
            if isinstance(nested, list):
                yield from _statements(nested)
