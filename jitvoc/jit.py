"""LLVM's side of jitvoc: the only module that imports ``llvmlite.binding``.

It turns an ``llvmlite.ir`` module into machine code for one CPU generation, keeps the object
code in an on-disk cache, and loads it into the process:

    lib = jit.load(name, build_ir, gen)   # compiles on a cache miss, else only loads
    lib.address("spmv_s8u8_16x1_avx512vnni")

The cache key is the kernel name, the generation's LLVM CPU and features, the compiler version
(jitvoc.config.compiler_version: the llvmlite release, which pins its LLVM) and a
fingerprint of every jitvoc module the kernel's builder imports (derived from the import
statements, templates included), so a second load of the same model compiles nothing and an
edit to any code that reaches the IR or the packed layout recompiles. Entries verify
themselves (jitvoc.cache): a bad one is a miss, never a crash.

``JITVOC_DEBUG``: 2 prints compile timings, 3 the IR, 4 the optimised IR, 5 the assembly.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import llvmlite.binding as llvm

from . import cache, isa
from .config import compiler_version, debug, debug_level

_PACKAGE_ROOT = Path(__file__).resolve().parent
_lock = threading.Lock()
_graph_lock = threading.Lock()   # code_closure adds to the stored import graph


@functools.lru_cache(maxsize=None)
def _initialised() -> bool:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return True


def host_cpu_name() -> str:
    _initialised()
    return llvm.get_host_cpu_name()


@functools.lru_cache(maxsize=None)
def host_feature_map() -> dict[str, bool]:
    _initialised()
    return dict(llvm.get_host_cpu_features())


def llvm_version() -> tuple:
    """The LLVM llvmlite runs, for display (the cache keys use config.compiler_version)."""
    return tuple(llvm.llvm_version_info)


def triple() -> str:
    return llvm.get_process_triple()


def _target_machine(gen):
    _initialised()
    target = llvm.Target.from_triple(triple())
    return target.create_target_machine(cpu=gen.llvm_cpu, features=gen.llvm_features, opt=3,
                                        reloc="pic", codemodel="jitdefault")


def _module_path(name: str) -> Path | None:
    """The source file of jitvoc module `name` (a package: its __init__.py), or None."""
    base = _PACKAGE_ROOT.joinpath(*name.split(".")[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _imported_modules(name: str, path: Path) -> set[str]:
    """The jitvoc modules that module `name`'s source imports (anywhere in it), with the
    packages that importing them runs."""
    from .sources import imported_names   # here: a run whose import graph is cached parses none
    found = imported_names(name, path)
    modules = set()
    for module in found:
        if module.split(".")[0] != "jitvoc":
            continue
        parts = module.split(".")
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in modules if _module_path(m)}


@functools.lru_cache(maxsize=None)
def _sources() -> dict[str, tuple[Path, bytes]]:
    """module name -> (its source file, the file's sha256), for every module of the package,
    read once per process (the code it runs)."""
    sources = {}
    for path in sorted(_PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(_PACKAGE_ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if _module_path(name) == path:
            sources[name] = path, hashlib.sha256(path.read_bytes()).digest()
    return sources


@functools.lru_cache(maxsize=None)
def _import_graph() -> tuple[str, bytes, dict]:
    """(entry name, key, graph): the import graph stored for exactly these sources, module ->
    the jitvoc modules its source imports (_imported_modules), for the modules whose closures
    were asked for; {} if no entry verifies. code_closure adds what it parses and stores it:
    parsing (ast) took 60-120 ms of CPU at every start, most of a warm command's start-up
    beyond the imports; now only what is missing is parsed, once per set of sources."""
    key = b"import graph\0" + b"".join(f"{name}\0".encode() + digest
                                       for name, (_, digest) in sorted(_sources().items()))
    entry = f"imports-{hashlib.sha256(key).hexdigest()[:20]}.json"
    payload = cache.read(entry, key)
    graph = {} if payload is None else {name: tuple(modules)
                                        for name, modules in json.loads(payload).items()}
    return entry, key, graph


@functools.lru_cache(maxsize=None)
def code_closure(root: str) -> tuple[Path, ...]:
    """The source files of jitvoc module `root` and of every jitvoc module it imports,
    transitively: all the code that can shape what `root` builds."""
    with _graph_lock:
        entry, key, graph = _import_graph()
        seen, todo, parsed = set(), [root], False
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            if name not in _sources():
                raise ValueError(f"{name} is not a module of the jitvoc package")
            if name not in graph:
                graph[name] = tuple(sorted(_imported_modules(name, _sources()[name][0])))
                parsed = True
            seen.add(name)
            todo.extend(graph[name])
        if parsed:
            cache.write(entry, key, json.dumps(graph).encode())
    return tuple(sorted(_sources()[name][0] for name in seen))


@functools.lru_cache(maxsize=None)
def code_fingerprint(root: str) -> str:
    """A hash of the code that shapes objects built by module `root` (code_closure) and of the
    kernel templates, so editing any of it invalidates their cache entries."""
    h, digests = hashlib.sha256(), {path: digest for path, digest in _sources().values()}
    for path in list(code_closure(root)) + isa.template_files():
        h.update(str(path.relative_to(path.parents[1])).encode() + b"\0")
        h.update(digests.get(path) or hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def cache_key(name: str, gen, root: str) -> bytes:
    """Everything that shapes the object code for `name`: the kernel name, the generation's
    LLVM CPU and features, the compiler version and the fingerprint of `root`'s code."""
    return "\0".join([name, gen.llvm_cpu, gen.llvm_features, compiler_version(),
                      code_fingerprint(root)]).encode()


def _entry_name(name: str, key: bytes) -> str:
    return f"{name}-{hashlib.sha256(key).hexdigest()[:20]}.o"


def optimise(ir_module, gen, pipeline: bool = True):
    """Parse, verify and optimise (-O3) an llvmlite.ir module (or its text); returns
    (module_ref, tm). Without `pipeline`, the IR is not optimised (a quick start's object:
    load_parts); code generation is -O3 either way."""
    _initialised()
    text = str(ir_module)
    debug(3, f"IR:\n{text}")
    mod = llvm.parse_assembly(text)
    mod.triple = triple()
    mod.verify()
    tm = _target_machine(gen)
    if pipeline:
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
    """Machine code loaded into this process; keeps its execution engines alive. `obj` may be a
    list of objects, which must not call each other's symbols (pass addresses instead).

    Each object gets an execution engine (a RuntimeDyld) of its own. In one engine, RuntimeDyld
    (LLVM 20, llvmlite 0.50) resolves every object's R_X86_64_GOTOFF64 against the first
    `.got` section of all the objects loaded, while each object's R_X86_64_GOTPC64 gives its
    own `.got`: the large code model (the JIT's default) addresses constants (pools, tables)
    as GOT + GOTOFF, so once an earlier object had a GOT entry (the batched loop's memcpy),
    every later object read its constants 8 or more bytes off: wrong table entries, or a
    SIGSEGV on an aligned 64-byte load (tests/test_jit.py)."""

    _optimising = None   # part index -> _Optimising (load_parts(quick=True))

    def __init__(self, obj: bytes | list, gen):
        objs = obj if isinstance(obj, list) else [obj]
        self._engines = [_engine(o, gen) for o in objs]
        self.object_size = sum(map(len, objs))

    @classmethod
    def _of_engines(cls, engines: list, object_size: int, optimising=None) -> "Library":
        """A Library of engines already made (_engine), in order (load_parts); `optimising`:
        part index -> the _Optimising of a part loaded from its quick object."""
        lib = cls.__new__(cls)
        lib._engines, lib.object_size = engines, object_size
        if optimising:
            lib._optimising, lib._retired, lib._upgrading = optimising, [], threading.Lock()
        return lib

    def upgrade(self) -> bool:
        """Whether a part loaded from its quick object (load_parts(quick=True)) was replaced by
        its optimised object, read from the cache (verified as every entry is) once its worker
        stored it, by this call: its symbols' addresses changed, the old code stays loaded
        (a call running in it ends there). False at once when nothing is optimising; in a
        process forked from the one that started the worker, the quick code stays."""
        if not self._optimising:
            return False
        upgraded = False
        with self._upgrading:
            for i, job in list(self._optimising.items()):
                if job.pid == os.getpid() and not job.done():
                    continue
                del self._optimising[i]
                obj = job.stored() if job.pid == os.getpid() else None
                if obj is not None:
                    self._retired.append(self._engines[i])
                    self._engines[i] = _engine(obj, job.gen)
                    self.object_size += len(obj)
                    upgraded = True
        return upgraded

    def address(self, symbol: str) -> int:
        for engine in self._engines:
            addr = engine.get_function_address(symbol)
            if addr:
                return addr
        raise KeyError(f"symbol {symbol!r} not found in compiled object")


def _engine(obj: bytes, gen):
    """An MCJIT engine holding one object, loaded and finalized. The empty module the engine is
    created with is taken out before finalizing: MCJIT would set up code generation for it,
    0.74 of the 0.76 ms that finalizing took per object (six per vocoder engine: 4.4 ms of a
    16 ms warm build, bench/README.md, tenth round)."""
    _initialised()
    empty = llvm.parse_assembly("")
    empty.triple = triple()
    engine = llvm.create_mcjit_compiler(empty, _target_machine(gen))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.remove_module(empty)
    engine.finalize_object()
    return engine


def _builder_module(build_ir) -> str:
    module = getattr(build_ir, "__module__", None)
    if not module or module.split(".")[0] != "jitvoc":
        raise TypeError(f"build_ir must be a function defined in jitvoc, got {build_ir!r}")
    return module


def load(name: str, build_ir, gen, cache_objects: bool = True) -> Library:
    """Machine code for `name` on generation `gen`: from the disk cache, else `build_ir()` compiled.

    `build_ir` is called only on a cache miss; it must be defined in a jitvoc module, the
    closure of whose imports (code_fingerprint) is part of the cache key. A cache entry that
    does not verify is a miss. The returned Library may be used for any generation the host
    can run; checking that is the caller's job (cpu.require_runnable).
    """
    key = cache_key(name, gen, _builder_module(build_ir))
    entry = _entry_name(name, key)
    with _lock:
        obj = cache.read(entry, key) if cache_objects else None
        if obj is not None:
            debug(2, f"cache hit {entry}")
            return Library(obj, gen)
        with _collector_paused():
            obj = compile_object(build_ir(), gen)
        if cache_objects:
            cache.write(entry, key, obj)
        return Library(obj, gen)


# --- several modules compiled in parallel ----------------------------------------------------------
def load_parts(parts, gen, announce=None, cache_objects: bool = True,
               meanwhile=None, quick: bool = False) -> Library:
    """One Library holding several modules (a loop and its kernels, see Library). `parts`:
    [(name, build_ir)], each cached and verified as `load` caches one module, the longest to
    compile first.
    The missing ones are built (IR, in this process) and compiled: the first on a forked
    process, the rest in this one meanwhile (this project's machines have 2 cores;
    _compile_parts): llvmlite serialises every LLVM call of a process behind one lock, so
    threads compiled one after another. `announce(names)` is called first when anything is to
    be compiled. `meanwhile()`, if given, is called once: while the worker compiles, if
    anything is compiled (work of the caller's that the compiled code does not depend on).

    `quick`: a quick start (a first run). If the first part is missing, the cache usable and a
    core free (QUICK_START_IDLE), its worker first compiles it without LLVM's
    optimisation pipeline (about half the compile, code a little slower) and
    sends that object, which this Library loads and which is never cached; the worker then
    compiles the part as every other load does (-O3) and stores it in the cache, and
    Library.upgrade() swaps it in once stored. A load of the same part in this process
    meanwhile waits for the worker and reads its entry; at exit, multiprocessing waits for the
    worker (its object stored: the next run is warm)."""
    keys = [cache_key(name, gen, _builder_module(build_ir)) for name, build_ir in parts]
    entries = [_entry_name(name, key) for (name, _), key in zip(parts, keys)]
    with _lock:
        for entry in entries:   # stored by a quick start's worker of this process: wait for it
            job = _optimising.pop(entry, None)
            if job is not None and job.pid == os.getpid():
                job.worker.join()
        objs = [cache.read(e, k) if cache_objects else None for e, k in zip(entries, keys)]
        missing = [i for i, obj in enumerate(objs) if obj is None]
        engines, optimising = [None] * len(parts), {}
        if missing:
            if announce is not None:
                announce([parts[i][0] for i in missing])

            def finished(i, obj, store=True):
                objs[i] = obj
                if cache_objects and store:
                    cache.write(entries[i], keys[i], obj)
                engines[i] = _engine(obj, gen)
            first = missing[0]
            store = ((entries[first], keys[first])
                     if quick and cache_objects and _quick_start_possible() else None)
            worker = _compile_parts(parts, missing, gen, meanwhile, finished, store)
            if store is not None:
                optimising[first] = _optimising[entries[first]] = _Optimising(worker, *store,
                                                                              gen)
        engines = [engine or _engine(obj, gen) for engine, obj in zip(engines, objs)]
    if meanwhile is not None and not missing:
        meanwhile()
    return Library._of_engines(engines, sum(map(len, objs)), optimising)


# A quick start's first object (load_parts) skips LLVM's optimisation pipeline for the first
# part (the loop): the shipped model's loop on the AVX2 EPYC compiled in 234 ms of CPU against
# 441 at -O3 (int8; int16 242/466, float32 259/473; medians of 7, alternately) and ran as fast
# within the noise (int8 paired 0.984 in 15 rounds, 0.996 in 11; int16 0.980, float32 1.057),
# with the same samples in int8, int16 and float32 (the emitted IR has no fast-math flags: the
# pipeline keeps IEEE semantics); bench/README.md, branch cold14.
# It costs the quick object's compile in CPU time, and its -O3 compile runs beside the
# caller's work: it pays where a core is free for it. Cold `resynth` on the 2-core VM,
# alternately, in rounds begun with both cores idle: int8 2.08 -> 1.81 s, 1.77 -> 1.54,
# 1.79 -> 1.83 and 1.83 -> 1.69 (paired -0.14 s, 9 of 10 rounds shorter), int16 2.29 -> 1.92,
# float32 2.87 -> 2.61 (medians of 4-10); with two other processes busy and no such check,
# int8 2.40 -> 3.35 s (medians of 6).
QUICK_START_IDLE = 0.75   # cores idle on average since the last decision (or jit's import)
_optimising: dict = {}   # cache entry -> the _Optimising storing it (this process's workers)


def _cpu_times() -> tuple | None:
    """(idle, total) time of the CPUs this process may run on, in clock ticks since boot
    (/proc/stat), or None where that cannot be read."""
    idle = total = 0
    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}   # Linux's, as /proc/stat is
        with open("/proc/stat") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in cpus:
                    ticks = [int(t) for t in fields[1:8]]   # user .. softirq
                    idle, total = idle + ticks[3] + ticks[4], total + sum(ticks)
    except (AttributeError, OSError, ValueError):
        return None
    return (idle, total) if total else None


