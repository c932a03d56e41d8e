"""Emit a matrix-vector kernel (KernelSpec + packed matrix -> llvmlite.ir).

Every kernel module defines, for ``N = spec.name``:

- ``N_core`` / ``N_core_acc(y, xin, W, index, panel_ptr, row_scale, zcorr, x_scale)`` the panel
  product (internal) for every padded row: dequantized float32 y, or the raw accumulators.
  ``xin`` is the stored activation codes (contiguous panels, and gathering panels on CPUs with
  byte permutes), or ``group`` shifted copies of them as int32 (``T_j[c] = code[c] << bits·j``)
  so that a gathering panel's x word is ``T_0[c_0] | T_1[c_1] | …``;
- ``N_raw(y, x_codes, W, index, panel_ptr)`` the integer entry point (x_codes padded to x_len);
- ``N(y, x, W, index, panel_ptr, row_scale, zcorr, x_inv_scale, x_scale)`` float32 in and out:
  quantize x (round half to even, saturate), product,
  ``y = (acc − zcorr) · (row_scale · x_scale)`` (row_scale, zcorr padded to whole row blocks);
- ``N_loop(n, …)`` the float entry called n times (benchmarks time this, not Python).

A kernel for B > 1 vectors (``spec.vectors``, contracts.SPMV_VECTORS) has the same entry points
over B rows of y and x (one activation format for all B). Its xin holds the B vectors
interleaved, so that a panel finds all B activation words side by side: contiguous panels read
the words ``xin[(c / group) · B + v]`` (int32 words of `group` codes, or floats), gathering
panels the codes ``xin[c · B + v]`` of their `group` columns (no shifted tables: one shuffle
of the `group` loads makes the B words; on the backends of isa.ROW_BLOCK_WORDS, from the B it
gives, once per panel for all B, a row block's words into a stack buffer before its groups of
vectors, which broadcast-load them: Kernel.row_block_words), except with byte-permute
gathers: those read the B rows of codes as they are, each zero-padded to x_pad, build every
vector's words in one prologue and broadcast-load a panel's B words, stored together
(Kernel.word_unit: from B = 3 on in 16 · B bytes, so that they stay cheap past L1; the
planner's limit: plan.matvec.PERMUTE_WORDS_BYTES).
Each panel's weights are loaded once and multiplied into B accumulators (one set per vector; B
independent chains need no extra sets), or, where B vectors' accumulators would fill more than
half the vector registers, once per group of vectors (Kernel.groups: a row block's panels read
once per group). B = 1 emits exactly the single-vector code.

``index`` is ``Packed.kernel_index()``, or ``Packed.permute_gathers().index`` for byte-permute
gathers (see jitvoc.layout): those kernels first build every panel's x word into a stack array
(``permute_words``), then read each panel's word from its slot.
Variants: ``idx`` loops over row blocks and reads each panel's columns from ``index``;
``grouped`` visits row blocks sorted by panel count with each count's panels unrolled (no
unpredictable branches; columns still from ``index``); ``baked`` unrolls every panel with its
columns (or word slots) and offsets as constants; ``dense`` walks contiguous panels.
Float kernels use a fixed logical vector width and no FMA, so results do not depend on the ISA.

The code is written by functions over explicit contexts: a Kernel (what the spec and layout
imply, and the backend bound to the module), a Core (the builder, arguments and accumulators
while a core is written) and an Epilogue (what happens to a row block's sums). Other emitters
(emit.cell) use Kernel, emit_core and the input preparation functions (xin_buffer, activations,
code, put_codes, xin_at).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from llvmlite import ir

from .. import isa
from ..contracts import (PANEL_COLUMN, PANEL_OFFSET, PANEL_PTR, PERMUTE_GROUP, PERMUTE_PASS,
                         PERMUTE_SLOT, SPMV, SPMV_CORE, SPMV_LOOP, SPMV_RAW, SPMV_VECTORS)
from ..errors import ContractError
from ..layout import CACHE_LINE, Packed, PermuteGathers
from ..spec import KernelSpec
from .irutil import (alloca, broadcast_load, byte_size, call, counted_loop, define, f32, gep, i8,
                     i16, i32, i64, int_type, load, ptr, splat, store, vec)
from .isa import Backend, generic_dot

ROUND_MAGIC = 12582912.0  # 1.5 * 2**23: v + M has the integer nearest v (ties to even) + 2**22
#                          in its low 23 mantissa bits, for |v| < 2**22
WORD_UNIT = 4   # byte-permute words of one vector kept together (B > 1; permute_words)
# Kernel.groups: the share of a backend's vector registers a B-vector core's accumulators may
# fill, in groups of at least MIN_GROUP vectors (integer kernels; float32 down to one vector).
# AVX2 (16 ymm), 16x1 blocks in groups of 4 vectors (8 accumulators) against all B at once:
# the loop at B = 8 x1.04-1.06, B = 16 x1.18; int16 R at B = 8 / 16 x1.10 / x1.61.
# 128-bit backends (4 xmm a vector) in groups of 2: R, O1, O2 x0.81-0.94 at B = 4-16 (SSE2,
# SSSE3); AVX-512 B = 16 (16 zmm) is one group (bench/README.md, "Issue 15: B = 8, seventh
# round"). float32 B-vector cores keep the single-vector kernel's accumulator sets (the loop's
# a4: the sums of synthesize alone), 8 ymm a vector on AVX2: in groups of one vector the loop
# at B = 8 / 16 x1.45 / x1.55 on AVX2, x1.06 / x1.03 on AVX-512 (groups of 4); kernels alone
# with one set (a1) at B = 8 / 16 x1.24-1.29 / x1.92-1.97 (bench/README.md, twelfth session).
ACCUMULATOR_REGISTERS = 0.5
MIN_GROUP = 4
ROUND_BITS = int(np.float32(ROUND_MAGIC).view(np.int32))


def clamp(b: ir.IRBuilder, v, lo_c, hi_c):
    """v limited to [lo_c, hi_c] (constants of v's type)."""
    v = b.select(b.fcmp_ordered("<", v, lo_c), lo_c, v)
    return b.select(b.fcmp_ordered(">", v, hi_c), hi_c, v)


def core_symbol(spec: KernelSpec, dequantize: bool, bias: bool = False, relu: bool = False) -> str:
    name = SPMV_CORE.symbol(spec.name) + ("" if dequantize else "_acc")
    return name + ("_bias" if bias else "") + ("_relu" if relu else "")


ELEMENTS = {"int8": (i8, 1), "int16": (i16, 2), "float32": (f32, 4)}   # IR type, bytes
DOT_KIND = {"int8": "dot4", "int16": "dot2"}
# what the kernels read from panel_ptr and index (contracts)
PTR_T, COLUMN_T, OFFSET_T, SLOT_T = map(int_type, (PANEL_PTR, PANEL_COLUMN, PANEL_OFFSET,
                                                   PERMUTE_SLOT))


@dataclass(frozen=True, eq=False)
class Kernel:
    """What a spec and its packed matrix imply for the code, and the backend bound to the
    module the code goes into (None for float32 kernels). Derived values are computed once:
    the emitters read them per panel."""
    spec: KernelSpec
    packed: Packed
    module: ir.Module | None
    backend: Backend | None
    width: int        # lanes per vector operation
    native: bool      # the backend has an instruction of that width (else plain IR)
    gathers: PermuteGathers | None   # byte-permute gathers (VBMI)

    @classmethod
    def of(cls, spec: KernelSpec, packed: Packed, gen, module: ir.Module | None) -> "Kernel":
        gathers = packed.permute_gathers(spec.x_permute) if spec.x_permute else None
        if spec.dtype == "float32":
            return cls(spec, packed, module, None, packed.bh, False, gathers)
        backend = Backend(spec.isa, gen, module)
        width = backend.width(DOT_KIND[spec.dtype], packed.bh)  # 0: no native width fits
        return cls(spec, packed, module, backend, width or packed.bh, bool(width), gathers)

    lanes = cached_property(lambda self: self.packed.bh)
    group = cached_property(lambda self: self.spec.group)
    is_float = cached_property(lambda self: self.spec.dtype == "float32")
    elem = cached_property(lambda self: ELEMENTS[self.spec.dtype][0])
    esize = cached_property(lambda self: ELEMENTS[self.spec.dtype][1])
    kind = cached_property(lambda self: DOT_KIND.get(self.spec.dtype))
    chunks = cached_property(lambda self: self.lanes // self.width)
    acc_t = cached_property(lambda self: vec(f32 if self.is_float else i32, self.width))
    w_t = cached_property(lambda self: vec(self.elem, self.width * self.group))
    panel_bytes = cached_property(lambda self: self.lanes * self.group * self.esize)
    permute = cached_property(lambda self: self.spec.x_permute)   # byte-permute window (VBMI)
    vectors = cached_property(lambda self: self.spec.vectors)

    @cached_property
    def word_unit(self) -> int:
        """Byte-permute words of one vector kept together (B > 1, permute_words): WORD_UNIT, or
        a whole group's for B = 2 (the words of two vectors are small; B = 2 in units of
        WORD_UNIT gave the same bits at the same speed, R, O1, O2, GRU-A within ±5%,
        bench/README.md "Issue 15: B = 8, fourth round")."""
        return PERMUTE_GROUP if self.vectors <= 2 else WORD_UNIT

    @cached_property
    def row_block_words(self) -> bool:
        """Whether a B-vector core builds the B activation words of a row block's gathering
        panels once, into a stack buffer, before multiplying its groups of vectors (the words
        then broadcast-loaded), instead of per panel and group by shuffles in registers: from
        the vector count isa.ROW_BLOCK_WORDS gives the backend, for the index-driven and grouped
        variants."""
        fewest = isa.ROW_BLOCK_WORDS.get(self.spec.isa)
        return (fewest is not None and self.vectors >= max(2, fewest) and not self.is_float
                and not self.codes_input and self.spec.variant in ("idx", "grouped"))

    @cached_property
    def groups(self) -> list:
        """The vectors a core multiplies in one pass over a row block's panels: all B, or, for
        a float32 kernel or an integer kernel of native width, equal groups (ranges of vectors)
        whose accumulators fit in ACCUMULATOR_REGISTERS of the backend's vector registers (x86:
        32 of 512 bits, else 16; an integer kernel's groups at least MIN_GROUP vectors, a
        float32 kernel's down to one), a row block's panels then read once per group."""
        n = self.vectors
        if n == 1 or not (self.is_float or self.native):
            return [range(n)]
        bits = isa.vector_bits(self.spec.isa)
        registers = 32 if bits >= 512 else 16
        per_vector = self.chunks * self.spec.accumulators * -(-self.acc_t.count * 32 // bits)
        fit = int(registers * ACCUMULATOR_REGISTERS) // per_vector
        if fit < (1 if self.is_float else MIN_GROUP):
            return [range(n)]
        count = -(-n // fit)
        size = -(-n // count)
        return [range(v, min(v + size, n)) for v in range(0, n, size)]

    def entry(self, single):
        """The declaration of an entry point (contracts) for this kernel's vector count."""
        return single if self.vectors == 1 else SPMV_VECTORS[single]

    @cached_property
    def row_block_panels(self) -> int:
        """The most panels a row block can have (another matrix of the same spec shares the
        core: a bound of the shape, not of this pattern)."""
        return -(-self.packed.x_len // self.group)

    @cached_property
    def stride(self) -> int:
        """The distance between shifted tables."""
        return self.spec.x_stride or self.packed.x_len

    @cached_property
    def codes_input(self) -> bool:
        """Whether xin is the plain codes (else their shifted tables)."""
        return self.packed.contiguous or bool(self.permute)

    @cached_property
    def x_pad(self) -> int:
        return self.gathers.x_pad if self.permute else self.packed.x_len

    @property
    def stack_bytes(self) -> int:
        """The most stack the entry points allocate: the xin buffer or tables (xin_buffer,
        prepare_x), the padded output (emit_entries) and the permute words (permute_words)."""
        p, n = self.packed, self.vectors
        if self.is_float:
            xin = 0 if p.x_len == p.cols and n == 1 else 4 * p.x_len * n
        elif not self.codes_input and n == 1:
            xin = 4 * self.group * self.stride
        else:
            xin = self.esize * self.x_pad * n
        if n > 1 and not self.is_float and not self.permute:   # the codes before interleaving
            xin += self.esize * p.x_len * n
        out = 4 * p.rows_padded * n if p.rows_padded != p.rows else 0
        words = (4 * ((p.n_panels + PERMUTE_GROUP - 1) // PERMUTE_GROUP * PERMUTE_GROUP * n + 16)
                 if self.permute else 4 * self.row_block_panels * n if self.row_block_words
                 else 0)
        return xin + out + words


@dataclass
class Core:
    """A core being written: its kernel, builder, activations, weights and accumulator sets
    ([vector][set][chunk] stack slots, those of the vectors `vs` being multiplied: one of
    Kernel.groups, see each_group); `words` holds the byte-permute words once built, B vectors'
    in units of Kernel.word_unit slots (permute_words)."""
    k: Kernel
    b: ir.IRBuilder
    xin: ir.Value
    w: ir.Value
    slots: list
    vs: range
    words: ir.Value | None = None
    buffer: ir.Value | None = None

    @property
    def accs(self) -> list:
        return self.slots[:len(self.vs)]


def each_group(c: Core):
    """Every group of the kernel's vectors (Kernel.groups), c.vs set to it in turn."""
    for vs in c.k.groups:
        c.vs = vs
        yield vs


@dataclass(frozen=True)
class Epilogue:
    """What becomes of a row block's sums: dequantized (integer kernels), plus bias[row] when a
    bias is given, then relu."""
    dequantize: bool
    row_scale: ir.Value
    zcorr: ir.Value
    x_scale: ir.Value
    bias: ir.Value | None
    relu: bool


# --- cores ----------------------------------------------------------------------------------------
def emit_core(k: Kernel, dequantize: bool, bias: bool = False, relu: bool = False,
              internal: bool = True) -> ir.Function:
    """N_core (float y, dequantized) or N_core_acc (raw accumulators), named by core_symbol;
    `internal=False` exports it (a core compiled in a module of its own). With `bias` the
    epilogue adds bias[row], with `relu` it then clamps at zero."""
    s = k.spec
    name = core_symbol(s, dequantize, bias, relu)
    if name in k.module.globals:  # same spec, same code (another matrix of this layout)
        return k.module.globals[name]
    fn, a = define(k.module, k.entry(SPMV_CORE), s.name, internal, symbol=name)
    fn.attributes.add("noinline")  # big loops: inlining them only costs compile time
    for arg in fn.args[:7]:
        arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    accs = [[[b.alloca(k.acc_t) for _ in range(k.chunks)] for _ in range(s.accumulators)]
            for _ in range(max(map(len, k.groups)))]
    c = Core(k, b, a.xin, a.W, accs, k.groups[0])
    ep = Epilogue(dequantize and not k.is_float, a.row_scale, a.zcorr, a.x_scale,
                  a.bias if bias else None, relu)
    if k.permute:
        c.words = permute_words(c, a.index, a.panel_ptr)
    if k.row_block_words:
        c.buffer = alloca(b, i32, k.row_block_panels * k.vectors, align=CACHE_LINE)
    VARIANTS[s.variant](c, ep, a.y, a.index, a.panel_ptr)
    b.ret_void()
    return fn


def _idx(c: Core, ep: Epilogue, y, index, pptr):
    """Row blocks in order, each an index-driven loop over its panels."""
    b = c.b
    with counted_loop(b, 0, c.k.packed.row_blocks, name="rb") as rb:
        if c.k.row_block_words:
            ptrs = [b.sext(load(b, pptr, PTR_T, i, align=byte_size(PTR_T)), i64)
                    for i in (rb, b.add(rb, i64(1)))]
            build_row_block_words(c, index, *ptrs)
        for _ in each_group(c):
            zero(c)
            panel_loop(c, index, pptr, rb)
            store_rows(c, ep, y, rb, range(c.k.spec.accumulators))


def _baked(c: Core, ep: Epilogue, y, index, pptr):
    """Every panel unrolled with its columns (or word slots) and offsets as constants."""
    k, p = c.k, c.k.packed
    for i, rb in enumerate(p.rb_order.tolist()):
        for _ in each_group(c):
            zero(c)
            lo, hi = int(p.panel_ptr[i]), int(p.panel_ptr[i + 1])
            for q in range(lo, hi):
                col = ([int(k.gathers.slots[q])] if k.permute
                       else [int(v) for v in p.cols_idx[q]])
                panel(c, q, col, (q - lo) % k.spec.accumulators)
            store_rows(c, ep, y, rb, range(c.k.spec.accumulators))


def _grouped(c: Core, ep: Epilogue, y, index, pptr):
    """Row blocks stored sorted by panel count (layout.pack by_count): one loop per count
    with that many panels unrolled, walking panels in memory order, so every branch is
    predictable. Where each row block goes is a constant array in the module."""
    b, p, n_sets = c.b, c.k.packed, c.k.spec.accumulators
    counts = (p.panel_ptr[1:] - p.panel_ptr[:-1]).astype(np.int64)
    if np.any(np.diff(counts) < 0):
        raise ValueError("grouped kernels need row blocks packed by_count")
    table = _order_table(c.k)
    start = 0
    for n in np.unique(counts).tolist():
        stop = start + int(np.count_nonzero(counts == n))
        base = int(p.panel_ptr[start])
        with counted_loop(b, start, stop, name=f"count{n}") as i:
            rb = b.sext(load(b, table, i32, i, align=4), i64)
            if c.k.row_block_words:
                first = b.add(i64(base), b.mul(b.sub(i, i64(start)), i64(n)))
                build_row_block_words(c, index, first, b.add(first, i64(n)))
            for _ in each_group(c):
                zero(c)
                if n <= c.k.spec.grouped_unroll:
                    first = b.add(i64(base), b.mul(b.sub(i, i64(start)), i64(n)))
                    for u in range(n):
                        q = b.add(first, i64(u))
                        panel(c, q, runtime_cols(c, index, q), u % n_sets)
                else:
                    panel_loop(c, index, pptr, i)
                store_rows(c, ep, y, rb, range(c.k.spec.accumulators))
        start = stop


def _order_table(k: Kernel) -> ir.GlobalVariable:
    """The row block stored at each position, a constant array shared by the kernel's cores."""
    name, p = f"{k.spec.name}_order", k.packed
    table = k.module.globals.get(name)
    if table is None:
        kind = ir.ArrayType(i32, p.row_blocks)
        table = ir.GlobalVariable(k.module, kind, name=name)
        table.initializer = ir.Constant(kind, p.rb_order.tolist())
        table.global_constant, table.linkage = True, "internal"
    return table


def _dense(c: Core, ep: Epilogue, y, index, pptr):
    """Dense: `accumulators` row blocks at a time share each broadcast of x (register
    blocking)."""
    b, p, n_rb = c.b, c.k.packed, c.k.spec.accumulators
    full = p.row_blocks // n_rb * n_rb
    if full:
        with counted_loop(b, 0, full, n_rb, name="rbgroup") as rb0:
            _dense_rows(c, ep, y, rb0, n_rb)
    if p.row_blocks > full:
        _dense_rows(c, ep, y, i64(full), p.row_blocks - full)


def _dense_rows(c: Core, ep: Epilogue, y, rb0, count: int):
    """Row blocks rb0 .. rb0 + count - 1, one accumulator set each; the column loop unrolled
    `unroll` times."""
    b, s = c.b, c.k.spec
    n_k = c.k.packed.x_len // c.k.group
    k_main = n_k // s.unroll * s.unroll
    for _ in each_group(c):
        zero(c)
        if k_main:
            with counted_loop(b, 0, k_main, s.unroll, name="k") as kv:
                for u in range(s.unroll):
                    _dense_step(c, rb0, count, n_k, b.add(kv, i64(u)))
        for kv in range(k_main, n_k):
            _dense_step(c, rb0, count, n_k, i64(kv))
        for r in range(count):
            store_rows(c, ep, y, b.add(rb0, i64(r)), [r])


def _dense_step(c: Core, rb0, count: int, n_k: int, kv):
    """Panel column kv of each of the row blocks, sharing one broadcast of x."""
    b = c.b
    xw = xwords(c, [b.mul(kv, i64(c.k.group))])
    for r in range(count):
        panel(c, b.add(b.mul(b.add(rb0, i64(r)), i64(n_k)), kv), None, r, xw)


VARIANTS = {"idx": _idx, "baked": _baked, "grouped": _grouped, "dense": _dense}


# --- panels ---------------------------------------------------------------------------------------
def panel_loop(c: Core, index, pptr, i):
    """The index-driven loop over the i-th stored row block's panels, unrolled `unroll`
    times."""
    b, s = c.b, c.k.spec
    start = b.sext(load(b, pptr, PTR_T, i, align=byte_size(PTR_T)), i64)
    stop = b.sext(load(b, pptr, PTR_T, b.add(i, i64(1)), align=byte_size(PTR_T)), i64)
    main_end = b.add(start, b.mul(b.sdiv(b.sub(stop, start), i64(s.unroll)), i64(s.unroll)))
    with counted_loop(b, start, main_end, s.unroll, name="main") as q:
        for u in range(s.unroll):
            qu = b.add(q, i64(u))
            panel(c, qu, runtime_cols(c, index, qu), u % s.accumulators)
    with counted_loop(b, main_end, stop, 1, name="rest") as q:
        # one panel per trip into accumulator 0, then rotate the accumulators, so that
        # consecutive trips do not wait on each other's result
        panel(c, q, runtime_cols(c, index, q), 0)
        rotate(c)


def runtime_cols(c: Core, index, q) -> list:
    """Panel q's column (contiguous panels) or table offsets (gathering panels), as i64;
    with byte permutes, the slot of its precomputed word; with words built per row block,
    q itself."""
    b = c.b
    if c.k.row_block_words:   # the row block's words, built by panel (build_row_block_words)
        return [q]
    if c.k.permute:   # one slot per panel
        return [b.zext(load(b, index, SLOT_T, q, align=byte_size(SLOT_T)), i64)]
    if c.k.packed.contiguous:   # one column per panel
        return [b.sext(load(b, index, COLUMN_T, q, align=byte_size(COLUMN_T)), i64)]
    return _table_offsets(c, index, q)


def _table_offsets(c: Core, index, q) -> list:
    """Gathering panel q's table offsets (column + j · stride of its j-th column), as i64."""
    b, g = c.b, c.k.group
    bits = OFFSET_T.width
    word_t = ir.IntType(bits * g)  # the panel's g offsets in one load
    packed = b.load(gep(b, index, OFFSET_T, b.mul(q, i64(g))), typ=word_t,
                    align=byte_size(OFFSET_T))
    return [b.zext(b.trunc(b.lshr(packed, word_t(bits * j)) if j else packed, OFFSET_T), i64)
            for j in range(g)]


def build_row_block_words(c: Core, index, start, stop):
    """The B activation words of panels start .. stop - 1 (a row block's), built once for all
    groups of vectors: panel q's at c.buffer[(q - start) · B + v] (Kernel.row_block_words);
    c.words then points so that xwords finds them at q · B + v."""
    b, k = c.b, c.k
    n, vs = k.vectors, c.vs
    c.vs = range(n)
    with counted_loop(b, start, stop, name="words") as q:
        word = _gathered_word(c, _table_offsets(c, index, q))
        store(b, word, c.buffer, b.mul(b.sub(q, start), i64(n)), align=4, elem_type=i32)
    c.vs = vs
    c.words = gep(b, c.buffer, i32, b.mul(b.sub(i64(0), start), i64(n)))


def rotate(c: Core):
    for sets in c.accs:
        for n in range(c.k.chunks):
            vals = [c.b.load(acc_set[n]) for acc_set in sets]
            for acc_set, v in zip(sets, vals[1:] + vals[:1]):
                c.b.store(v, acc_set[n])


def zero(c: Core):
    zero_v = ir.Constant(c.k.acc_t, [0.0 if c.k.is_float else 0] * c.k.width)
    for sets in c.accs:
        for acc_set in sets:
            for a in acc_set:
                c.b.store(zero_v, a)


def interleaved(b: ir.IRBuilder, parts: list):
    """The elements of equal-length vectors, alternating: part j's element i at i · len(parts)
    + j (one shuffle after pairwise concatenation)."""
    m, rows = parts[0].type.count, list(parts)
    while len(rows) > 1:   # concatenate pairwise (zeros fill an odd count)
        if len(rows) % 2:
            rows.append(ir.Constant(rows[0].type, None))
        w = rows[0].type.count
        mask = ir.Constant(vec(i32, 2 * w), list(range(2 * w)))
        rows = [b.shuffle_vector(rows[i], rows[i + 1], mask) for i in range(0, len(rows), 2)]
    order = [j * m + i for i in range(m) for j in range(len(parts))]
    return b.shuffle_vector(rows[0], ir.Constant(rows[0].type, ir.Undefined),
                            ir.Constant(vec(i32, len(order)), order))


def xwords(c: Core, col) -> list:
    """The broadcast activations of one panel for each of the B vectors (see xword)."""
    b, k = c.b, c.k
    if k.vectors == 1:
        return [xword(c, col)]
    n, vs = k.vectors, c.vs
    as_i64 = [i64(v) if isinstance(v, int) else v for v in col]
    if k.permute:   # slot s's words, vector v's at (s - s % u) · B + u · v + s % u
        s, u = as_i64[0], k.word_unit
        base = b.add(b.mul(b.and_(s, i64(-u)), i64(n)), b.and_(s, i64(u - 1)))
        return [broadcast_load(b, c.words, i32, b.add(base, i64(u * v)) if v else base,
                               k.width, align=4) for v in vs]
    if k.packed.contiguous:   # B words side by side at word (col / group) · B
        shift = k.group.bit_length() - 1
        base = b.mul(b.lshr(as_i64[0], i64(shift)) if shift else as_i64[0], i64(n))
        typ = f32 if k.is_float else i32
        return [broadcast_load(b, c.xin, typ, b.add(base, i64(v)) if v else base, k.width,
                               align=4) for v in vs]
    if k.row_block_words:   # built for the row block (build_row_block_words)
        at = b.mul(as_i64[0], i64(n))
        return [broadcast_load(b, c.words, i32, b.add(at, i64(v)) if v else at, k.width,
                               align=4) for v in vs]
    word = _gathered_word(c, col)
    undef = ir.Constant(word.type, ir.Undefined)
    return [b.shuffle_vector(word, undef, ir.Constant(vec(i32, k.width), [v] * k.width))
            for v in range(len(vs))]


def _gathered_word(c: Core, col):
    """The activation words of the vectors c.vs for a gathering panel of table offsets `col`
    (ints or i64), as <len(vs) x i32>: each column's codes of the vectors, interleaved."""
    b, k, n, vs = c.b, c.k, c.k.vectors, c.vs
    codes = []   # the group's codes of each of the panel's columns
    for j, v in enumerate(col):
        column = i64(v) if isinstance(v, int) else b.sub(v, i64(j * k.stride))
        at = b.mul(column, i64(n))
        codes.append(b.load(gep(b, c.xin, k.elem, b.add(at, i64(vs.start)) if vs.start else at),
                            typ=vec(k.elem, len(vs)), align=k.esize))
    return b.bitcast(interleaved(b, codes), vec(i32, len(vs)))   # vector v's codes in one i32


def xword(c: Core, col):
    """The broadcast activations of one panel, as <width x i32> (or <width x float>)."""
    b, k = c.b, c.k
    as_i64 = [i64(v) if isinstance(v, int) else v for v in col]
    if k.is_float:
        return broadcast_load(b, c.xin, f32, as_i64[0], k.width, align=4)
    if k.permute:
        return broadcast_load(b, c.words, i32, as_i64[0], k.width, align=4)
    if k.packed.contiguous:  # g consecutive codes starting at col[0]: one 32-bit load
        return broadcast_load(b, gep(b, c.xin, k.elem, as_i64[0]), i32, 0, k.width, align=4)
    word = None   # OR of the shifted tables at the panel's offsets
    for j, v in enumerate(col):
        idx = i64(v + j * k.stride) if isinstance(v, int) else v
        t = load(b, c.xin, i32, idx, align=4)
        word = t if word is None else b.or_(word, t)
    return splat(b, word, k.width)


def panel(c: Core, q, col, acc_index: int, xw=None):
    """Panel q's products into accumulator set acc_index of every vector (x from `col`, or the
    vectors' words xw given): each chunk of weights loaded once for all."""
    b, k = c.b, c.k
    xws = xwords(c, col) if xw is None else xw
    base = q * k.panel_bytes if isinstance(q, int) else b.mul(q, i64(k.panel_bytes))
    for n in range(k.chunks):
        off = n * k.width * k.group * k.esize
        idx = i64(base + off) if isinstance(base, int) else b.add(base, i64(off))
        wv = b.load(gep(b, c.w, i8, idx), typ=k.w_t, align=1)
        for xw, sets in zip(xws, c.accs):
            acc = b.load(sets[acc_index][n])
            if k.is_float:
                new = b.fadd(acc, b.fmul(wv, xw))
            elif k.native:
                new = k.backend.dot(b, k.kind, acc, xw, wv)
            else:
                new = generic_dot(b, k.kind, acc, xw, wv)
            b.store(new, sets[acc_index][n])


def store_rows(c: Core, ep: Epilogue, y, rb, set_indices):
    """Sum the accumulator sets `set_indices` of row block rb, apply the epilogue and store
    the rows (of vector v at y + v · rows_padded)."""
    b, k = c.b, c.k
    set_indices = list(set_indices)
    for v, sets in zip(c.vs, c.accs):
        for n in range(k.chunks):
            total = b.load(sets[set_indices[0]][n])
            for i in set_indices[1:]:
                a = b.load(sets[i][n])
                total = b.fadd(total, a) if k.is_float else b.add(total, a)
            row = (i64(rb * k.lanes + n * k.width) if isinstance(rb, int)
                   else b.add(b.mul(rb, i64(k.lanes)), i64(n * k.width)))
            out = b.add(row, i64(v * k.packed.rows_padded)) if v else row
            total = _epilogue(b, k, ep, total, row, out)
            b.store(total, gep(b, y, total.type.element, out), align=4)


def _epilogue(b: ir.IRBuilder, k: Kernel, ep: Epilogue, total, row, out):
    """The sums of rows `row` .. (of vector v, stored at `out` = row + v · rows_padded, where
    the bias is read too: a B-vector core's bias is [B, rows_padded])."""
    if ep.dequantize:
        zc = b.load(gep(b, ep.zcorr, i32, row), typ=k.acc_t, align=4)
        rs = b.load(gep(b, ep.row_scale, f32, row), typ=vec(f32, k.width), align=4)
        scale = b.fmul(rs, splat(b, ep.x_scale, k.width))
        total = b.fmul(b.sitofp(b.sub(total, zc), scale.type), scale)
    if ep.bias is not None:
        total = b.fadd(total, b.load(gep(b, ep.bias, f32, out), typ=total.type, align=4))
    if ep.relu:
        zero_v = ir.Constant(total.type, [0.0] * k.width)
        total = b.select(b.fcmp_ordered(">", total, zero_v), total, zero_v)
    return total


def permute_words(c: Core, index, pptr):
    """VBMI prologue: every gathering panel's activation word, PERMUTE_GROUP panels per group,
    into a stack array (layout.PermuteGathers): per group one byte permute of a 128-byte window
    of x, then one masked permute per extra pass. One-vector kernels with the pattern compiled
    in know every group's passes and windows: straight-line code (PermuteGathers.pass_offsets;
    O1/O3 baked 239 -> 216 ns a call, grouped 268 -> 238, R grouped 1,951 -> 1,877; B-vector
    kernels lost up to 7%, bench/README.md "Seventh round"); the others loop over the groups,
    their count read from panel_ptr, the passes from the index. B vectors: each vector's words
    from its codes at xin + v · x_pad, a group's words stored in units of Kernel.word_unit
    slots, the B vectors' units side by side, so that a panel's B words lie together."""
    b, p, n = c.b, c.k.packed, c.k.vectors
    if c.k.spec.pattern and n == 1 and c.k.backend.gather["straight"]:
        groups = c.k.gathers.pass_offsets()
        words = alloca(b, i32, len(groups) * PERMUTE_GROUP, align=CACHE_LINE)
        xs, results = _permute_inputs(c)
        for g, passes in enumerate(groups):
            for rec, window in passes:
                _permute_into(c, xs, results, index, i64(rec), rec == passes[0][0], i64(window))
            _store_group(c, words, i64(g), results)
        return words
    if c.k.spec.pattern:
        n_panels = i64(p.n_panels)
    else:
        n_panels = b.sext(load(b, pptr, PTR_T, i64(p.row_blocks), align=byte_size(PTR_T)), i64)
    n_groups = b.udiv(b.add(n_panels, i64(PERMUTE_GROUP - 1)), i64(PERMUTE_GROUP))
    words = alloca(b, i32, b.mul(n_groups, i64(PERMUTE_GROUP * n)), align=CACHE_LINE)
    slots = b.mul(n_groups, i64(PERMUTE_GROUP * byte_size(SLOT_T)))
    firsts = b.and_(b.add(slots, i64(CACHE_LINE - 1)), i64(-CACHE_LINE))   # first passes follow
    xs, results = _permute_inputs(c)
    with counted_loop(b, 0, n_groups, name="gather") as g:
        first = b.add(firsts, b.mul(g, i64(PERMUTE_PASS.size)))
        _permute_into(c, xs, results, index, first, True)
        further = _pass_int(b, index, first, "next_at")
        with counted_loop(b, 0, _pass_int(b, index, first, "further"), name="pass") as j:
            off = b.add(further, b.mul(j, i64(PERMUTE_PASS.size)))
            _permute_into(c, xs, results, index, off, False)
        _store_group(c, words, g, results)
    return words


def _permute_inputs(c: Core) -> tuple:
    """Each vector's codes (x_pad apart in xin) and a 64-byte result of its group's passes."""
    xs = [gep(c.b, c.xin, i8, i64(v * c.k.x_pad)) if v else c.xin for v in range(c.k.vectors)]
    return xs, [c.b.alloca(vec(i8, 64)) for _ in xs]


def _permute_into(c: Core, xs, results, index, off, first: bool, start=None):
    """The pass at byte `off` of the index (its window at x + start; by default its offset
    read from the record) for every vector: a first pass writes all 64 bytes of `results`, a
    later one those its mask covers."""
    b = c.b
    if not first:
        mask = b.bitcast(b.load(pass_field(b, index, off, "mask", i64), typ=i64, align=4),
                         vec(ir.IntType(1), 64))
    for x, result in zip(xs, results):
        picked = _permute_pass(b, c.k, x, index, off, start)
        b.store(picked if first else b.select(mask, picked, b.load(result)), result)


def _store_group(c: Core, words, g, results):
    """Group g's words (results, one per vector) into the words array."""
    b, n = c.b, c.k.vectors
    if n == 1:
        b.store(b.load(results[0]), gep(b, words, i32, b.mul(g, i64(PERMUTE_GROUP))), align=4)
    else:
        _store_units(b, c.k, words, b.mul(g, i64(PERMUTE_GROUP * n)), results)


def _store_units(b: ir.IRBuilder, k: Kernel, words, at, results):
    """A group's words of B vectors (results) from word `at` on: unit u (k.word_unit slots) of
    vector v at at + (u · B + v) · unit. Four vectors at a time, with units of WORD_UNIT, by a
    4x4 transpose of their 128-bit lanes (_lane_transpose) and one 64-byte store per unit;
    other vectors by stores of parts of their 16 words."""
    n, unit = len(results), k.word_unit
    groups = [b.bitcast(b.load(result), vec(i32, PERMUTE_GROUP)) for result in results]
    four = n // 4 * 4 if unit == WORD_UNIT else 0
    for v0 in range(0, four, 4):
        for u, lanes in enumerate(_lane_transpose(b, groups[v0:v0 + 4])):
            store(b, lanes, words, b.add(at, i64((u * n + v0) * unit)), align=16,
                  elem_type=i32)
    for v in range(four, n):
        for u in range(0, PERMUTE_GROUP, unit):
            part = groups[v] if unit == PERMUTE_GROUP else b.shuffle_vector(
                groups[v], ir.Constant(groups[v].type, None),
                ir.Constant(vec(i32, unit), [*range(u, u + unit)]))
            store(b, part, words, b.add(at, i64(u * n + v * unit)), align=4, elem_type=i32)


def _lane_transpose(b: ir.IRBuilder, rows: list) -> list:
    """Four <16 x i32> rows as 4x4 matrices of 128-bit lanes, transposed: out[u] holds lane u
    of rows 0..3. Two rounds of two-source lane shuffles (vshufi64x2 on AVX-512)."""
    def pick(x, y, lanes):   # lanes of x (0-3) and y (4-7), 4 words each
        return b.shuffle_vector(x, y, ir.Constant(vec(i32, 16),
                                                   [4 * lane + w for lane in lanes for w in range(4)]))
    even = [pick(rows[0], rows[1], (0, 2, 4, 6)), pick(rows[2], rows[3], (0, 2, 4, 6))]
    odd = [pick(rows[0], rows[1], (1, 3, 5, 7)), pick(rows[2], rows[3], (1, 3, 5, 7))]
    return [pick(*even, (0, 2, 4, 6)), pick(*odd, (0, 2, 4, 6)),
            pick(*even, (1, 3, 5, 7)), pick(*odd, (1, 3, 5, 7))]


def _pass_int(b: ir.IRBuilder, index, off, name: str):
    """An int32 field of the pass at byte `off` of `index`, as i64."""
    return b.sext(load(b, pass_field(b, index, off, name, i32), i32, align=4), i64)


def _permute_pass(b: ir.IRBuilder, k: Kernel, x, index, off, start=None):
    """The 64 bytes the pass at byte `off` of the index picks from its window x + start (by
    default the pass's own offset field)."""
    bytes64 = vec(i8, 64)
    start = _pass_int(b, index, off, "offset") if start is None else start
    at = gep(b, x, i8, start)
    lo = b.load(at, typ=bytes64, align=1)
    hi = b.load(gep(b, x, i8, b.add(start, i64(64))), typ=bytes64, align=1)
    idx = b.load(pass_field(b, index, off, "byte_index", bytes64), typ=bytes64, align=1)
    return k.backend.permute_window(b, lo, idx, hi, at)


def pass_field(b: ir.IRBuilder, index, off, name: str, typ):
    """The address of field `name` of the byte-permute pass at byte `off` of `index`, read as
    `typ` (which must have the field's size)."""
    f = PERMUTE_PASS.field(name)
    if byte_size(typ) != f.nbytes:
        raise ContractError(f"permute pass field {name} has {f.nbytes} bytes, read as {typ}")
    return gep(b, index, i8, b.add(off, i64(f.offset)) if f.offset else off)


# --- entry points ---------------------------------------------------------------------------------
def emit_entries(k: Kernel) -> None:
    """N_raw, N and N_loop (see the module docstring), with the cores they call."""
    core_acc, core = emit_core(k, dequantize=False), emit_core(k, dequantize=True)
    _raw_entry(k, core_acc)
    _loop_entry(k, _float_entry(k, core))


def _raw_entry(k: Kernel, core_acc) -> None:
    null = ir.Constant(ptr, None)
    raw, a = define(k.module, k.entry(SPMV_RAW), k.spec.name)
    b = ir.IRBuilder(raw.append_basic_block("entry"))
    call(b, k.entry(SPMV_CORE), core_acc, y=a.y, xin=prepare_x(k, b, a.x_codes), W=a.W, index=a.index,
         panel_ptr=a.panel_ptr, row_scale=null, zcorr=null, x_scale=f32(0.0), bias=null)
    b.ret_void()


def _float_entry(k: Kernel, core) -> ir.Function:
    p, n = k.packed, k.vectors
    fl, a = define(k.module, k.entry(SPMV), k.spec.name)
    fl.attributes.add("noinline")
    b = ir.IRBuilder(fl.append_basic_block("entry"))
    xin = activations(k, b, a.x, a.x_inv_scale) if n == 1 else vector_activations(k, b, a.x,
                                                                                   a.x_inv_scale)
    out = a.y if p.rows_padded == p.rows else alloca(b, f32, p.rows_padded * n,
                                                     align=CACHE_LINE)
    call(b, k.entry(SPMV_CORE), core, y=out, xin=xin, W=a.W, index=a.index, panel_ptr=a.panel_ptr,
         row_scale=a.row_scale, zcorr=a.zcorr, x_scale=a.x_scale, bias=ir.Constant(ptr, None))
    for v in range(n if out is not a.y else 0):   # vector v's rows, unpadded
        with counted_loop(b, 0, p.rows, name="out") as r:
            src, dst = (b.add(r, i64(v * rows)) if v else r for rows in (p.rows_padded, p.rows))
            store(b, load(b, out, f32, src, align=4), a.y, dst, align=4)
    b.ret_void()
    return fl


def _loop_entry(k: Kernel, fl) -> None:
    lp, a = define(k.module, k.entry(SPMV_LOOP), k.spec.name)
    b = ir.IRBuilder(lp.append_basic_block("entry"))
    with counted_loop(b, 0, a.n, name="rep"):
        call(b, k.entry(SPMV), fl, **{n: getattr(a, n) for n in SPMV.names})
    b.ret_void()


# --- input preparation ----------------------------------------------------------------------------
def prepare_x(k: Kernel, b: ir.IRBuilder, codes):
    """What the core reads as xin, from stored codes (padded to x_len): the codes, a copy
    zero-padded to x_pad for permute windows, or their shifted tables; B vectors of codes
    interleaved."""
    if k.vectors > 1:
        return interleave(k, b, codes, k.packed.x_len)
    if k.is_float or k.packed.contiguous:
        return codes
    if k.permute:
        buf = alloca(b, k.elem, k.x_pad, align=CACHE_LINE)
        with counted_loop(b, 0, k.x_pad, name="pad") as c:
            inside = b.icmp_signed("<", c, i64(k.packed.x_len))
            v = load(b, codes, k.elem, b.select(inside, c, i64(0)), align=1)
            store(b, b.select(inside, v, ir.Constant(k.elem, 0)), buf, c, align=1)
        return buf
    table = alloca(b, i32, k.group * k.stride, align=CACHE_LINE)
    with counted_loop(b, 0, k.packed.x_len, name="table") as c:
        _store_shifted(k, b, table, c, b.zext(load(b, codes, k.elem, c, align=k.esize), i32))
    return table


def _store_shifted(k: Kernel, b: ir.IRBuilder, table, c, code):
    """T_j[c] = code << (bits · j) for every table j; `code` an i32 or an i32 vector."""
    for j in range(k.group):
        shift = i32(8 * k.esize * j)
        if isinstance(code.type, ir.VectorType):
            shift = ir.Constant(code.type, [8 * k.esize * j] * code.type.count)
        v = b.shl(code, shift) if j else code
        store(b, v, table, b.add(c, i64(j * k.stride)), align=4, elem_type=i32)


INTERLEAVE_TILE = 16   # words (or codes) per vector transposed at once: one at a time (B loads
# and inserts each, into shifted tables), interleaving 8 int8 vectors of 448 took 1.8 µs; 0.4 µs
# now (native, Zen 4)


def interleave(k: Kernel, b: ir.IRBuilder, src, src_len: int, stride: int | None = None,
               buf=None):
    """xin of a B-vector kernel (module docstring) from B rows of src_len codes (or floats),
    `stride` elements apart (default src_len), zero-padded to x_len: a tile of words (or
    codes) of every row at a time, transposed by one shuffle. Into `buf` when given
    (interleave_buffer), else a new stack buffer. Kernels with byte-permute gathers read the
    B rows as they are, each zero-padded to x_pad (padded_rows)."""
    n, p = k.vectors, k.packed
    per, unit = _interleave_unit(k)
    buf = interleave_buffer(k, b) if buf is None else buf
    if k.permute:
        return padded_rows(k, b, src, src_len, stride or src_len, buf)
    tile, have, stride = INTERLEAVE_TILE, src_len // per, stride or src_len
    with counted_loop(b, 0, have // tile * tile, tile, name="interleave") as w:
        words = _transposed(k, b, src, stride, w, tile)
        store(b, words, buf, b.mul(w, i64(n)), align=4, elem_type=unit)
    with counted_loop(b, have // tile * tile, p.x_len // per, name="interleave_tail") as w:
        inside = b.icmp_signed("<", w, i64(have))
        words = _transposed(k, b, src, stride, b.select(inside, w, i64(0)), 1)
        words = b.select(inside, words, ir.Constant(words.type, None))
        store(b, words, buf, b.mul(w, i64(n)), align=4, elem_type=unit)
    return buf


def interleave_columns(k: Kernel, b: ir.IRBuilder, src, stride: int, start: int, stop: int,
                       buf):
    """Columns start .. stop - 1 (whole words of interleave's layout) of the interleaved xin in
    `buf`, from B rows of codes `stride` apart: the part of rows that `interleave` put into buf
    before and that has been rewritten since (emit.cell's kept codes, stored part by part)."""
    per, unit = _interleave_unit(k)
    first, last = start // per, -(-stop // per)
    tiles = first + (last - first) // INTERLEAVE_TILE * INTERLEAVE_TILE
    for lo, hi, count in ((first, tiles, INTERLEAVE_TILE), (tiles, last, 1)):
        if lo < hi:
            with counted_loop(b, lo, hi, count, name="interleave_part") as w:
                store(b, _transposed(k, b, src, stride, w, count), buf, b.mul(w, i64(k.vectors)),
                      align=4, elem_type=unit)


def reads_interleaved(k: Kernel, owner: Kernel, column: int) -> bool:
    """Whether B-vector kernel k can read the owner's interleaved xin from column `column` on as
    its own: the same interleaved unit, the column on a word's start, and no padding of k's
    that would read the owner's next columns instead of zeros."""
    same = (not (k.is_float or k.permute or owner.permute) and k.elem == owner.elem
            and _interleave_unit(k) == _interleave_unit(owner))
    per = _interleave_unit(k)[0]
    return (same and column % per == 0 and k.packed.x_len == k.packed.cols
            and column + k.packed.x_len <= owner.packed.x_len)


def interleaved_at(k: Kernel, b: ir.IRBuilder, buf, column: int):
    """Where column `column` starts in a B-vector kernel's interleaved xin `buf`."""
    per, unit = _interleave_unit(k)
    return gep(b, buf, unit, i64(column // per * k.vectors)) if column else buf


def interleave_buffer(k: Kernel, b: ir.IRBuilder):
    """Stack space for the interleaved xin of a B-vector kernel (B padded rows of codes for
    byte-permute gathers)."""
    if k.permute:
        return alloca(b, k.elem, k.x_pad * k.vectors, align=CACHE_LINE)
    per, unit = _interleave_unit(k)
    return alloca(b, unit, k.packed.x_len // per * k.vectors, align=CACHE_LINE)


COPY_BYTES = 64   # bytes per vector load and store of padded_rows


def padded_rows(k: Kernel, b: ir.IRBuilder, src, src_len: int, stride: int, buf):
    """xin of a B-vector kernel with byte-permute gathers: row v of src (src_len int8 codes,
    rows `stride` apart) at buf + v · x_pad, zero-padded to x_pad (at least 64): the padding
    zeroed by 64-byte stores (the last one ending at x_pad), then the row copied over it."""
    bytes64, main = vec(i8, COPY_BYTES), src_len // COPY_BYTES * COPY_BYTES
    zeros = sorted({*range(main, k.x_pad - COPY_BYTES + 1, COPY_BYTES), k.x_pad - COPY_BYTES})
    for v in range(k.vectors):
        row, out = gep(b, src, i8, i64(v * stride)), gep(b, buf, i8, i64(v * k.x_pad))
        for at in zeros:
            b.store(ir.Constant(bytes64, None), gep(b, out, i8, i64(at)), align=1)
        with counted_loop(b, 0, main, COPY_BYTES, name="copy") as c:
            b.store(b.load(gep(b, row, i8, c), typ=bytes64, align=1), gep(b, out, i8, c),
                    align=1)
        with counted_loop(b, main, src_len, name="copy_tail") as c:
            store(b, load(b, row, i8, c, align=1), out, c, align=1)
    return buf


def _interleave_unit(k: Kernel):
    """(columns, type) of what a B-vector kernel interleaves: int32 words of `group` codes
    (contiguous integer panels), floats, or single codes (gathering panels)."""
    if k.is_float:
        return 1, f32
    return (k.group, i32) if k.codes_input else (1, k.elem)


def _transposed(k: Kernel, b: ir.IRBuilder, src, stride: int, w, count: int):
    """Words w .. w + count - 1 of the B rows of src (`stride` elements apart), as one vector
    ordered by word, then row."""
    per, unit = _interleave_unit(k)
    rows = []
    for v in range(k.vectors):
        at = b.add(b.mul(w, i64(per)), i64(v * stride)) if v else b.mul(w, i64(per))
        rows.append(b.load(gep(b, src, k.elem, at), typ=vec(unit, count), align=k.esize))
    return interleaved(b, rows)


def vector_activations(k: Kernel, b: ir.IRBuilder, x, x_inv, stride: int | None = None):
    """xin of a B-vector kernel for float x [B, cols] (rows `stride` floats apart, default
    cols): each row quantized as `activations` does, into a [B, x_len] buffer of codes, then
    interleaved; for byte-permute gathers straight into xin's rows, x_pad apart (quantize pads
    each to x_pad)."""
    p = k.packed
    codes = None if k.is_float or k.permute else alloca(b, k.elem, p.x_len * k.vectors,
                                                        align=CACHE_LINE)
    buf = interleave_buffer(k, b)
    if k.is_float:
        return interleave(k, b, x, p.cols, stride, buf)
    rows, row_len = (buf, k.x_pad) if k.permute else (codes, p.x_len)
    with counted_loop(b, 0, k.vectors, name="vector") as v:
        row = gep(b, x, f32, b.mul(v, i64(stride or p.cols)))
        quantize(k, b, row, x_inv, gep(b, rows, k.elem, b.mul(v, i64(row_len))), put_codes,
                 row_len)
    return buf if k.permute else interleave(k, b, codes, p.x_len, buf=buf)


def vector_buffers(k: Kernel, b: ir.IRBuilder) -> tuple:
    """(rows, interleaved) stack buffers of a B-vector kernel's input: the B rows that
    interleave_rows reads (float kernels: cols floats each; codes: x_len each; None for
    byte-permute gathers, whose rows are xin's own, x_pad apart) and xin. Allocate them once,
    in the entry block, when the core runs in a loop."""
    p = k.packed
    rows = (None if k.permute else
            alloca(b, f32, p.cols * k.vectors, align=CACHE_LINE) if k.is_float else
            alloca(b, k.elem, p.x_len * k.vectors, align=CACHE_LINE))
    return rows, interleave_buffer(k, b)


def interleave_rows(k: Kernel, b: ir.IRBuilder, rows, buf):
    """xin of a B-vector kernel from the rows of vector_buffers, into `buf`."""
    return interleave(k, b, rows, k.packed.cols if k.is_float else k.packed.x_len, buf=buf)


def xin_buffer(k: Kernel, b: ir.IRBuilder, length: int = 0):
    """Stack space for what the core reads (None when float x can be read in place), at
    least `length` codes long. Allocate it once, in the entry block, when the core runs in
    a loop."""
    p = k.packed
    if k.is_float:
        return None if p.x_len == p.cols else alloca(b, f32, p.x_len, align=CACHE_LINE)
    if not k.codes_input:
        return alloca(b, i32, k.group * k.stride, align=CACHE_LINE)
    return alloca(b, k.elem, max(k.x_pad, length), align=CACHE_LINE)


def xin_at(k: Kernel, b: ir.IRBuilder, xin, column: int):
    """Where column `column` starts in xin (for a kernel of the same kind of input that
    reads this kernel's xin from there on)."""
    return gep(b, xin, k.elem if k.codes_input else i32, i64(column)) if column else xin


def activations(k: Kernel, b: ir.IRBuilder, x, x_inv, buf=None):
    """xin for float x: quantized codes (saturating, half to even) or their shifted tables,
    zero-padded to x_len; float kernels get x itself (copied if it needs padding)."""
    p = k.packed
    buf = xin_buffer(k, b) if buf is None else buf
    if k.is_float:
        if p.x_len == p.cols:
            return x
        with counted_loop(b, 0, p.cols, name="copy") as c:
            store(b, load(b, x, f32, c, align=4), buf, c, align=4)
        with counted_loop(b, p.cols, p.x_len, name="pad") as c:
            store(b, f32(0.0), buf, c, align=4)
        return buf
    return quantize(k, b, x, x_inv, buf, put_codes)


def quantize(k: Kernel, b: ir.IRBuilder, x, x_inv, buf, put, length: int | None = None):
    """The codes of float x [cols], zero-padded to `length`, written by put(k, b, buf, c,
    codes). By default x_pad for one vector, x_len for B vectors (a row of the [B, x_len]
    codes that `interleave` reads)."""
    p = k.packed
    n = k.backend.vector_bits // 32   # floats per vector: quantize n at a time
    main = p.cols // n * n
    if main:
        with counted_loop(b, 0, main, n, name="quant") as c:
            v = b.load(gep(b, x, f32, c), typ=vec(f32, n), align=4)
            put(k, b, buf, c, code(k, b, v, x_inv))
    with counted_loop(b, main, p.cols, name="quant_tail") as c:
        put(k, b, buf, c, code(k, b, load(b, x, f32, c, align=4), x_inv))
    length = length or (k.x_pad if k.vectors == 1 else p.x_len)
    with counted_loop(b, p.cols, length, name="pad") as c:
        put(k, b, buf, c, i32(0))
    return buf


def code(k: Kernel, b: ir.IRBuilder, v, x_inv):
    """The stored code (as i32, zero point added) of float v (scalar or vector): v · x_inv
    saturated to the format's range and rounded half to even. The rounding and the zero point
    are one addition: v + (M + zp) (M = ROUND_MAGIC, IEEE round to nearest even) holds
    round(v) + zp + 2²² in its low mantissa bits, so the code is its bits minus M's (the stores
    keep only the low 8 or 16 bits: no float-to-int conversion, no separate rounding)."""
    s = k.spec
    if s.dtype == "int8":
        lo, hi, zp = (-128.0, 127.0, 128) if s.x_signed else (0.0, 255.0, 0)
    else:
        lo, hi, zp = -32768.0, 32767.0, 0
    vt = v.type
    n = vt.count if isinstance(vt, ir.VectorType) else 0
    const = (lambda t, c: ir.Constant(t, [c] * n)) if n else (lambda t, c: ir.Constant(t, c))
    x_inv = splat(b, x_inv, n) if n else x_inv
    v = clamp(b, b.fmul(v, x_inv), const(vt, lo), const(vt, hi))
    it = vec(i32, n) if n else i32
    magic = b.bitcast(b.fadd(v, const(vt, ROUND_MAGIC + zp)), it)
    return b.sub(magic, const(it, ROUND_BITS))


def put_codes(k: Kernel, b: ir.IRBuilder, buf, c, codes):
    """Store code(s) for column c on: into the shifted tables (gathering panels of one vector,
    as the unsigned 8/16-bit pattern) or as stored codes (what `interleave` reads for a
    B-vector kernel)."""
    n = codes.type.count if isinstance(codes.type, ir.VectorType) else 0
    narrow = b.trunc(codes, vec(k.elem, n) if n else k.elem)
    if not k.codes_input and k.vectors == 1:
        _store_shifted(k, b, buf, c, b.zext(narrow, codes.type))
    else:
        store(b, narrow, buf, c, align=k.esize, elem_type=k.elem)



def stack_bytes(spec: KernelSpec, packed: Packed, gen) -> int:
    """Stack bytes a call of the kernel's entry points needs for its buffers."""
    return Kernel.of(spec, packed, gen, None).stack_bytes


def build_module(spec: KernelSpec, packed: Packed, gen) -> ir.Module:
    """A module holding one kernel's core and entry points."""
    m = ir.Module(name=spec.name)
    emit_entries(Kernel.of(spec, packed, gen, m))
    return m
