"""JIT matrix-vector kernels against the NumPy reference: integer results bit-exact, float32 within
the rounding bound of its sums, for every CPU generation this host can run."""
import zlib

import numpy as np
import pytest

import jitvoc
from jitvoc import cpu, isa, layout
from jitvoc.emit.isa import Backend
from jitvoc.errors import InputError, ISAError, UnsupportedCPU
from jitvoc.layout import BLOCKS
from jitvoc.matvec import MatVec, build_matvec
from jitvoc.plan import matvec as planner
from jitvoc.reference.matvec import matvec_codes, matvec_float, matvec_quantized
from jitvoc.spec import DTYPES, VARIANTS

from conftest import RUNNABLE, diagonal

EPS32 = np.finfo(np.float32).eps


def _sparse(rng, shape, density, block=(1, 1)):
    bh, bw = block
    grid = rng.random((-(-shape[0] // bh), -(-shape[1] // bw))) < density
    mask = np.kron(grid, np.ones(block, bool))[:shape[0], :shape[1]]
    return rng.standard_normal(shape).astype(np.float32) * mask


def _case(name):
    """Named edge cases: (W, x), the same data in every run (seeded by the name's CRC-32)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name == "ragged_37x29":            # rows and columns not multiples of any block
        w = _sparse(rng, (37, 29), 0.3)
    elif name == "empty_row_blocks":
        w = _sparse(rng, (64, 40), 0.3)
        w[16:48] = 0
    elif name == "all_zero":
        w = np.zeros((32, 24), np.float32)
    elif name == "dense":
        w = rng.standard_normal((33, 20)).astype(np.float32)
    elif name == "extremes":              # weights at ±limit, x saturating its format
        w = np.where(rng.random((32, 64)) < 0.5, 1.0, -1.0).astype(np.float32)
        x = np.where(rng.random(64) < 0.5, 1e3, -1e3).astype(np.float32)
        return w, x
    elif name == "1xN":
        w = rng.standard_normal((1, 70)).astype(np.float32)
    elif name == "Nx1":
        w = rng.standard_normal((70, 1)).astype(np.float32)
    elif name == "blocks_16x1":
        w = _sparse(rng, (96, 64), 0.2, (16, 1))
    elif name == "wide_sparse_16x1":      # panels spread over 1000 columns: multi-pass gathers
        w = _sparse(rng, (48, 1000), 0.03, (16, 1))
    else:
        raise KeyError(name)
    return w, rng.standard_normal(w.shape[1]).astype(np.float32)


CASES = ["ragged_37x29", "empty_row_blocks", "all_zero", "dense", "extremes", "1xN", "Nx1",
         "blocks_16x1", "wide_sparse_16x1"]


def _unaligned(x):
    """x, stored one float past a 64-byte boundary."""
    buf = np.zeros(len(x) + 17, np.float32)
    off = (-buf.ctypes.data % 64) // 4 + 1
    view = buf[off:off + len(x)]
    view[:] = x
    assert view.ctypes.data % 64 != 0
    return view


def check(mv, w, x):
    y = mv(_unaligned(x))
    if mv.kernel.dtype == "float32":
        bound = (w.shape[1] + 2) * EPS32 * (np.abs(w) @ np.abs(x)) + 1e-30
        assert np.all(np.abs(y - matvec_float(w, x)) <= bound), mv.spec
        return
    fmt = mv.format_for(x)
    assert np.array_equal(y, matvec_quantized(mv.plan.w_codes, mv.plan.row_scale, x, fmt)), \
        mv.spec
    codes = fmt.stored(x)
    assert np.array_equal(mv.raw(codes), matvec_codes(mv.plan.w_codes, codes)), mv.spec


@pytest.mark.parametrize("gen, dtype, block", diagonal(RUNNABLE, DTYPES, BLOCKS))
def test_every_generation_every_format(gen, dtype, block):
    for name in CASES:
        w, x = _case(name)
        check(build_matvec(w, dtype=dtype, cpu=gen, block=block), w, x)


@pytest.mark.parametrize("gen, dtype, variant", diagonal(RUNNABLE, DTYPES, VARIANTS))
def test_code_variants(gen, dtype, variant):
    for name in ("ragged_37x29", "empty_row_blocks", "blocks_16x1", "wide_sparse_16x1",
                 "extremes"):
        w, x = _case(name)
        check(build_matvec(w, dtype=dtype, cpu=gen, block=(16, 1), variant=variant), w, x)


def test_index_driven_kernel_serves_every_pattern_of_its_shape():
    """An idx kernel's name (its cache key) has no pattern hash: the same machine code must be
    right for another matrix of that shape with a different number of panels."""
    rng = np.random.default_rng(5)
    for density in (0.05, 0.4, 0.02):
        w = _sparse(rng, (64, 300), density, (16, 1))
        mv = build_matvec(w, "int8", block=(16, 1), variant="idx")
        assert mv.spec.startswith("spmv_s8u8_16x1_") and "_idx_" in mv.spec
        check(mv, w, rng.standard_normal(300).astype(np.float32))


def test_saturating_inputs_hit_the_code_limits():
    w, x = _case("extremes")
    mv = build_matvec(w, "int8", x_format=jitvoc.quant.FixedPoint(8, 7))
    codes = mv.x_format.stored(x)
    assert set(np.unique(codes)) <= {0, 255}
    check(mv, w, x)


def test_spec_name_and_strings():
    w = _sparse(np.random.default_rng(0), (64, 64), 0.2, (16, 1))
    mv = build_matvec(w, "int8", cpu="cascadelake", block=(16, 1), variant="idx")
    assert mv.spec.startswith("spmv_s8u8_16x1_avx512vnni_idx")
    assert mv.kernel.family == "spmv_s8u8_16x1_avx512vnni"
    assert f'define void @"{mv.spec}"(' in mv.ir
    assert "vpdpbusd" in mv.asm
    old = build_matvec(w, "int8", cpu="haswell", block=(16, 1))
    assert "vpmadd" in old.asm and "vpdpbusd" not in old.asm


def test_isa_missing_feature_is_an_error_not_a_crash():
    import llvmlite.ir as ir
    with pytest.raises(ISAError, match="avx512vnni"):
        Backend("avx512vnni", cpu.generation("haswell"), ir.Module())
    m = ir.Module()   # AVX-512 without VBMI: no byte-permute gather to emit
    b = ir.IRBuilder(ir.Function(m, ir.FunctionType(ir.VoidType(), []), "f").append_basic_block())
    v = ir.Constant(ir.VectorType(ir.IntType(8), 64), [0] * 64)
    with pytest.raises(ISAError, match="no byte-permute gather"):
        Backend("avx512bw", cpu.generation("skylake-avx512"), m).permute_window(b, v, v, v, None)
    assert isa.best(cpu.generation("x86-64")) == "sse2"
    assert isa.best(cpu.generation("alderlake")) == "avxvnni"


def test_generation_the_host_cannot_run(monkeypatch):
    monkeypatch.setattr(cpu, "host_features", lambda: frozenset({"sse2", "ssse3"}))
    w = np.eye(16, dtype=np.float32)
    mv = build_matvec(w, "int8", cpu="cascadelake")          # compiling is allowed
    assert "vpdpbusd" in mv.asm
    with pytest.raises(UnsupportedCPU, match="avx512vnni"):  # running is not
        mv(np.ones(16, np.float32))


@pytest.mark.parametrize("bad, match", [
    (np.ones(5), "2-D"), (np.ones((0, 3)), "empty"),
    (np.array([[1.0, np.nan]]), "NaN"), (np.array([[np.inf, 1.0]]), "NaN/inf"),
])
def test_bad_weights(bad, match):
    with pytest.raises(InputError, match=match):
        build_matvec(bad)


def test_bad_vectors_and_generations():
    mv = build_matvec(np.ones((4, 3), np.float32))
    with pytest.raises(InputError, match="length 3"):
        mv(np.ones(4, np.float32))
    with pytest.raises(InputError, match="NaN"):
        mv(np.array([1, np.nan, 0], np.float32))
    with pytest.raises(UnsupportedCPU, match="unknown CPU generation"):
        build_matvec(np.ones((4, 3)), cpu="pentium-mmx")
    with pytest.raises(InputError, match="dtype"):
        build_matvec(np.ones((4, 3)), dtype="int4")


def test_cpu_from_environment(monkeypatch):
    monkeypatch.setenv("JITVOC_CPU", "haswell")
    assert build_matvec(np.ones((16, 4), np.float32)).kernel.isa == "avx2"


def test_autotune_caches_decision_and_code(monkeypatch):
    from jitvoc import jit
    w = _sparse(np.random.default_rng(3), (32, 64), 0.1, (16, 1))
    first = build_matvec(w, "int8", autotune=True)
    compiled = []
    real = jit.compile_object
    monkeypatch.setattr(jit, "compile_object", lambda *a: compiled.append(a) or real(*a))
    second = build_matvec(w, "int8", autotune=True)
    assert second.kernel == first.kernel and compiled == []
    x = np.random.default_rng(4).standard_normal(64).astype(np.float32)
    check(second, w, x)


# --- kernels for B vectors -------------------------------------------------------------------------
VECTORS = (2, 3, 8, 16)


def _vectors(w, x, n):
    """n vectors for the case: its own x first, then seeded ones of the same magnitude."""
    rng = np.random.default_rng(n)
    rest = rng.standard_normal((n - 1, w.shape[1])).astype(np.float32) * np.abs(x).max()
    return np.vstack([x[None], rest]).astype(np.float32)


def sampled(cases, request):
    """All of `cases` in a slow sweep; in the fast diagonal, every other one (which half by a
    fixed hash of the case id, so that the diagonal's cases cover them all between them)."""
    if request.node.get_closest_marker("slow"):
        return list(enumerate(cases))
    half = zlib.crc32(request.node.callspec.id.encode()) % 2
    return [(i, c) for i, c in enumerate(cases) if i % 2 == half]


def check_vectors(mv, w, xs):
    """Every vector of a B-vector kernel as the reference computes it alone, bit for bit
    (one activation format for all B)."""
    ys = mv(xs)
    assert ys.shape == (len(xs), w.shape[0])
    if mv.kernel.dtype == "float32":
        for x, y in zip(xs, ys):
            bound = (w.shape[1] + 2) * EPS32 * (np.abs(w) @ np.abs(x)) + 1e-30
            assert np.all(np.abs(y - matvec_float(w, x)) <= bound), mv.spec
        return
    fmt = mv.format_for(xs)
    codes = fmt.stored(xs)
    raw = mv.raw(codes)
    for v, x in enumerate(xs):
        assert np.array_equal(ys[v], matvec_quantized(mv.plan.w_codes, mv.plan.row_scale, x,
                                                      fmt)), (mv.spec, v)
        assert np.array_equal(raw[v], matvec_codes(mv.plan.w_codes, codes[v])), (mv.spec, v)


@pytest.mark.parametrize("gen, dtype, block", diagonal(RUNNABLE, DTYPES, BLOCKS + (None,)))
def test_vectors_every_generation_every_format(gen, dtype, block, request):
    for i, name in sampled(CASES, request):   # every B in VECTORS, over the cases
        w, x = _case(name)
        n = VECTORS[i % len(VECTORS)]
        mv = build_matvec(w, dtype=dtype, cpu=gen, block=block, vectors=n)
        assert mv.spec.endswith(f"_b{n}")
        assert mv.kernel.x_permute == planner.permute_window(
            mv.plan.packed, dtype, mv.kernel.isa, cpu.generation(gen), n)
        check_vectors(mv, w, _vectors(w, x, n))


def _gathering() -> dict:
    """Byte-permute gather (isa.GATHERS) -> the first generation of RUNNABLE whose best backend
    has it: VBMI's vpermi2b, AVX2's vpshufb of 16-byte chunks."""
    out = {}
    for g in RUNNABLE:
        gen = cpu.generation(g)
        backend = isa.best(gen)
        if isa.gather(backend, gen):
            out.setdefault(isa.template(backend, gen)["gather"], g)
    return out


GATHERING = _gathering()


@pytest.mark.parametrize("gen_name", GATHERING.values(), ids=GATHERING.keys())
@pytest.mark.parametrize("variant", ("idx", "grouped", "baked"))
def test_vectors_byte_permute_and_shuffle_gathers_agree_bit_for_bit(variant, gen_name):
    """A B-vector kernel gathers by byte permutes (every gather this host runs) or by
    shuffles; both give every vector's reference result, on ragged shapes, edge cases and
    several window passes."""
    gen = cpu.generation(gen_name)
    for i, name in enumerate(("ragged_37x29", "empty_row_blocks", "wide_sparse_16x1",
                              "extremes", "blocks_16x1")):
        w, x = _case(name)
        n = (2, 3, 8, 16, 6)[i]   # 6: four vectors by lane transposes, two by part stores
        codes, scale = planner.quantize_weights(w, "int8")
        mask = w != 0
        for permute in (True, False):
            plan = planner.build_plan(codes, scale, mask, "int8", gen, block=(16, 1),
                                      variant=variant, permute=permute, vectors=n)
            assert bool(plan.spec.x_permute) == permute
            check_vectors(MatVec(plan, gen), w, _vectors(w, x, n))


@pytest.mark.parametrize("gen_name", GATHERING.values(), ids=GATHERING.keys())
@pytest.mark.parametrize("variant", ("idx", "grouped", "baked"))
def test_byte_permute_and_table_gathers_agree_bit_for_bit(variant, gen_name):
    """One vector: gathers by byte permutes (every gather this host runs; the pattern compiled
    in for grouped and baked kernels, the passes read from the index by idx) and by shifted
    tables give the reference result, with one window pass per group and with several."""
    gen = cpu.generation(gen_name)
    for name in ("ragged_37x29", "empty_row_blocks", "wide_sparse_16x1", "extremes"):
        w, x = _case(name)
        codes, scale = planner.quantize_weights(w, "int8")
        for permute in (True, False):
            plan = planner.build_plan(codes, scale, w != 0, "int8", gen, block=(16, 1),
                                      variant=variant, permute=permute)
            assert bool(plan.spec.x_permute) == permute
            if name == "wide_sparse_16x1" and permute:
                assert plan.packed.permute_gathers(plan.spec.x_permute).passes.max() > 1
            check(MatVec(plan, gen), w, x)


@pytest.mark.parametrize("gen_name", GATHERING.values(), ids=GATHERING.keys())
def test_inline_kernels_with_byte_permutes_compile_their_prologue(gen_name):
    """An in-loop one-vector kernel with a straight-line byte-permute gather (VBMI) has its
    pattern compiled in (a straight-line prologue), the same kernel outside a loop, for B
    vectors or with a looping gather (AVX2) not; all give the reference result."""
    gen = cpu.generation(gen_name)
    straight = isa.gather(isa.best(gen), gen)["straight"]
    w, x = _case("wide_sparse_16x1")   # several window passes per group
    codes, scale = planner.quantize_weights(w, "int8")
    for inline in (True, False):
        plan = planner.build_plan(codes, scale, w != 0, "int8", gen, block=(16, 1),
                                  variant=None if inline else "idx", inline=inline)
        assert plan.spec.variant == "idx" and plan.spec.x_permute
        assert bool(plan.spec.pattern) == (inline and straight)
        check(MatVec(plan, gen), w, x)
    vectors = planner.build_plan(codes, scale, w != 0, "int8", gen, block=(16, 1), inline=True,
                                 vectors=2)
    assert not vectors.spec.pattern


def test_planner_takes_the_vector_count():
    """The planner prices B vectors: byte-permute words past PERMUTE_WORDS_BYTES are not built
    (shuffles instead), and the cost model scales with B, keeping 16x1 where it measured
    fastest (bench/README.md, "Fourth round": 1x1 pattern at 2%, B = 16; here 1024 rows, so
    that B = 16's words pass the limit)."""
    gen = cpu.generation("znver4")
    backend = isa.best(gen)
    mask = np.random.default_rng(0).random((1024, 512)) < 0.02
    codes, scale = planner.quantize_weights(np.where(mask, 1.0, 0.0).astype(np.float32), "int8")
    plans = {n: planner.build_plan(codes, scale, mask, "int8", gen, block=(16, 1), vectors=n)
             for n in (1, 8, 16)}
    words = {n: 4 * p.packed.n_panels * n for n, p in plans.items()}
    assert words[8] <= planner.PERMUTE_WORDS_BYTES < words[16]
    assert plans[1].spec.x_permute and plans[8].spec.x_permute and not plans[16].spec.x_permute
    forced = planner.build_plan(codes, scale, mask, "int8", gen, block=(16, 1), vectors=16,
                                permute=True)
    assert forced.spec.x_permute
    with pytest.raises(InputError, match="VBMI"):
        planner.build_plan(codes, scale, mask, "int8", cpu.generation("skylake-avx512"),
                           block=(16, 1), vectors=2, permute=True)
    costs = [planner.estimate(mask, (16, 1), "int8", backend, gen, vectors=n) for n in (1, 8, 16)]
    assert costs[0] < costs[1] < costs[2]
    for n in (1, 8, 16):
        assert planner.default_block(mask, "int8", backend, gen, n) == (16, 1)


def test_planner_gives_avx2_byte_gathers_what_they_were_measured_faster_on():
    """AVX2 gathers by vpshufb (isa.GATHERS["shuffle16"]) for one vector and words of at most
    words_bytes; past them, and for B > 1, table gathers or shuffles unless asked for; their
    kernels are never baked (bake_limit). AVX-512 without VBMI has no byte-permute gather."""
    gen = cpu.generation("haswell")
    g = isa.gather("avx2", gen)
    rng = np.random.default_rng(5)
    small = _sparse(rng, (256, 448), 0.1, (16, 1))
    big = _sparse(rng, (16 * (g["words_bytes"] // 448) + 32, 448), 1.0, (16, 1))  # 112 panels
    # per row block
    plans = {}
    for name, w, n in (("small", small, 1), ("small B2", small, 2), ("big", big, 1)):
        codes, scale = planner.quantize_weights(w, "int8")
        plans[name] = planner.build_plan(codes, scale, w != 0, "int8", gen, block=(16, 1),
                                         vectors=n)
        forced = planner.build_plan(codes, scale, w != 0, "int8", gen, block=(16, 1),
                                    vectors=n, permute=True)
        assert forced.spec.x_permute
    assert 4 * plans["big"].packed.n_panels > g["words_bytes"] >= 4 * plans["small"].packed.n_panels
    assert plans["small"].spec.x_permute and plans["small"].spec.variant == "grouped"
    assert not plans["small B2"].spec.x_permute and not plans["big"].spec.x_permute
    assert isa.gather("avx512bw", cpu.generation("skylake-avx512")) is None


def test_planner_gives_byte_permutes_only_to_slots_that_fit():
    """Byte-permute words have uint16 slots (layout.PERMUTE_SLOTS): past them, table gathers."""
    gen = cpu.generation("znver4")
    backend = isa.best(gen)
    fits = planner.permute_capable("int8", (16, 1), backend, gen, layout.PERMUTE_SLOTS)
    assert fits and not planner.permute_capable("int8", (16, 1), backend, gen,
                                                layout.PERMUTE_SLOTS + 1)


@pytest.mark.parametrize("gen_name, dtype, block, variant", [
    ("emeraldrapids", "int8", (16, 1), "grouped"),   # isa.KERNEL_CHOICES, measured there
    ("emeraldrapids", "int8", (8, 4), "baked"), ("emeraldrapids", "int16", (16, 1), "baked"),
    ("znver4", "int8", (16, 1), "baked"), ("sapphirerapids", "int8", (16, 1), "baked"),
    ("haswell", "int8", (16, 1), "grouped"),   # isa.GATHERS["shuffle16"]["bake_limit"]
    ("haswell", "int8", (8, 4), "baked")])
def test_untuned_variant_per_generation(gen_name, dtype, block, variant):
    """The untuned variant of a small kernel (below BAKE_LIMIT) is baked, but where a generation
    or a gather measured grouped faster for kernels gathering by byte permutes
    (isa.KERNEL_CHOICES, isa.GATHERS); the results are the reference's on every generation the
    host runs."""
    w = _sparse(np.random.default_rng(3), (448, 448), 0.1, block)
    gen = cpu.generation(gen_name)
    codes, scale = planner.quantize_weights(w, dtype)
    plan = planner.build_plan(codes, scale, w != 0, dtype, gen, block=block)
    assert plan.spec.variant == variant
    if cpu.runnable(gen):
        x = np.random.default_rng(4).standard_normal(448).astype(np.float32)
        check(MatVec(plan, gen), w, x)


@pytest.mark.parametrize("gen_name, dtype, density, variant", [
    ("haswell", "int8", 0.10, "grouped"), ("skylake", "int8", 0.10, "grouped"),
    ("znver3", "int8", 0.10, "grouped"), ("x86-64-v3", "int8", 0.10, "grouped"),
    ("haswell", "int8", 0.07, "baked"), ("haswell", "int16", 0.05, "baked"),
    ("alderlake", "int8", 0.10, "baked"), ("skylake-avx512", "int8", 0.10, "baked"),
    ("icelake-server", "int8", 0.10, "baked")])
def test_untuned_variant_of_8x4_kernels_per_backend(gen_name, dtype, density, variant):
    """AVX2 bakes int8 kernels up to its own limit (isa.BAKE_LIMITS: LPCNet's GRU-A 1152x384 at
    10% in 8x4 blocks, 1,382 counted instructions, is grouped; at 7%, 968, baked); int16 on
    AVX2 and the other backends (AVX-VNNI, AVX-512) bake up to plan.matvec.BAKE_LIMIT."""
    from jitvoc.bench.kernels import Matrix, make_matrix
    w, mask = make_matrix(Matrix("GRU-A 8x4", 1152, 384, density, (8, 4)))
    gen = cpu.generation(gen_name)
    codes, scale = planner.quantize_weights(w, dtype)
    plan = planner.build_plan(codes, scale, mask, dtype, gen)
    assert (plan.spec.block, plan.spec.variant) == ((8, 4), variant)
    backend = isa.best(gen)
    size = planner.baked_instructions(mask, (8, 4), dtype, backend, gen)
    assert (size <= isa.bake_limit(backend, dtype, planner.BAKE_LIMIT)) == (variant == "baked")
    if cpu.runnable(gen) and variant == "grouped":
        x = np.random.default_rng(4).standard_normal(384).astype(np.float32)
        check(MatVec(plan, gen), w, x)


# (generation, matrix of jitvoc.bench.kernels.AUTOTUNE_MATRICES) -> the untuned float32 kernel
# (block, variant, unroll, accumulators): isa.FLOAT_KERNELS on SSE2, SSSE3 and AVX2
# (bench/README.md, "Issue 14 item 5: the planner's float32 choices on AVX2"); AVX-512 keeps
# the planner's defaults.
FLOAT32_UNTUNED = {
    ("haswell", 0): ((16, 1), "idx", 4, 2), ("haswell", 1): ((8, 4), "idx", 4, 2),
    ("haswell", 2): ((8, 4), "idx", 4, 2), ("haswell", 3): ((1, 1), "idx", 8, 4),
    ("x86-64", 0): ((16, 1), "idx", 4, 2), ("x86-64", 2): ((8, 4), "idx", 4, 2),
    ("x86-64", 3): ((1, 1), "idx", 8, 4), ("x86-64-v2", 1): ((8, 4), "idx", 4, 2),
    ("skylake-avx512", 0): ((16, 1), "idx", 8, 4), ("icelake-server", 3): ((16, 1), "idx", 8, 4),
}


@pytest.mark.parametrize("gen_name, matrix", FLOAT32_UNTUNED)
def test_untuned_float32_kernel_per_backend(gen_name, matrix):
    """The untuned float32 kernel of the benchmark's autotune patterns: on SSE2, SSSE3 and AVX2
    index-driven loops of 4 panels into 2 accumulator sets for panels of several rows, 8 into 4
    for one-row panels, which AVX2 prices below a 16x1 panel's half (an unstructured pattern
    at 10% gets 1x1 blocks); inside a fused loop (a compiled cell) float32 kernels keep 8 into 4,
    the order of their sums."""
    from jitvoc.bench.kernels import AUTOTUNE_MATRICES, make_matrix
    w, mask = make_matrix(AUTOTUNE_MATRICES[matrix])
    gen = cpu.generation(gen_name)
    codes, scale = planner.quantize_weights(w, "float32")
    spec = planner.build_plan(codes, scale, mask, "float32", gen).spec
    assert (spec.block, spec.variant, spec.unroll, spec.accumulators) == \
        FLOAT32_UNTUNED[gen_name, matrix]
    inline = planner.build_plan(codes, scale, mask, "float32", gen, block=spec.block,
                                inline=True).spec
    assert (inline.variant, inline.unroll, inline.accumulators) == ("idx", 8, 4)


@pytest.mark.parametrize("gen, dtype, variant", diagonal(RUNNABLE, DTYPES, VARIANTS))
def test_vectors_code_variants(gen, dtype, variant, request):
    for i, name in sampled(("ragged_37x29", "empty_row_blocks", "blocks_16x1",
                            "wide_sparse_16x1", "extremes"), request):
        w, x = _case(name)
        n = VECTORS[i % len(VECTORS)]
        try:
            mv = build_matvec(w, dtype=dtype, cpu=gen, block=(16, 1), variant=variant, vectors=n)
        except InputError as e:   # baked B x products over the budget (generations without
            assert variant == "baked" and "compile budget" in str(e)   # a native dot width)
            continue
        check_vectors(mv, w, _vectors(w, x, n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_vector_is_the_single_vector_kernel(dtype):
    """vectors=1 plans, names and emits exactly the single-vector kernel; an integer B-vector
    kernel's rows equal the single-vector kernel's results in the same format (float32 sums in
    another order: check_vectors bounds them)."""
    w, x = _case("blocks_16x1")
    one, single = build_matvec(w, dtype, vectors=1), build_matvec(w, dtype)
    assert one.kernel == single.kernel and one.ir == single.ir
    if dtype == "float32":
        return
    fmt = single.format_for(x)
    many = build_matvec(w, dtype, vectors=4, x_format=fmt)
    xs = _vectors(w, x, 4)
    xs *= np.abs(x).max() / np.abs(xs).max()   # within the shared format's range
    fixed = build_matvec(w, dtype, x_format=fmt)
    assert np.array_equal(many(xs), np.stack([fixed(v) for v in xs]))


@pytest.mark.parametrize("gen", ["x86-64", "haswell", "icelake-server"])
def test_vector_groups_fit_the_registers(gen):
    """A B-vector core multiplies its vectors in equal groups (Kernel.groups) whose
    accumulators fill at most half the vector registers, of at least 4 vectors: 16x1 int8
    blocks take 4 xmm, 2 ymm or 1 zmm per vector, so one group (SSE2: groups of 2 would be
    too small), groups of 4 (AVX2) and of 16 (AVX-512: B = 16 whole); the groups cover every
    vector once, and where the host runs the kernel its rows are exact."""
    from llvmlite import ir
    from jitvoc.emit import spmv
    w, x = _case("blocks_16x1")
    fit = {"x86-64": 16, "haswell": 4, "icelake-server": 16}[gen]
    for n in (2, 5, 8, 16):
        mv = build_matvec(w, dtype="int8", cpu=gen, block=(16, 1), variant="idx",
                          vectors=n)
        k = spmv.Kernel.of(mv.plan.spec, mv.plan.packed, cpu.generation(gen), ir.Module())
        sizes = [len(g) for g in k.groups]
        assert [v for g in k.groups for v in g] == list(range(n))
        assert max(sizes) <= fit and max(sizes) - min(sizes) <= 1
        assert len(sizes) == -(-n // fit)
        if cpu.runnable(cpu.generation(gen)):
            check_vectors(mv, w, _vectors(w, x, n))


@pytest.mark.parametrize("gen", ["x86-64", "haswell", "icelake-server"])
def test_vectors_row_block_words_where_the_backend_builds_them(gen):
    """B-vector kernels of gathering panels (16x1 int8 and int16, no byte permutes) build a row
    block's words once (Kernel.row_block_words) on the backends of isa.ROW_BLOCK_WORDS (AVX2)
    from the B it gives (3: not for B = 2), for the idx and grouped variants, not baked; where
    the host runs them, every vector's rows are exact, empty row blocks and multi-pass patterns
    included."""
    from llvmlite import ir
    from jitvoc.emit import spmv
    g = cpu.generation(gen)
    for i, name in enumerate(("wide_sparse_16x1", "empty_row_blocks", "ragged_37x29")):
        w, x = _case(name)
        for dtype in ("int8", "int16"):
            for variant in ("idx", "grouped", "baked"):
                n = VECTORS[i]
                mv = build_matvec(w, dtype=dtype, cpu=gen, block=(16, 1), variant=variant,
                                  vectors=n)
                k = spmv.Kernel.of(mv.plan.spec, mv.plan.packed, g, ir.Module())
                fewest = isa.ROW_BLOCK_WORDS.get(isa.best(g))
                assert k.row_block_words == (fewest is not None and n >= fewest
                                             and variant != "baked"), (gen, dtype, variant, n)
                if cpu.runnable(g):
                    check_vectors(mv, w, _vectors(w, x, n))


def test_vectors_bad_arguments():
    w = np.ones((16, 8), np.float32)
    for bad in (0, -1, 2.0, True, 65):
        with pytest.raises(InputError, match="vectors"):
            build_matvec(w, vectors=bad)
    with pytest.raises(InputError, match="vectors"):
        build_matvec(w, autotune=True, vectors=2)
    mv = build_matvec(w, vectors=3)
    with pytest.raises(InputError, match=r"shape \(3, 8\)"):
        mv(np.ones(8, np.float32))
    with pytest.raises(InputError, match=r"shape \(3, 8\)"):
        mv.raw(np.ones((2, 8), np.uint8))