_cpu_since = _cpu_times()


def _quick_start_possible() -> bool:
    """A quick start pays where a core was free (QUICK_START_IDLE) since the last decision
    (or jit's import) and its -O3 object can be stored."""
    global _cpu_since
    before = _cpu_since
    now = _cpu_since = _cpu_times()
    if before is None or now is None or now[1] <= before[1]:
        return False
    idle = (now[0] - before[0]) / (now[1] - before[1]) * len(os.sched_getaffinity(0))
    return idle >= QUICK_START_IDLE and cache.usable_directory() is not None


@dataclass(frozen=True)
class _Optimising:
    """A quick start's worker, compiling a part's -O3 object and storing it as `entry` under
    `key`, started by process `pid`."""
    worker: object
    entry: str
    key: bytes
    gen: object
    pid: int = field(default_factory=os.getpid)

    def done(self) -> bool:
        return not self.worker.is_alive()

    def stored(self) -> bytes | None:
        """The object the worker stored (verified), or None (it failed: the quick code stays)."""
        _optimising.pop(self.entry, None)
        return cache.read(self.entry, self.key)


def _compile_parts(parts, missing, gen, meanwhile, finished, store=None):
    """The parts in `missing` compiled: the first (the longest) on a forked process and,
    meanwhile, `meanwhile()` (if given), then the rest here, one after another;
    `finished(i, object)` for each part as it is compiled. The worker is forked as soon as
    its part's IR text is built here, and inherits it: no executor, queue or pickling between
    the text and its compile starting (a ProcessPoolExecutor took 32-110 ms there on the
    loaded 2-core VM, a fork 6-14: bench/README.md). One worker, not two: a second one, for
    the rest, made three processes share the two cores while the first compiled, for a fork
    more (a cold load of the shipped model 9-30 ms slower, bench/README.md, ninth round).
    The worker is not waited for once its object is back (its exit took 15-25 ms of a
    critical path). With `store` (entry, key: a quick start, load_parts), the first part's
    object comes unoptimised, `finished(first, object, store=False)`, and the worker, not a
    daemon, goes on to store its -O3 object; returns it then."""
    _initialised()
    import multiprocessing   # here: a run with every module cached does not need it
    fork = multiprocessing.get_context("fork")
    first, name = missing[0], parts[missing[0]][0]
    with _collector_paused():
        text = str(parts[first][1]())
        receive, send = fork.Pipe(duplex=False)
        worker = fork.Process(target=_compile_in_worker, args=(send, name, text, gen, store),
                              daemon=store is None, name="jitvoc-compile")
        worker.start()
        send.close()
        try:
            if meanwhile is not None:
                meanwhile()
            for i in missing[1:]:
                finished(i, compile_object(parts[i][1](), gen))
            if store is None:
                finished(first, _received(receive, worker, name))
            else:
                finished(first, _received(receive, worker, name), store=False)
        except BaseException:
            worker.terminate()   # what it compiles is not needed any more
            raise
        finally:
            receive.close()
    return worker


