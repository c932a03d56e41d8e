"""jit.Library: several objects loaded into one process each read their own constants.

The large code model (the JIT's default) reaches a module's constants (pools, tables) at the
GOT plus a GOTOFF64 offset. In one RuntimeDyld, LLVM resolved every object's GOTOFF64 against
the first object's GOT while the code adds its own: once an earlier object had a GOT entry (a
call to memcpy, a writable global), a later object's table reads came back shifted (here two
entries), and an aligned 64-byte constant load crashed. The cases below failed that way before
jit.Library gave each object an engine of its own."""
import ctypes

import pytest
from llvmlite import ir

from jitvoc import cpu, jit

I32 = ir.IntType(32)
TABLE = [100 + 7 * i for i in range(64)]


def table_module(name: str, writable_global: bool) -> ir.Module:
    """`name(i)` returns TABLE[i] from a constant table; with `writable_global`, it also counts
    its calls in a global (which gives the object a GOT entry)."""
    m = ir.Module(name=name)
    kind = ir.ArrayType(I32, len(TABLE))
    table = ir.GlobalVariable(m, kind, name=f"{name}_table")
    table.initializer = ir.Constant(kind, TABLE)
    table.global_constant, table.linkage = True, "internal"
    f = ir.Function(m, ir.FunctionType(I32, [I32]), name=name)
    b = ir.IRBuilder(f.append_basic_block())
    if writable_global:
        calls = ir.GlobalVariable(m, I32, name=f"{name}_calls")
        calls.initializer = ir.Constant(I32, 0)
        b.store(b.add(b.load(calls), ir.Constant(I32, 1)), calls)
    b.ret(b.load(b.gep(table, [ir.Constant(I32, 0), b.zext(f.args[0], ir.IntType(64))])))
    return m


def vector_module(name: str) -> ir.Module:
    """`name(p)` stores a 64-byte constant vector (a 64-byte aligned constant-pool load) at p."""
    m = ir.Module(name=name)
    vec = ir.VectorType(I32, 16)
    f = ir.Function(m, ir.FunctionType(ir.VoidType(), [I32.as_pointer()]), name=name)
    b = ir.IRBuilder(f.append_basic_block())
    b.store(ir.Constant(vec, TABLE[:16]), b.bitcast(f.args[0], vec.as_pointer()), align=4)
    b.ret_void()
    return m


@pytest.mark.parametrize("writable", [(True, False), (False, True), (True, True, False, True)],
                         ids=["rw-ro", "ro-rw", "rw-rw-ro-rw"])
def test_every_object_reads_its_own_table(writable):
    gen = cpu.host_generation()
    modules = [table_module(f"table{i}", w) for i, w in enumerate(writable)]
    lib = jit.Library([jit.compile_object(m, gen) for m in modules], gen)
    for m in modules:
        fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(lib.address(m.name))
        assert [fn(i) for i in range(len(TABLE))] == TABLE, m.name


def test_aligned_constant_after_an_object_with_a_got():
    """The batched loop's crash: a 64-byte constant-pool load (vmovdqa64 where the host has
    AVX-512) in an object loaded after one with a GOT entry."""
    gen = cpu.host_generation()
    modules = [table_module("first", True), vector_module("second")]
    lib = jit.Library([jit.compile_object(m, gen) for m in modules], gen)
    out = (ctypes.c_int32 * 16)()
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lib.address("second"))(ctypes.addressof(out))
    assert list(out) == TABLE[:16]


def test_a_missing_symbol_is_a_key_error():
    gen = cpu.host_generation()
    lib = jit.Library([jit.compile_object(table_module("only", False), gen)], gen)
    with pytest.raises(KeyError, match="nowhere"):
        lib.address("nowhere")


def _builder(name: str):
    """A build_ir for load_parts (which takes builders defined in jitvoc only: the cache key
    fingerprints their module's code)."""
    def build():
        return table_module(name, False)
    build.__module__ = "jitvoc.jit"
    return build


def test_load_parts_compiles_the_missing_parts_and_caches_them(tmp_path, monkeypatch):
    monkeypatch.setenv("JITVOC_CACHE", str(tmp_path))
    gen = cpu.host_generation()
    names = [f"parts_table{i}_{tmp_path.name}" for i in range(3)]
    parts = [(name, _builder(name)) for name in names]
    jit.load_parts(parts[1:2], gen)   # the middle one cached beforehand
    announced, meanwhile = [], []
    lib = jit.load_parts(parts, gen, announce=announced.append,
                         meanwhile=lambda: meanwhile.append(1))
    assert announced == [[names[0], names[2]]] and meanwhile == [1]
    for name in names:
        fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(lib.address(name))
        assert [fn(i) for i in range(len(TABLE))] == TABLE, name
    announced.clear()
    jit.load_parts(parts, gen, announce=announced.append, meanwhile=lambda: meanwhile.append(2))
    assert announced == [] and meanwhile == [1, 2]   # all cached: meanwhile still called once


@pytest.mark.parametrize("broken_first", [True, False])   # on the worker, in this process
def test_load_parts_raises_a_failed_compile(tmp_path, monkeypatch, broken_first):
    monkeypatch.setenv("JITVOC_CACHE", str(tmp_path))

    def broken():
        return "define i32 @broken( {"   # IR text that does not parse
    broken.__module__ = "jitvoc.jit"
    parts = [("broken", broken), (f"fine{broken_first}", _builder(f"fine{broken_first}"))]
    with pytest.raises(RuntimeError):
        jit.load_parts(parts if broken_first else parts[::-1], cpu.host_generation())
    assert not list(tmp_path.glob("*broken*"))


def test_load_parts_reports_a_dead_worker(tmp_path, monkeypatch):
    """A compile worker that exits without sending its object (killed, crashed) is an error
    that names the part, not a hang."""
    import os
    monkeypatch.setenv("JITVOC_CACHE", str(tmp_path))
    monkeypatch.setattr(jit, "_compile_text", lambda name, text, gen: os._exit(3))
    with pytest.raises(RuntimeError, match="compile worker of 'dies' died .exit code 3"):
        jit.load_parts([("dies", _builder("dies"))], cpu.host_generation())
