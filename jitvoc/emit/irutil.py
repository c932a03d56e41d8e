"""Small helpers for writing LLVM IR with llvmlite.ir: types, constants, splats and counted loops."""
from __future__ import annotations

import contextlib
import types

import numpy as np
from llvmlite import ir

from ..contracts import ADDR, F32, I64, PTR, U32, EntryPoint
from ..errors import ContractError

i1, i8, i16, i32, i64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
f32 = ir.FloatType()
ptr = ir.PointerType()
void = ir.VoidType()

INT_TYPES = {"s8": i8, "u8": i8, "s16": i16, "s32": i32, "f32": f32}


def vec(elem, n: int) -> ir.VectorType:
    return ir.VectorType(elem, n)


def int_type(dtype) -> ir.IntType:
    """The integer type of a NumPy integer dtype's width."""
    return ir.IntType(8 * np.dtype(dtype).itemsize)


def byte_size(typ) -> int:
    """Bytes of an integer, float32 or vector type."""
    if isinstance(typ, ir.VectorType):
        return typ.count * byte_size(typ.element)
    return 4 if typ == f32 else typ.width // 8


_REPEATED: dict = {}   # (vector type, element text) -> the vector constant (repeated)
_REPEATED_MAX = 4096


def repeated(typ: ir.VectorType, value) -> ir.Constant:
    """The vector constant of `typ` whose every element is the scalar `value` (a number, or
    ir.Undefined), one object per text: llvmlite caches a constant's text in the object, and
    the vocoder's loop uses a few dozen vector constants some 700 times (formatting each use
    again was ~40% of the 42 ms its IR text took). The text is that of a new constant."""
    scalar = ir.Constant(typ.element, value)
    key = (str(typ), scalar.get_reference())
    found = _REPEATED.get(key)
    if found is None:
        if len(_REPEATED) >= _REPEATED_MAX:
            _REPEATED.clear()
        found = _REPEATED[key] = ir.Constant(typ, [scalar] * typ.count)
    return found


def splat(b: ir.IRBuilder, value, n: int):
    """A vector of n copies of a scalar value (constant-folded for constants)."""
    if isinstance(value, ir.Constant):
        return repeated(vec(value.type, n), value.constant)
    v = b.insert_element(repeated(vec(value.type, n), ir.Undefined), value, i32(0))
    return b.shuffle_vector(v, repeated(vec(value.type, n), ir.Undefined),
                            repeated(vec(i32, n), 0))


def broadcast_load(b: ir.IRBuilder, base, typ, index, n: int, align: int = 1):
    """n copies of base[index] (a vpbroadcastd from memory), written as a one-element vector
    load and a shuffle: a scalar load feeding an insertelement makes LLVM's -O3 pipeline
    quadratic in the length of straight-line code (R at 5%, baked: 9 s instead of 1.3 s)."""
    one = b.load(gep(b, base, typ, index), typ=vec(typ, 1), align=align)
    return b.shuffle_vector(one, repeated(vec(typ, 1), ir.Undefined), repeated(vec(i32, n), 0))


def gep(b: ir.IRBuilder, base, elem_type, index, name: str = ""):
    """Address of base[index] for elements of elem_type (index: int or i64/i32 value)."""
    if isinstance(index, int):
        index = i64(index)
    return b.gep(base, [index], source_etype=elem_type, name=name)


def load(b: ir.IRBuilder, base, typ, index=0, align: int = 1, elem_type=None):
    """Load a `typ` from base + index elements of elem_type (default: typ itself)."""
    return b.load(gep(b, base, elem_type or typ, index), typ=typ, align=align)


def store(b: ir.IRBuilder, value, base, index=0, align: int = 1, elem_type=None):
    b.store(value, gep(b, base, elem_type or value.type, index), align=align)


def alloca(b: ir.IRBuilder, typ, count=1, align: int | None = None):
    """Stack space for `count` (an int or an i64 value) values of `typ`, as an untyped pointer
    (like function arguments), aligned to `align` bytes if given. Call it in the entry block
    when the code runs in a loop."""
    slot = b.alloca(typ, size=i64(count) if isinstance(count, int) else count)
    slot.align = align
    slot.type = ptr  # opaque, like every other pointer here (LLVM's IR has no typed pointers)
    return slot


def function(module: ir.Module, name: str, ret, args, internal: bool = False) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
    if internal:
        fn.linkage = "internal"
    fn.attributes.add("nounwind")
    return fn


IR_TYPES = {PTR: ptr, ADDR: ptr, I64: i64, U32: i32, F32: f32}


def signature(entry: EntryPoint) -> ir.FunctionType:
    return ir.FunctionType(void, [IR_TYPES[t] for t in entry.types])


def define(module: ir.Module, entry: EntryPoint, prefix: str, internal: bool = False,
           symbol: str = "") -> tuple[ir.Function, types.SimpleNamespace]:
    """The function `entry` declares (named `symbol`, else entry.symbol(prefix)) and its
    arguments by name."""
    fn = function(module, symbol or entry.symbol(prefix), void, signature(entry).args, internal)
    return fn, types.SimpleNamespace(**dict(zip(entry.names, fn.args)))


def call(b: ir.IRBuilder, entry: EntryPoint, callee, **values):
    """Call a function (or function pointer) of `entry` with its arguments by name."""
    args = entry.ordered(values)
    for (name, kind), v in zip(entry.args, args):
        want = IR_TYPES[kind]
        if not (isinstance(v.type, ir.PointerType) if want == ptr else v.type == want):
            raise ContractError(f"argument {name} of {entry.suffix or 'an entry point'} must be "
                                f"{want}, got {v.type}")
    return b.call(callee, args)


def declare_intrinsic(module: ir.Module, name: str, ret, args) -> ir.Function:
    """The declaration of an LLVM intrinsic, added once per module."""
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


@contextlib.contextmanager
def counted_loop(b: ir.IRBuilder, start, stop, step=1, name: str = "loop"):
    """`for (i = start; i < stop; i += step)` with i64 values; yields i inside the body.

    Code emitted inside the `with` block forms the body; afterwards the builder sits after the loop.
    """
    start = i64(start) if isinstance(start, int) else start
    stop = i64(stop) if isinstance(stop, int) else stop
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(i64, name=f"{name}.i")
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, done)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, i64(step) if isinstance(step, int) else step)
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(done)
