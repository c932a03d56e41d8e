"""LLVM's side of jitvoc: the only module that imports ``llvmlite.binding``.

It turns an ``llvmlite.ir`` module into machine code for one CPU generation, keeps the object
code in an on-disk cache, and loads it into the process:

    lib = jit.load(name, build_ir, gen)   # compiles on a cache miss, else only loads
    lib.address("spmv_s8u8_16x1_avx512vnni")

The cache key is the kernel name, the generation's LLVM CPU and features, the LLVM version and a
fingerprint of the emitter's sources, so a second load of the same model compiles nothing.
Cache folder: ``$JITVOC_CACHE`` or ``~/.cache/jitvoc``.

``JITVOC_DEBUG``: 2 prints compile timings, 3 the IR, 4 the optimised IR, 5 the assembly.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from .atomic import atomic_file
from .errors import JitvocError

_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _initialised() -> bool:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return True


def debug_level() -> int:
    try:
        return int(os.environ.get("JITVOC_DEBUG", "0"))
    except ValueError:
        return 0


def debug(level: int, *message) -> None:
    if debug_level() >= level:
        print("[jitvoc]", *message, file=sys.stderr)


def host_cpu_name() -> str:
    _initialised()
    return llvm.get_host_cpu_name()


@functools.lru_cache(maxsize=None)
def host_feature_map() -> dict[str, bool]:
    _initialised()
    return dict(llvm.get_host_cpu_features())


def llvm_version() -> tuple:
    return tuple(llvm.llvm_version_info)


def triple() -> str:
    return llvm.get_process_triple()


def _target_machine(gen):
    _initialised()
    target = llvm.Target.from_triple(triple())
    return target.create_target_machine(cpu=gen.llvm_cpu, features=gen.llvm_features, opt=3,
                                        reloc="pic", codemodel="jitdefault")


def _emitter_fingerprint() -> str:
    """A hash of the sources that shape generated code, so editing them invalidates the cache.
    Taken once, when jitvoc is imported (with the code that will run)."""
    h = hashlib.sha256(llvmlite.__version__.encode())
    root = Path(__file__).parent
    from . import templates
    for path in sorted(root.glob("emit/*.py")) + templates.files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


EMITTER_FINGERPRINT = _emitter_fingerprint()


def cache_dir() -> Path:
    return Path(os.environ.get("JITVOC_CACHE") or Path.home() / ".cache" / "jitvoc")


def _cache_path(name: str, gen) -> Path:
    key = "\0".join([name, gen.llvm_cpu, gen.llvm_features, ".".join(map(str, llvm_version())),
                     EMITTER_FINGERPRINT])
    return cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.o"


def optimise(ir_module, gen):
    """Parse, verify and optimise (-O3) an llvmlite.ir module (or its text); returns
    (module_ref, tm)."""
    _initialised()
    text = str(ir_module)
    debug(3, f"IR:\n{text}")
    mod = llvm.parse_assembly(text)
    mod.triple = triple()
    mod.verify()
    tm = _target_machine(gen)
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    debug(4, f"optimised IR:\n{mod}")
    return mod, tm


def assembly(ir_module, gen) -> str:
    mod, tm = optimise(ir_module, gen)
    return tm.emit_assembly(mod)


def compile_object(ir_module, gen) -> bytes:
    t0 = time.perf_counter()
    mod, tm = optimise(ir_module, gen)
    if debug_level() >= 5:
        debug(5, f"assembly:\n{tm.emit_assembly(mod)}")
    obj = tm.emit_object(mod)
    debug(2, f"compiled {ir_module.name} for {gen.name} in {1e3 * (time.perf_counter() - t0):.1f} ms")
    return obj


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic collector off while llvmlite builds a module: it makes hundreds of
    thousands of small objects, and the collector kept walking them (10-25% of a cold build)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Library:
    """Machine code loaded into this process; keeps its execution engine alive. `obj` may be a
    list of objects: they must not call each other's symbols (RuntimeDyld resolved the large
    code model's GOT64 calls across objects wrongly in 2 runs of 3: pass addresses instead)."""

    def __init__(self, obj: bytes | list, gen):
        _initialised()
        objs = obj if isinstance(obj, list) else [obj]
        empty = llvm.parse_assembly("")
        empty.triple = triple()
        self._engine = llvm.create_mcjit_compiler(empty, _target_machine(gen))
        for o in objs:
            self._engine.add_object_file(llvm.ObjectFileRef.from_data(o))
        self._engine.finalize_object()
        self.object_size = sum(map(len, objs))

    def address(self, symbol: str) -> int:
        addr = self._engine.get_function_address(symbol)
        if not addr:
            raise KeyError(f"symbol {symbol!r} not found in compiled object")
        return addr


def load(name: str, build_ir, gen, cache: bool = True) -> Library:
    """Machine code for `name` on generation `gen`: from the disk cache, else `build_ir()` compiled.

    `build_ir` is called only on a cache miss. The returned Library may be used for any
    generation the host can run; checking that is the caller's job (cpu.require_runnable).
    """
    path = _cache_path(name, gen)
    with _lock:
        if cache and path.exists():
            debug(2, f"cache hit {path.name}")
            return Library(path.read_bytes(), gen)
        with _collector_paused():
            obj = compile_object(build_ir(), gen)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(obj)
            os.replace(tmp, path)
        return Library(obj, gen)


# --- several modules compiled in parallel ----------------------------------------------------------
COMPILE_WORKERS = 2   # this project's machines have 2 cores


def load_parts(parts, gen, announce=None) -> Library:
    """One Library holding several modules (a loop and its kernels, see Library). `parts`:
    [(name, build_ir)], each cached as `load` caches one module, the biggest first. The missing
    ones are built (IR, in this process) and each handed at once to COMPILE_WORKERS forked
    processes: llvmlite serialises every LLVM call of a process behind one lock, so threads
    compiled one after another. `announce(names)` is called first when anything is to be
    compiled."""
    paths = [_cache_path(name, gen) for name, _ in parts]
    missing = [i for i, path in enumerate(paths) if not path.exists()]
    if missing and announce is not None:
        announce([parts[i][0] for i in missing])
    objs = {}
    if missing:
        _initialised()
        fork = multiprocessing.get_context("fork")
        with _collector_paused(), ProcessPoolExecutor(COMPILE_WORKERS, mp_context=fork) as pool:
            futures = {i: pool.submit(_compile_text, parts[i][0], str(parts[i][1]()), gen)
                       for i in missing}
            objs = {i: f.result() for i, f in futures.items()}
    for i, obj in objs.items():
        paths[i].parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(paths[i], JitvocError) as f:
            f.write(obj)
    return Library([objs[i] if i in objs else paths[i].read_bytes() for i in range(len(parts))],
                   gen)


def _compile_text(name: str, text: str, gen) -> bytes:
    """compile_object for IR text (what crosses to a worker process)."""
    t0 = time.perf_counter()
    mod, tm = optimise(text, gen)
    obj = tm.emit_object(mod)
    debug(2, f"compiled {name} for {gen.name} in {1e3 * (time.perf_counter() - t0):.1f} ms "
             f"(pid {os.getpid()})")
    return obj