def _received(receive, worker, name: str) -> bytes:
    """The object the worker compiling `name` sends; its compile's error raised, or
    RuntimeError if it died without sending."""
    try:
        obj = receive.recv()
    except EOFError:
        worker.join(1)
        raise RuntimeError(f"the compile worker of {name!r} died (exit code "
                           f"{worker.exitcode})") from None
    if isinstance(obj, BaseException):
        raise obj
    return obj


def _compile_in_worker(send, name: str, text: str, gen, store=None) -> None:
    """A compile worker: sends the object of IR text `text`, or the exception its compile
    raised. With `store` (entry, key: a quick start), the object sent is unoptimised, and the
    -O3 one is then stored in the cache as `entry` under `key`."""
    try:
        if store is None:
            send.send(_compile_text(name, text, gen))
            return
        send.send(_compile_text(name, text, gen, pipeline=False))
    except Exception as e:   # its error, raised by the parent (_received)
        send.send(e)
        return
    send.close()
    cache.write(*store, _compile_text(name, text, gen))


def _compile_text(name: str, text: str, gen, pipeline: bool = True) -> bytes:
    """compile_object for IR text (what crosses to a worker process); without `pipeline`,
    unoptimised IR (optimise)."""
    t0 = time.perf_counter()
    mod, tm = optimise(text, gen, pipeline)
    obj = tm.emit_object(mod)
    debug(2, f"compiled {name} for {gen.name} in {1e3 * (time.perf_counter() - t0):.1f} ms "
             f"({'-O3' if pipeline else 'quick start, no optimisation pipeline'}, "
             f"pid {os.getpid()})")
    return obj
