"""What a jitvoc source file imports, read statically: the kernel cache's code fingerprint
(jit.code_closure) and the stage check (tests/test_imports.py) both walk imports with it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

# a line that starts an import statement; an import after ':' or ';' (which the scan does not
# delimit: the whole file is parsed then)
_IMPORT = rb"(?:from[ \t]+\.*[\w.]*[ \t]+import\b|import[ \t]+[\w.])"
_START = re.compile(rb"[ \t]*" + _IMPORT)
_INLINE = re.compile(rb"[:;][ \t]*" + _IMPORT)
_MAX_LINES = 100   # of one import statement


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name an import statement of `path` (the source of `module`) names, anywhere
    in it, relative imports resolved; `from a import b` yields a.b as well as a (the caller
    keeps the names that are modules). Lines of prose that read as an import (in a docstring)
    may add names, never remove one."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    source = path.read_bytes()
    statements = _import_statements(source)
    if statements is None:
        statements = _statements(ast.parse(source, str(path)).body)
    return names_of(statements, package)


def names_of(statements, package: str) -> set[str]:
    """The module names the import statements among `statements` name, relative ones resolved
    against `package`."""
    names = set()
    for node in statements:
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


def _import_statements(source: bytes) -> list | None:
    """The import statements of `source`, each parsed from the lines it spans, found by their
    first line (_START); None where that cannot be trusted to find every one (an import after
    ':' or ';', a statement that does not parse on its own). For the import graph of a first run
    (the engine's 36 modules) 7 ms of CPU against 81 ms parsing the whole files."""
    lines = source.split(b"\n")
    found = []
    for i, line in enumerate(lines):
        if _INLINE.search(line):
            return None
        if _START.match(line):
            try:
                found += ast.parse(_statement(lines, i).strip()).body
            except SyntaxError:
                return None
    return found


def _statement(lines: list, first: int) -> bytes:
    """The lines of the statement that starts at lines[first]: to its closing parenthesis,
    over backslash continuations."""
    depth, last = 0, first
    for last in range(first, min(first + _MAX_LINES, len(lines))):
        depth += lines[last].count(b"(") - lines[last].count(b")")
        if depth <= 0 and not lines[last].rstrip().endswith(b"\\"):
            break
    return b"\n".join(lines[first:last + 1])


def _statements(body: list):
    """Every statement of `body`, nested ones included (imports are statements: expressions
    need no visit; ast.walk over every node took 10x as long)."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            nested = getattr(node, field, None)
            if isinstance(nested, list):
                yield from _statements(nested)
