"""Plan one matrix-vector kernel: look at a matrix's sparsity, block structure and size, and at the
CPU generation, and pick format, block, ISA backend and code variant.

The untuned choice comes from a cost model (panels x instructions per panel). Autotuning (the
run stage: jitvoc.matvec.tune) compiles the `candidates` and times them; its decisions, kept by
jitvoc.decisions, come back here as data (`decided_plan`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import config, isa
from ..errors import InputError, JitvocError
from ..layout import PERMUTE_SLOTS, BLOCKS, Packed, block_mask, pack, permute_slots_fit
from ..quant import WEIGHT_FORMATS, check_accumulators, row_l1
from ..spec import GROUP, KernelSpec

GROUPED_UNROLL_LIMIT = 64  # panels per row block fully unrolled by the grouped variant
# The most instructions (baked_instructions) a baked kernel may unroll. Measured baked vs grouped
# (build_matvec(variant=...), MatVec.time_call; this 2-core Zen 4 VM, loaded; int8 unless noted;
# "estimate: baked vs grouped ns/call (compile s)"):
# - baked wins below it: O1/O3 cascadelake 1635: 333 vs 451, x86-64-v3 1962: 449 vs 547;
#   O2/O4 int16 x86-64 2172: 734 vs 1127 (1.8 vs 1.2 s); 1x1..8x4 blocks native 106-1264: by 20-35%;
# - a tie near it: O1/O3 x86-64 2616: 1894 vs 1814 (6.1 vs 1.8 s); O1/O3 int16 x86-64-v3 2536:
#   565 vs 572; 32x64 1x1 at 60% 2504: 635 vs 627 (1.9 vs 0.5 s);
# - grouped wins above it: R 5% cascadelake 9675: 9172 vs 7847 (8.4 vs 1.4 s); GRU-A int16 native
#   4200: 1579 vs 1017. Issue 12's 32x64 1x1 matrix (4096; 2.2 MB of IR) is no longer baked.
# Measured on Zen 4; a generation where byte-permute kernels measured otherwise says so in
# isa.KERNEL_CHOICES (bake_limit_permute), a backend where the others did in isa.BAKE_LIMITS.
# Also the compile budget of a baked kernel asked for (autotune's candidates, variant="baked").
BAKE_LIMIT = 2500
BAKED_ACCUMULATORS = 2     # R at 3-5%, O1/O3, GRU-A: 2 beat 4 by 3-7% (fewer to zero and sum)
# (unroll, accumulators) of the index-driven and dense kernels, where a backend measured no other
# (one-vector float32 kernels: isa.FLOAT_KERNELS, "idx_loop").
LOOP = (8, 4)
# (variant, unroll, accumulators) of sparse integer kernels inside the fused loop: the index-
# driven loop runs as fast there as row blocks grouped by panel count (random_model(896) at
# 24 kHz, side by side on Zen 4: int8 4.28 against 4.32 µs/sample, int16 6.28 against 6.19) and
# compiles 3-5x faster (the loop with its cores: int8 0.94 s against 3.22 s, int16 1.18 s against
# 5.77 s), and a first run's wait is mostly compiling.
INLINE_KERNEL = ("idx", 4, 2)
# An in-loop one-vector kernel with byte-permute gathers has its pattern compiled in
# (KernelSpec.pattern): its prologue is straight-line code, no loop reading each group's passes
# from the index (emit.spmv.permute_words). random_model(896)'s int8 cell (order rotated every
# round, CPU time, Zen 4, quiet): 3.874 / 3.893 (two engines of main's code) -> 3.768 µs per
# sample (R's alone 3.841); O1 and O3, O2 and O4 then need a core each, not one per pair: the
# shipped model's cold engine 0.53-0.60 -> 0.62-0.68 s (bench/README.md, "Seventh round").
# Accumulator sets of a kernel for B > 1 vectors: its B chains per panel already hide the
# latency of the dot products, and 2 sets x 16 vectors would not fit 32 registers.
VECTORS_ACCUMULATORS = 1


@dataclass(frozen=True, eq=False, kw_only=True)
class Plan:
    """Everything a kernel needs besides its machine code."""
    spec: KernelSpec
    packed: Packed
    row_scale: np.ndarray   # float32 [rows] (ones for float32)
    w_codes: np.ndarray     # the quantized (or float32) weights, [rows, cols]


def kernel_index(plan: Plan) -> np.ndarray:
    """The index array the planned kernel reads (see jitvoc.layout)."""
    spec = plan.spec
    if spec.x_permute:
        return plan.packed.permute_gathers(spec.x_permute).index
    return plan.packed.kernel_index(spec.x_stride)


def check_matrix(w) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise InputError(f"weight matrix must be 2-D, got shape {w.shape}")
    if 0 in w.shape:
        raise InputError(f"weight matrix is empty (shape {w.shape})")
    if not np.issubdtype(w.dtype, np.number):
        raise InputError(f"weight matrix must be numeric, got dtype {w.dtype}")
    w = w.astype(np.float32)
    if not np.isfinite(w).all():
        raise InputError(f"weight matrix holds {np.count_nonzero(~np.isfinite(w))} NaN/inf values")
    return w


# Rows quantized per step: float temporaries of at most 1 MB. NumPy has the kernel back arrays
# of 4 MB or more with huge pages, whose first touch compacted memory: planning the shipped
# model's gru.R whole took 0.1-0.2 s instead of 0.04 in about one cold load in four
# (bench/README.md, "The user path, ninth round").
QUANTIZE_STEP_BYTES = 1 << 20


def quantize_weights(w: np.ndarray, dtype: str, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """(codes, row scales) of w (where `mask`, if given, else 0) in dtype's weight format, a
    few rows at a time (QUANTIZE_STEP_BYTES; codes and scales are per row, so the same as of
    the whole); refused if a row's int32 accumulator could overflow (check_accumulators)."""
    if dtype == "float32":
        w = w if mask is None else np.where(mask, w, np.float32(0))
        return w, np.ones(w.shape[0], dtype=np.float32)
    if dtype not in WEIGHT_FORMATS:
        raise InputError(f"dtype must be int8, int16 or float32, got {dtype!r}")
    step = max(1, QUANTIZE_STEP_BYTES // (8 * max(1, w.shape[1])))
    parts = []
    for a in range(0, max(1, len(w)), step):
        rows = w[a:a + step] if mask is None else np.where(mask[a:a + step], w[a:a + step],
                                                          np.float32(0))
        codes, scale = WEIGHT_FORMATS[dtype].quantize(rows)
        parts.append((codes, scale, row_l1(codes)))
    check_accumulators(np.concatenate([l1 for _, _, l1 in parts]), dtype)
    if len(parts) == 1:
        return parts[0][:2]
    return np.concatenate([c for c, _, _ in parts]), np.concatenate([s for _, s, _ in parts])


def panel_count(mask: np.ndarray, block: tuple, group: int) -> int:
    bm = block_mask(mask, block)
    cols_per_rb = bm.sum(axis=1) * block[1]
    return int(np.sum(-(-cols_per_rb // group)))


# A 512-bit integer dot product costs twice a 256-bit one: Zen 4 runs it in two halves.
# Measured (native int8, 8x4 patterns, `jitvoc bench kernels`): 8x4 panels (256-bit) beat 16x4
# panels holding the same non-zeros (512-bit) by 1.4x on R at 5% and 1.9x on GRU-A at 10%, and
# by 1.1-1.2x on the Intel VM of issue 14.
HALF_RATE_BITS = 256


def _dot_cost(backend: str, dtype: str, lanes: int, gen) -> float:
    """Rough cycles for one panel's products on this backend (plain IR for odd widths), in
    256-bit instructions; a one-row float32 panel (a scalar multiply-add) as measured on the
    backend (isa.FLOAT_KERNELS, "row_panel")."""
    if dtype == "float32":
        if lanes == 1:
            return isa.float_kernel(backend, "row_panel", 1.0)
        return max(1.0, lanes * 32 / isa.vector_bits(backend))
    kind = "dot4" if dtype == "int8" else "dot2"
    width = isa.dot_width(backend, gen, kind, lanes)
    if not width:
        return 2.0 * lanes
    per_instr = {"accumulate": 1.0, "maddubs": 2.0, "madd": 1.0, "widen_madd": 5.0}[
        isa.dot_form(backend, gen, kind)]
    return per_instr * lanes / width * max(1, width * 32 // HALF_RATE_BITS)


# Relative cost of fetching one panel's activations, measured with `jitvoc bench kernels`
# (ns per panel, native and haswell, R at 5-100%): dense and contiguous panels read x directly,
# gathering panels pay for their tables (or, with VBMI, for the byte-permute prologue and one
# word load per panel: 1.3 ns per 16x1 panel against 0.72 ns per dense panel on a 1x1 pattern
# at 10%, native int8 on Zen 4; 0.66 against 0.37 on R at 5% on Ice Lake).
# B > 1 vectors: a gathering panel costs "tables" per vector, by byte permutes or by shuffles
# of its columns' B codes (a 1x1 pattern at 2%, 512x512, native int8, B = 16: 16x1 panels by
# shuffles 13,970 ns, 8x4 panels 19,160, dense 22,770: 0.76 against 0.31 ns per panel and
# vector, 2 x (1 + 0.3) against 1 x (1 + 0.05) in the model's units; B = 8, 16x1 by byte
# permutes 7,262 ns, 8x4 9,109). So for this model's matrices 16x1 stays the cheapest shape at
# every B, as measured (bench/README.md, "Fourth round: the products").
X_COST = {"dense": 0.0, "contiguous": 0.05, "permute": 0.8, "tables": 0.3}
ROW_BLOCK_COST = 4.0   # panels' worth of work per row block (loop control, epilogue)
# The most bytes of byte-permute words (4 per panel and vector) a B-vector kernel builds. A
# panel's B words lie together (emit.spmv.Kernel.word_unit: in 16 · B bytes), so past L1 they
# cost few cache lines a panel, and byte permutes beat shuffles at every B measured, R's 121 KiB
# at B = 16 included (native int8, Zen 4, 32 KiB L1; ns per call, byte permutes against
# shuffles, medians of 9, bench/kernel_variants.py, bench/README.md "Issue 15: B = 8, third
# round"): R 2688x896 at 5% B = 2 3,122 vs 4,067, B = 4 5,060 vs 5,377, B = 8 10,142 vs 12,601,
# B = 16 20,757 vs 25,343; GRU-A 1152x384 at 10% B = 16 6,425 vs 8,685; O1/O3 448x448 at 10%
# B = 16 2,927 vs 4,159. Past 128 KiB: not measured (when each vector's words lay apart, R's
# 60 KiB at B = 8 lost to the shuffles: 12,100 vs 10,894).
PERMUTE_WORDS_BYTES = 128 * 1024


def estimate(mask: np.ndarray, block, dtype: str, backend: str, gen, dense: bool = False,
             vectors: int = 1) -> float:
    """The cost model: estimated work per call of a kernel with this layout for B = `vectors`
    vectors, in dense panels (the weights are loaded once for all B, but every vector pays for
    its products and its activations)."""
    group = GROUP[dtype]
    rows, cols = mask.shape
    lanes = 16 if dense else block[0]
    if dense:
        panels, fetch = -(-rows // lanes) * -(-cols // group), X_COST["dense"]
    else:
        panels = panel_count(mask, block, group)
        gather = block[1] % group != 0
        can_permute = vectors == 1 and gather and permute_capable(dtype, block, backend, gen,
                                                                  panels)
        fetch = X_COST["permute" if can_permute else "tables" if gather else "contiguous"]
    return vectors * (panels * _dot_cost(backend, dtype, lanes, gen) * (1 + fetch)
                      + ROW_BLOCK_COST * -(-rows // lanes))


def permute_capable(dtype: str, block, backend: str, gen, panels: int,
                    vectors: int = 1, forced: bool = False) -> bool:
    """Whether `panels` panels of this block gather their activations by byte permutes (the
    backend's isa.GATHERS entry on this CPU) for B = `vectors`: if their words have slots
    (layout.PERMUTE_SLOTS) and, unless `forced`, the gather was measured faster for this B
    and these words (its "vectors" and "words_bytes"; for B > 1 PERMUTE_WORDS_BYTES)."""
    g = isa.gather(backend, gen)
    if not (dtype == "int8" and block[0] == 16 and g and permute_slots_fit(panels)):
        return False
    words = 4 * panels * vectors
    return forced or (vectors <= g.get("vectors", vectors)
                      and words <= g.get("words_bytes", words)
                      and (vectors == 1 or words <= PERMUTE_WORDS_BYTES))


def default_block(mask: np.ndarray, dtype: str, backend: str, gen, vectors: int = 1):
    """The cheapest layout by the cost model for B = `vectors`: a block of BLOCKS, or None for
    dense."""
    costs = {blk: estimate(mask, blk, dtype, backend, gen, vectors=vectors) for blk in BLOCKS}
    costs[None] = estimate(mask, None, dtype, backend, gen, dense=True, vectors=vectors)
    return min(costs, key=costs.get)


def permute_window(packed: Packed, dtype: str, backend: str, gen, vectors: int = 1,
                   forced: bool = False) -> int:
    """The byte-permute window for gathering int8 panels of 16 rows for B = `vectors`, if the
    CPU has one (and, unless `forced`, it is worth it: permute_capable)."""
    if packed.contiguous or not permute_capable(dtype, packed.block, backend, gen,
                                                packed.n_panels, vectors, forced):
        return 0
    return isa.gather_window(backend, gen)


def _default_variant(mask, block, dtype, backend, gen, vectors: int = 1) -> str:
    """Measured (`jitvoc bench`): for sparse integer kernels the whole pattern baked into
    straight-line code wins when it is small enough to compile quickly and has the instruction
    cache to itself; else row blocks grouped by panel count. float32 keeps the index-driven loop
    (one layout for every generation). B > 1 vectors: grouped (native int8, 1152x384 at 10%, B
    = 2: baked 2470 ns, grouped 1550, idx 1770; on R at 5%, B = 8: grouped 12.2 µs, idx 12.9).
    Byte-permute kernels bake up to the limit measured on their generation, where it differs
    (isa.KERNEL_CHOICES, "bake_limit_permute"), else their gather's (isa.GATHERS); the others
    up to their backend's (isa.BAKE_LIMITS), else BAKE_LIMIT."""
    if dtype == "float32":
        return "idx"
    if vectors > 1:
        return "grouped"
    panels, permutes = _gathering(mask, block, dtype, backend, gen)
    limit = (isa.kernel_choice(gen, ("bake_limit_permute", dtype, 1),
                               isa.gather(backend, gen).get("bake_limit", BAKE_LIMIT))
             if permutes else isa.bake_limit(backend, dtype, BAKE_LIMIT))
    return "baked" if _baked_size(panels, permutes, block, dtype, backend, gen) <= limit \
        else "grouped"


def _gathering(mask, block, dtype, backend, gen) -> tuple[int, bool]:
    """(panels, whether they gather their activations by byte permutes) of a one-vector kernel
    on this block."""
    group = GROUP[dtype]
    panels = panel_count(mask, block, group)
    return panels, bool(block[1] % group) and permute_capable(dtype, block, backend, gen, panels)


def baked_instructions(mask, block, dtype, backend, gen) -> int:
    """Estimated instructions of a baked kernel's straight-line code: per panel its products
    over the lanes of the backend's widest fitting vector (one per product in plain IR, where
    no vector width fits), plus one load per shifted table its activations are gathered from."""
    return _baked_size(*_gathering(mask, block, dtype, backend, gen), block, dtype, backend, gen)


def _baked_size(panels: int, permutes: bool, block, dtype, backend, gen) -> int:
    """baked_instructions of `panels` panels, gathering by byte permutes or not."""
    group = GROUP[dtype]
    if dtype == "float32":
        width = min(block[0], isa.vector_bits(backend) // 32)
    else:
        width = isa.dot_width(backend, gen, "dot4" if dtype == "int8" else "dot2", block[0])
    products = block[0] * group
    dots = -(-block[0] // width) if width else products
    tables = group if block[1] % group and not permutes else 0
    return panels * (dots + tables)


def build_plan(w_codes, row_scale, mask, dtype: str, gen, *, block: tuple | None = None,
               isa_name: str | None = None, variant: str | None = None,
               unroll: int | None = None, accumulators: int | None = None, x_signed: bool = True,
               x_stride: int = 0, permute: bool | None = None, inline: bool = False,
               vectors: int = 1) -> Plan:
    """The untuned plan, or the one the arguments pin down. `inline`: the kernel runs inside a
    fused loop (INLINE_KERNEL for a sparse integer kernel whose variant is not given; float32
    kernels there keep LOOP, the order of their sums).
    `permute`: byte-permute gathers where the planner finds them worth it (None: where the
    CPU has them and, for B > 1, their words fit), wherever the CPU has them (True) or never
    (False).
    `vectors`: B, the vectors multiplied per call."""
    backend = isa_name or isa.best(gen)
    if block is None:
        block = default_block(mask, dtype, backend, gen, vectors)
    dense = block is None or variant == "dense"
    if dense:
        block = (16, w_codes.shape[1])
    block = tuple(block)
    if not dense and (len(block) != 2 or block[0] < 1 or block[1] < 1):
        raise InputError(f"block must be (rows, cols) of positive ints, got {block}")
    if variant is None and inline and not dense and dtype != "float32":
        variant, unroll, accumulators = INLINE_KERNEL
    if variant is None:
        variant = "dense" if dense else _default_variant(mask, block, dtype, backend, gen,
                                                         vectors)
    if variant in ("grouped", "baked"):
        unroll = 1  # every panel is unrolled already
    if accumulators is None and vectors > 1:
        accumulators = VECTORS_ACCUMULATORS
    if (unroll, accumulators) == (None, None) and variant == "idx" and not inline:
        unroll, accumulators = _idx_loop(block, dtype, backend)   # B > 1 has its accumulators
    unroll = LOOP[0] if unroll is None else unroll
    if accumulators is None:
        accumulators = BAKED_ACCUMULATORS if variant == "baked" else LOOP[1]
    packed = pack(w_codes, block, GROUP[dtype], mask=mask, dense=dense,
                  by_count=variant == "grouped")
    # permute=True asks for byte permutes whatever the size of their words and B
    window = (permute_window(packed, dtype, backend, gen, vectors, forced=bool(permute))
              if permute in (None, True) else 0)
    if permute and not window:
        raise InputError("byte-permute gathers need AVX-512 VBMI or AVX2, int8, 16-row blocks "
                         f"and at most {PERMUTE_SLOTS} panels")
    compiled_in = variant in ("baked", "grouped") or bool(
        inline and window and vectors == 1 and isa.gather(backend, gen)["straight"])
    spec = KernelSpec(dtype=dtype, block=(block[0], 0) if variant == "dense" else block,
                      isa=backend, variant=variant, rows=w_codes.shape[0], cols=w_codes.shape[1],
                      unroll=unroll, accumulators=accumulators,
                      pattern=packed.pattern_hash() if compiled_in else "",
                      x_signed=x_signed, x_stride=0 if packed.contiguous or window else x_stride,
                      x_permute=window,
                      grouped_unroll=GROUPED_UNROLL_LIMIT if variant == "grouped" else 0,
                      vectors=vectors)
    gathers = ""
    if window and config.debug_level() >= 1:
        g = packed.permute_gathers(window)
        gathers = f", byte-permute gathers: {g.n_groups} groups, {g.passes.mean():.2f} windows each"
    config.debug(1, f"plan {spec.name}: {packed.n_panels} panels of {packed.bh}x{packed.group}, "
                 f"{np.count_nonzero(mask)}/{mask.size} non-zeros{gathers}")
    return Plan(spec=spec, packed=packed, row_scale=row_scale, w_codes=w_codes)


def _idx_loop(block, dtype: str, backend: str) -> tuple[int, int]:
    """(unroll, accumulators) of a one-vector index-driven kernel outside a fused loop: for
    float32 panels of several rows what the backend measured (isa.FLOAT_KERNELS), else LOOP."""
    if dtype == "float32" and block[0] > 1:
        return isa.float_kernel(backend, "idx_loop", LOOP)
    return LOOP


def fits(mask: np.ndarray, block: tuple) -> bool:
    """Whether the pattern is made of whole blocks of this shape (no zero stored)."""
    return int(block_mask(mask, block).sum()) * block[0] * block[1] == np.count_nonzero(mask)


def candidates(w_codes, row_scale, mask, dtype, gen, x_signed=True) -> list[Plan]:
    """What autotune tries: every block shape the pattern is made of, and the two best by the
    cost model, x code variants (x gathers by table or byte permute, where both exist), and
    dense."""
    backend = isa.best(gen)
    ranked = sorted(BLOCKS, key=lambda blk: estimate(mask, blk, dtype, backend, gen))[:2]
    blocks = [blk for blk in BLOCKS if fits(mask, blk)]
    out = []
    for blk in blocks + [blk for blk in ranked if blk not in blocks]:
        instructions = baked_instructions(mask, blk, dtype, backend, gen)
        for variant, u, a in (("idx", 4, 2), ("idx", 8, 4), ("grouped", 1, 4),
                              ("baked", 1, BAKED_ACCUMULATORS)):
            if variant == "baked" and instructions > BAKE_LIMIT:
                continue
            options = dict(block=blk, isa_name=backend, variant=variant, unroll=u,
                           accumulators=a, x_signed=x_signed)
            plan = build_plan(w_codes, row_scale, mask, dtype, gen, **options)
            out.append(plan)
            if plan.spec.x_permute:  # the same kernel with table gathers
                out.append(build_plan(w_codes, row_scale, mask, dtype, gen, **options,
                                      permute=False))
    for u, a in ((4, 2), (4, 4), (8, 4)):
        out.append(build_plan(w_codes, row_scale, mask, dtype, gen, isa_name=backend,
                              variant="dense", unroll=u, accumulators=a, x_signed=x_signed))
    return out


def decided_plan(d, w_codes, row_scale, mask, dtype, gen, x_signed) -> Plan | None:
    """The plan a cached decision names, if it is one for this matrix and request and rebuilds
    the very kernel it recorded; else None (the caller tunes afresh)."""
    try:
        spec = KernelSpec(**dict(d, block=tuple(d["block"])))
        if (spec.dtype, spec.x_signed, (spec.rows, spec.cols)) != (dtype, x_signed, w_codes.shape):
            return None
        plan = plan_from_decision(d, w_codes, row_scale, mask, gen)
    except (JitvocError, KeyError, TypeError, ValueError) as e:
        config.debug(1, f"ignoring an unusable autotune decision: {type(e).__name__}: {e}")
        return None
    return plan if plan.spec == spec else None


def plan_from_decision(d: dict, w_codes, row_scale, mask, gen) -> Plan:
    variant = d["variant"]
    block = None if variant == "dense" else tuple(d["block"])
    return build_plan(w_codes, row_scale, mask, d["dtype"], gen, block=block, isa_name=d["isa"],
                      variant=variant, unroll=d["unroll"], accumulators=d["accumulators"],
                      x_signed=d["x_signed"], x_stride=d["x_stride"],
                      permute=bool(d["x_permute"]))
