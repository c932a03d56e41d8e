"""Imports follow the stages of docs/layout.md: read statically (ast) from every module of jitvoc/
and models/, each arrow must point down the stage order (so the oracle, jitvoc/reference/, a
stage above run, is imported by no production module, only by the tools), and nothing imports
in a circle. A synthetic wrong graph proves the checker fails."""
import os
import subprocess
import sys
from pathlib import Path

from jitvoc.sources import imported_names, names_of

ROOT = Path(__file__).resolve().parent.parent

# Stages, lowest first; a module may import its own stage and those below it. The first prefix
# that matches a module names its stage. The oracle sits above every production stage: it may
# use production types, and only the tools (and tests) may run it.
STAGES = [
    ("base", ["jitvoc", "jitvoc.config", "jitvoc.isa", "jitvoc.errors", "jitvoc.spec",
              "jitvoc.atomic", "jitvoc.optional", "jitvoc.progress", "jitvoc.blas",
              "jitvoc.npy", "jitvoc.contracts", "jitvoc.wavernn", "jitvoc.sources",
              "jitvoc.sparsepickle"]),
    ("data", ["jitvoc.quant", "jitvoc.layout", "jitvoc.mel", "jitvoc.representation",
              "jitvoc.model", "jitvoc.pretrained", "jitvoc.audio", "jitvoc.cells"]),
    ("plan", ["jitvoc.plan"]),
    ("emit", ["jitvoc.emit"]),
    ("jit", ["jitvoc.jit", "jitvoc.cache", "jitvoc.cpu"]),
    ("run", ["jitvoc.native", "jitvoc.matvec", "jitvoc.decisions", "jitvoc.engine",
             "jitvoc.engine_jit", "jitvoc.vocoder", "jitvoc.recurrence", "jitvoc.layers",
             "jitvoc.corpus", "jitvoc.cellrun"]),
    ("oracle", ["jitvoc.reference"]),
    ("tools", ["jitvoc.cli", "jitvoc.bench", "jitvoc.options", "jitvoc.__main__",
               "jitvoc.calibration", "models"]),
]
LEVEL = {name: level for level, (name, _) in enumerate(STAGES)}

# Third-party modules only one stage may import.
OWNED = {"llvmlite.binding": "jitvoc.jit", "cffi": "jitvoc.native",
         "_cffi_backend": "jitvoc.native"}


def stage(module: str) -> str:
    for name, prefixes in reversed(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "jitvoc"):
            return name
    if module == "jitvoc":
        return "base"
    raise AssertionError(f"{module} has no stage in tests/test_imports.py")


def source_modules() -> dict[str, Path]:
    """Module name -> source file, for every module of jitvoc/ and models/."""
    out = {}
    for top in ("jitvoc", "models"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the jitvoc/models modules it imports, module -> every name it imports)."""
    modules = source_modules()
    graph, names = {}, {}
    for module, path in modules.items():
        names[module] = imported_names(module, path)
        graph[module] = {n for n in names[module] if n in modules and n != module}
    return graph, names


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Arrows against the stages (the oracle's included) and import cycles."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            here, there = stage(module), stage(target)
            if LEVEL[there] > LEVEL[here]:
                found.append(f"{module} ({here}) imports {target} ({there}), a later stage")
    found += [f"import cycle among {', '.join(group)}" for group in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (strongly connected
    components of more than one module, Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_every_module_has_a_stage():
    for module in source_modules():
        stage(module)


def test_imports_follow_the_stages():
    graph, _ = import_graph()
    assert violations(graph) == []


def test_the_checker_fails_on_wrong_arrows():
    wrong = {"jitvoc.plan.matvec": {"jitvoc.jit", "jitvoc.layout"},
             "jitvoc.matvec": {"jitvoc.reference.matvec"},
             "models.export": {"models.train"}, "models.train": {"models.export"}}
    assert violations(wrong) == [
        "jitvoc.matvec (run) imports jitvoc.reference.matvec (oracle), a later stage",
        "jitvoc.plan.matvec (plan) imports jitvoc.jit (jit), a later stage",
        "import cycle among models.export, models.train"]


def test_only_their_owners_import_llvmlite_binding_and_cffi():
    _, names = import_graph()
    for module, imported in names.items():
        for owned, owner in OWNED.items():
            if any(n == owned or n.startswith(owned + ".") for n in imported):
                assert module == owner, f"{module} imports {owned}, which only {owner} may"


def test_importing_the_numpy_parts_loads_no_compiler():
    code = ("import sys, jitvoc.mel, jitvoc.representation, jitvoc.model\n"
            "print(sorted(m for m in ('llvmlite', 'cffi', '_cffi_backend') if m in sys.modules))\n"
            "import jitvoc, jitvoc.vocoder\n"
            "assert jitvoc.load is jitvoc.vocoder.load and jitvoc.cpu.generation('haswell')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd="/")
    assert out.stdout.split() == ["[]"]


def test_the_compiler_version_comes_from_config_without_llvm(monkeypatch):
    """config.compiler_version names the llvmlite release without loading LLVM, and the kernel
    cache keys and autotune decisions change with it."""
    code = ("import sys, jitvoc.config\n"
            "print(jitvoc.config.compiler_version(), 'llvmlite.binding' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd="/")
    import llvmlite
    assert out.stdout.split() == ["llvmlite", llvmlite.__version__, "False"]
    import numpy as np
    from jitvoc import config, cpu, decisions, jit
    gen = cpu.generation("haswell")
    w, mask = np.ones((4, 4), np.int8), np.ones((4, 4), bool)
    keys = (jit.cache_key("k", gen, "jitvoc.matvec"),
            decisions.matrix_key(w, mask, "int8", gen, True))
    monkeypatch.setattr(config, "compiler_version", lambda: "llvmlite 0.0.1")
    monkeypatch.setattr(jit, "compiler_version", config.compiler_version)
    monkeypatch.setattr(decisions, "compiler_version", config.compiler_version)
    assert jit.cache_key("k", gen, "jitvoc.matvec") != keys[0]
    assert decisions.matrix_key(w, mask, "int8", gen, True) != keys[1]


def _every_import(module: str, path: Path) -> set[str]:
    """imported_names's result from a walk over every node of the whole file's syntax tree."""
    import ast
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return names_of(ast.walk(ast.parse(path.read_bytes())), package)


def test_the_import_scan_finds_every_import_the_syntax_tree_has(tmp_path):
    """imported_names parses only the lines that start import statements (7 against 81 ms for
    a first run's import graph); on every module of the package, and on a file written to
    trip it, it finds every name a walk of the whole tree finds (prose that reads as an import
    may add one)."""
    for module, path in source_modules().items():
        assert imported_names(module, path) >= _every_import(module, path), module
    tricky = tmp_path / "tricky.py"
    tricky.write_text('"""Prose:\nimport closure (not code) and from the cache.\n"""\n'
                      "from .a import (b,  # a comment (with parentheses)\n"
                      "    c)\n"
                      "import d.e, \\\n    f as g\n"
                      "def h():\n    if True:\n        from ..i import j\n")
    expected = {"pkg.sub.a", "pkg.sub.a.b", "pkg.sub.a.c", "d.e", "f", "pkg.i", "pkg.i.j"}
    assert _every_import("pkg.sub.tricky", tricky) == expected
    assert imported_names("pkg.sub.tricky", tricky) == expected
    for one_liner in ("try: import k\nexcept ImportError: pass\n", "x = 1; import k\n"):
        tricky.write_text(one_liner)
        assert imported_names("pkg.sub.tricky", tricky) == {"k"}, one_liner


# what a run whose code is all in the cache never imports: the emitter, the cell language and
# its scheduler, the oracle (a cache miss, or calibrating a model, imports them where needed)
COMPILE_ONLY = ("jitvoc.emit", "jitvoc.cells", "jitvoc.plan.cell", "jitvoc.reference")
# what a warm single-file command does not need either: the corpus's worker processes
# (multiprocessing, with queue and socket), uuid, the .npy reader (the model comes from the
# cache) and the import scanner (the import graph too): 7 ms of CPU (bench/README.md, cli15)
NOT_FOR_ONE_FILE = ("multiprocessing", "queue", "socket", "uuid", "jitvoc.npy", "jitvoc.sources")
_MODULES_AT_EXIT = ("import atexit, sys\n"
                    "atexit.register(lambda: print(' '.join(sorted(\n"
                    "    m for m in sys.modules if m.startswith({prefixes!r})))))\n")


def _modules_of(script: str, cache: Path, *args, prefixes=COMPILE_ONLY) -> list[str]:
    """The modules named by `prefixes` that `script` (with `args`) imported in a fresh
    interpreter using kernel cache `cache`."""
    out = subprocess.run(
        [sys.executable, "-c", _MODULES_AT_EXIT.format(prefixes=prefixes) + script, *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), JITVOC_CACHE=str(cache)))
    return out.stdout.split("\n")[-2].split()


def test_a_warm_synthesis_imports_no_emitter_scheduler_or_oracle(tmp_path):
    """The shipped model's synthesis, through jitvoc.load and through `jitvoc resynth`, imports
    none of COMPILE_ONLY once its code, plan and loop are cached; the first run, which
    compiles, does. The warm command imports none of NOT_FOR_ONE_FILE either."""
    api = ("import numpy as np, jitvoc\n"
           "voc = jitvoc.load('multivoice_wavernn_16k', dtype='int8')\n"
           "voc.synthesize(np.zeros((40, voc.n_mels), np.float32) - 5)\n")
    command = ("import runpy\n"
               "sys.argv = ['jitvoc'] + sys.argv[1:]\n"
               "runpy.run_module('jitvoc', run_name='__main__')\n")
    cold = _modules_of(api, tmp_path)
    assert {"jitvoc.emit.cell", "jitvoc.plan.cell", "jitvoc.cells"} <= set(cold), cold
    assert _modules_of(api, tmp_path) == []
    assert _modules_of(command, tmp_path, "-q", "resynth", "examples/ru_0749.wav", "-o",
                       str(tmp_path / "out.wav"), prefixes=COMPILE_ONLY + NOT_FOR_ONE_FILE) == []


def test_version_models_and_cache_import_only_what_they_print(tmp_path):
    """`jitvoc --version`, `models` and `cache info` import neither numpy nor LLVM nor any
    command's module but their own."""
    command = ("import runpy, sys\n"
               "sys.argv = ['jitvoc'] + sys.argv[1:]\n"
               "try:\n"
               "    runpy.run_module('jitvoc', run_name='__main__')\n"
               "finally:\n"
               "    print(' '.join(sorted(m for m in sys.modules if m.startswith(\n"
               "        ('numpy', 'llvmlite', 'jitvoc.cli.')))))\n")
    for args, own in ((["--version"], ""), (["models"], "jitvoc.cli.models"),
                      (["cache", "info"], "jitvoc.cli.cache")):
        out = subprocess.run([sys.executable, "-c", command, *args], capture_output=True,
                             text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                           JITVOC_CACHE=str(tmp_path)))
        assert out.returncode == 0 and out.stdout.split("\n")[-2] == own, (args, out.stdout)
