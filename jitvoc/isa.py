"""What each CPU generation and instruction-set backend can do: jitvoc's one source of ISA facts,
below every stage (it imports only jitvoc.errors). cpu.py, the planners and the emitters read it.

- GENERATIONS: the SIMD features each LLVM CPU name implies (of SIMD_FEATURES).
- The backend templates, ``kernels_templates/*.toml`` (installed as jitvoc.kernels_templates):
  per backend the features it needs, its vector width, its preference, and the intrinsics of
  each dot-product form per vector width. They are checked against TEMPLATE_SCHEMA when read,
  so a missing or unknown key is an error at load, not a KeyError at emission.
- GATHERS: the byte-permute gathers a template may name (``gather = "permute2"``).
- INTRINSIC_FEATURES: the features each intrinsic needs.
- SCAN_VECTORS: the float vectors of the linear-recurrence kernels.
- KERNEL_CHOICES: the kernel choices measured on a generation where they differ from the
  planners' defaults (which were measured on Zen 4).
- FLOAT_KERNELS: the one-vector float32 kernel choices measured on a backend where they differ
  from the planner's defaults.
- BAKE_LIMITS: the most instructions a backend's one-vector integer kernels are baked into,
  where measured otherwise than the planner's default.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from .errors import ISAError

# The SIMD features the kernels care about, as LLVM names them.
SIMD_FEATURES = ("sse2", "ssse3", "sse4.1", "avx", "avx2", "fma",
                 "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512vbmi", "avxvnni")

_V1 = {"sse2"}
_V2 = _V1 | {"ssse3", "sse4.1"}
_V3 = _V2 | {"avx", "avx2", "fma"}
_V4 = _V3 | {"avx512f", "avx512bw", "avx512vl"}
_VNNI = _V4 | {"avx512vnni"}
_ICL = _VNNI | {"avx512vbmi"}

# LLVM CPU name -> the SIMD features (of SIMD_FEATURES) it implies.
GENERATIONS: dict[str, frozenset[str]] = {name: frozenset(f) for name, f in {
    "x86-64": _V1,
    "x86-64-v2": _V2,
    "x86-64-v3": _V3,
    "x86-64-v4": _V4,
    "core2": {"sse2", "ssse3"},
    "nehalem": _V2,
    "sandybridge": _V2 | {"avx"},
    "haswell": _V3,
    "skylake": _V3,
    "skylake-avx512": _V4,
    "cascadelake": _VNNI,
    "icelake-client": _ICL,
    "icelake-server": _ICL,
    "tigerlake": _ICL,
    "rocketlake": _ICL,
    "alderlake": _V3 | {"avxvnni"},
    "sapphirerapids": _ICL | {"avxvnni"},
    "emeraldrapids": _ICL | {"avxvnni"},
    "znver2": _V3,
    "znver3": _V3,
    "znver4": _ICL,
}.items()}

# intrinsic -> alternative feature sets, any of which allows it
INTRINSIC_FEATURES = {
    "llvm.x86.sse2.pmadd.wd": [{"sse2"}],
    "llvm.x86.ssse3.pmadd.ub.sw.128": [{"ssse3"}],
    "llvm.x86.avx2.pmadd.ub.sw": [{"avx2"}],
    "llvm.x86.avx2.pmadd.wd": [{"avx2"}],
    "llvm.x86.avx512.pmaddubs.w.512": [{"avx512bw"}],
    "llvm.x86.avx512.pmaddw.d.512": [{"avx512bw"}],
    "llvm.x86.avx512.vpdpbusd.512": [{"avx512vnni"}],
    "llvm.x86.avx512.vpdpbusd.256": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpdpbusd.128": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpdpwssd.512": [{"avx512vnni"}],
    "llvm.x86.avx512.vpdpwssd.256": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpdpwssd.128": [{"avx512vnni", "avx512vl"}, {"avxvnni"}],
    "llvm.x86.avx512.vpermi2var.qi.512": [{"avx512vbmi"}],
    "llvm.x86.avx2.pshuf.b": [{"avx2"}],
}

# Gathering panels (16x1 blocks): build 16 panels' activation words at once from `window`-byte
# windows of the uint8 codes (jitvoc.layout.PermuteGathers): by the `permute` intrinsic, or by the
# `shuffle` intrinsic of 16-byte chunks (emit.isa.Backend.permute_window). `straight`: kernels
# with the pattern compiled in build the words in straight-line code (else a loop over the
# groups reading their passes from the index). The planner gives a gather at most `vectors`
# vectors and `words_bytes` bytes of words (4 per panel and vector), and bakes its one-vector
# kernels up to `bake_limit` instructions (plan.matvec.BAKE_LIMIT), where given.
# shuffle16 (AVX2; measured on Zen 4 with AVX-512 masked, ns per call, alternating, loaded VM;
# bench/README.md "Tenth round: byte gathers by vpshufb"): against shifted tables, R 2688x896 at
# 5% idx u4a2 3,035 vs 3,883, O1/O3 499 vs 667, O2/O4 290 vs 402; the vocoder loop x1.21. Looped,
# not straight: in the loop 6.56 against 7.23 µs per sample (a group's ~50 instructions, 121
# groups in R: the straight-line prologue left the instruction cache). One vector only: at B = 8
# the loop lost 11% to shuffles. Words of at most 32 KiB (L1): 1x1 patterns, R at 3% (58 KiB)
# 28,795 vs 24,837 ns, at 10% (120 KiB) 59,212 vs 56,724; O1 at 10% (10 KiB) 3,343 vs 4,110;
# R's 16x1 pattern at 10% (15 KiB) 6,169 vs 6,691, at 25% (37 KiB) 17,016 vs 16,150.
# Never baked: grouped beat baked, R at 3% 2,853 vs 3,853, GRU-A 1152x384 1,402 vs 1,890 (O1,
# O2 ties).
GATHERS = {
    "permute2": {"requires": frozenset({"avx512vbmi"}),
                 "permute": "llvm.x86.avx512.vpermi2var.qi.512", "window": 128,
                 "straight": True},
    "shuffle16": {"requires": frozenset({"avx2"}), "shuffle": "llvm.x86.avx2.pshuf.b",
                  "window": 128, "straight": False, "vectors": 1, "words_bytes": 32 * 1024,
                  "bake_limit": 0},
}

# Backend -> the fewest vectors B for which its B-vector kernels (int8/int16 gathering panels,
# idx and grouped) build a row block's B activation words once per panel into a stack buffer,
# then broadcast-load them for each group of vectors (emit.spmv.Kernel.row_block_words), instead
# of interleaving each panel's codes in registers and broadcasting each vector's word by a
# shuffle, per group of vectors.
# AVX2 (Zen 4 with AVX-512 hidden; a panel's words of 8 vectors: 4 loads, 4 unpacks, 2 stores,
# against 2 x (4 loads, 1 unpack, 4 vpshufb, 4 vinserti128) in the registers the 16 ymm lack):
# alone, idx u4 (ns per call, old / new alternating, medians of 15, bench/README.md "Issue 14
# item 2 and issue 15 (B = 8) on AVX2") R 2688x896 at 5% B = 4 10,400 -> 8,895, B = 8 20,508 ->
# 16,335, B = 16 42,052 -> 33,039, O1/O3 448x448 B = 8 3,774 -> 3,098, O2/O4 256x448 B = 8
# 2,406 -> 2,050, int16 R B = 8 23,963 -> 21,074; the loop of B = 8 streams int8 x1.10-1.13,
# int16 x1.08-1.11; B = 3 (paired, R, O1, O2) int8 x1.48-1.54, int16 x1.78-1.83; B = 2 slower
# (int8 0.82-0.93, int16 0.94-0.95: two vectors' words are cheap in registers), hence from 3 on.
# SSE2 and SSSE3 (4 xmm a vector) measured slower with it (R, O1 at B = 4, 8: paired
# 0.92-1.04); AVX-512 keeps its code (not runnable on that VM).
ROW_BLOCK_WORDS = {"avx2": 3}

# (features needed, floats per vector, ISA tag) of the scan kernels: the first row a
# generation has wins; without any, scalar code.
SCAN_VECTORS = (
    (("avx512f",), 16, "avx512"),
    (("avx2", "fma"), 8, "avx2"),
    (("avx",), 8, "avx"),
    (("sse2",), 4, "sse2"),
)

# LLVM CPU name -> {(choice, dtype, B): value}: the kernel choices measured on that generation
# where they differ from the planners' defaults, which were measured on Zen 4 (znver4). A choice
# changes the code's variant, never its arithmetic: samples stay identical on every generation.
# - ("streams_unroll", dtype, B): panels per trip of the index-driven B-vector kernels in the loop
#   of B streams (default plan.vocoder.STREAMS_KERNEL, unroll 4). emeraldrapids, int16, B = 8:
#   unroll 2, random_model(896) at 24 kHz, base / variant paired over rounds (CPU time, engines
#   alternating; two engines of the default: 1.000-1.020): x1.048, x1.039, x1.049 per
#   stream-sample; bench/side_by_side.py main -> this choice x1.05, x1.07 (main against itself
#   x1.01); alone (R 2688x896 at 5%, O1 448x448 at 10%, ns per call) 24,725-25,014 -> 22,949
#   and 4,186 -> 3,903. int16 B = 2, 4, 16 and int8 B = 8: within the noise, so the default
#   (bench/README.md, "Ninth round: kernels per generation on Intel").
# - ("bake_limit_permute", dtype, 1): the most instructions a one-vector kernel whose 16x1 panels
#   gather by byte permutes may bake (default plan.matvec.BAKE_LIMIT, 2500). emeraldrapids, int8:
#   0, never baked: grouped beat baked alone (ns per call, three runs, bench/kernel_variants.py)
#   on R 2688x896 at 3% 1,484-1,496 vs 2,087-2,102, at 5% 2,108-2,285 vs 2,947-3,176, O1
#   448x448 at 10% 219-238 vs 252-266, O2 256x448 137-158 vs 160-166; GRU-A 1152x384 a tie (779
#   vs 857, 810 vs 792). On Zen 4 baked won (O1 216 vs 238). Kernels of contiguous panels (8x4:
#   baked 2,766 vs 3,191 on R 8x4 at 5%, 782 vs 1,098 on GRU-A 8x4) and int16 keep the default.
KERNEL_CHOICES: dict[str, dict[tuple, object]] = {
    "emeraldrapids": {("streams_unroll", "int16", 8): 2, ("bake_limit_permute", "int8", 1): 0},
}

# Backend -> the one-vector float32 kernel choices measured on it where they differ from the
# planner's defaults (plan.matvec.LOOP; on AVX-512 the untuned (8, 4) was the best candidate of
# R at 5%, rocketlake float32: 4,538 against 4,531 ns). Measured on Zen 4 with AVX-512 hidden,
# loaded, each kernel once per round (CPU time, order reversed every other round), medians of
# 21 paired ratios, bench/README.md "Issue 14 item 5: the planner's float32 choices on AVX2":
# - "idx_loop": (unroll, accumulators) of an index-driven kernel whose panels have several rows,
#   outside a fused loop (whose float32 kernels keep plan.matvec.LOOP, the order of their sums).
#   (4, 2) against (8, 4) on R 2688x896 at 5% 16x1, R at 5% 8x4, GRU-A 1152x384 at 10% 8x4:
#   AVX2 compiled for native 0.975, 0.908, 0.907; haswell 0.936, 0.926, 0.945; skylake 0.968,
#   0.919, 0.945; znver3 1.001, 0.882, 0.926; SSSE3 sandybridge 0.956, 0.938, 0.974, x86-64-v2
#   0.894, 0.961, 0.982; SSE2 x86-64 0.926, 0.982, 0.918. Panels of one row (a scalar
#   multiply-add each) keep (8, 4): on R at 10% 1x1, (4, 2) took 1.06-1.16x its time (native:
#   a tie, 211,003 against 213,748 ns).
# - "row_panel": the cost of a one-row panel in plan.matvec._dot_cost's units (default 1; a
#   16-row panel is 2 on AVX2). ns per one-row panel over ns per 16-row panel: 0.42 on R at 10%
#   1x1 (the full run of 2026-12-01: 102,257 ns for 240,845 panels, 123,963 for 122,526), 0.41
#   on R at 5% 8x4, 0.62 on GRU-A at 10% 8x4 (its 16-row panels in L2). At 1 the model put 1x1
#   2% above 16x1 on R at 10%, which ran 1.24x slower; at 0.8 the untuned 1x1 kernel took
#   0.75-0.93 of 16x1's time (native, haswell, skylake, znver3), and unstructured 1152x384
#   and 448x448 at 10% go 1x1 too (haswell: 23,532 against 26,550 ns; 11,248 against 11,107).
FLOAT_KERNELS = {
    "sse2": {"idx_loop": (4, 2)},
    "ssse3": {"idx_loop": (4, 2)},
    "avx2": {"idx_loop": (4, 2), "row_panel": 0.8},
}

# Backend -> {dtype: the most instructions (plan.matvec.baked_instructions) the planner bakes
# a one-vector kernel into}, where measured otherwise than plan.matvec.BAKE_LIMIT (2500,
# measured with AVX-512's one-instruction dot products). Kernels gathering by byte permutes
# have their gather's limit (GATHERS; AVX2: never baked), so on AVX2 this is the limit of the
# kernels of 4-column blocks (8x4, 16x4, 4x4) and of 1x1 blocks.
# - avx2, int8: an AVX2 int8 product is a vpmaddubsw, a vpmaddwd and a vpaddd where VNNI has
#   one vpdpbusd, so baked code takes about 8.5 instructions and 54 bytes per counted
#   instruction (VNNI 4.6 and 37; 1152x384 at 10% in 8x4 blocks: 11,211 instructions in 72 KB
#   against 6,414 in 51 KB) and falls out of the front end sooner. Baked against grouped on
#   8x4 patterns, Zen 4 with AVX-512 hidden, loaded (grouped / baked, paired medians of 41
#   rounds in CPU time, bench/kernel_variants.py; bench/README.md "Issue 14 item 5 on AVX2:
#   where baking stops paying"): baked faster up to 1,175 (448x448 at 10%, 627, 34 KB: native
#   1.13-1.21; 1152x384 at 7%, 968, 52 KB: native 1.25-1.33, haswell, skylake, znver3
#   1.03-1.26; at 8.5%, 1,175, 63 KB: native 1.15-1.26, the others 0.86-1.08), level or slower
#   from 1,382 (1152x384 at 10%, 72 KB: native 0.75-1.06 over 21 runs, median 1.01, baked at
#   most 6% ahead and up to 1.33x behind; haswell 0.85-1.04, skylake 0.86-0.87, znver3
#   0.86-0.89; 2688x896 at 2%, 1,505, 89 KB: 0.78-0.87 on all four). int16 (a vpmaddwd and a
#   vpaddd; 25-44 bytes per counted instruction) keeps the default: baked faster at 716, 1,382
#   and 1,448 (1.10-1.29), level at 1,254 (0.85-1.30) and 1,936 (0.87-1.05).
BAKE_LIMITS = {"avx2": {"int8": 1200}}

# dot-product form -> the intrinsic tables (vector width -> intrinsic) a template must give
FORMS = {"accumulate": ("dot",), "maddubs": ("maddubs", "madd_wd"), "madd": ("madd_wd",),
         "widen_madd": ("madd_wd",)}
# key -> type of every template; dot4 (u8 · s8) and dot2 (s16 · s16) are checked by _check_dot
TEMPLATE_SCHEMA = {"name": str, "requires": list, "vector_bits": int, "preference": int,
                   "dot4": dict, "dot2": dict}
OPTIONAL_KEYS = {"gather": str}


# --- templates -------------------------------------------------------------------------------------
def _root() -> Path:
    """Run from a source checkout: the checkout's kernels_templates/ folder, beside the jitvoc
    imported (an editable install of another checkout maps jitvoc.kernels_templates to that
    checkout's folder: a worktree's or bench/side_by_side.py's tree would read another tree's
    templates). Installed: the package jitvoc.kernels_templates."""
    checkout = Path(__file__).resolve().parent.parent / "kernels_templates"
    if (checkout / "__init__.py").is_file():
        return checkout
    return Path(str(resources.files("jitvoc.kernels_templates")))


def template_files() -> list[Path]:
    paths = sorted(_root().glob("*.toml"))
    if not paths:
        raise FileNotFoundError(f"no kernel templates (*.toml) in {_root()}")
    return paths


@functools.lru_cache(maxsize=None)
def templates() -> dict[str, dict]:
    """Backend name -> its template, checked, in file-name order. (tomllib imported here: a run
    whose code is cached reads no template.)"""
    import tomllib
    out = {}
    for path in template_files():
        with open(path, "rb") as f:
            t = tomllib.load(f)
        check_template(t, path.name)
        out[t["name"]] = t
    return out


def check_template(t: dict, source: str) -> None:
    """ISAError naming `source` unless `t` follows TEMPLATE_SCHEMA."""
    def fail(what):
        raise ISAError(f"kernel template {source}: {what}")
    for key, typ in TEMPLATE_SCHEMA.items():
        if not isinstance(t.get(key), typ):
            fail(f"needs {key!r} ({typ.__name__})")
    unknown = set(t) - set(TEMPLATE_SCHEMA) - set(OPTIONAL_KEYS)
    if unknown:
        fail(f"unknown keys {sorted(unknown)}")
    if not set(t["requires"]) <= set(SIMD_FEATURES):
        fail(f"requires unknown features {sorted(set(t['requires']) - set(SIMD_FEATURES))}")
    if "gather" in t and t["gather"] not in GATHERS:
        fail(f"gather {t['gather']!r} is none of {sorted(GATHERS)}")
    for kind in ("dot4", "dot2"):
        _check_dot(t[kind], f"[{kind}]", fail)


def _check_dot(table: dict, where: str, fail) -> None:
    form = table.get("form")
    if form not in FORMS:
        fail(f"{where} form {form!r} is none of {sorted(FORMS)}")
    if set(table) != {"form", *FORMS[form]}:
        fail(f"{where} form {form!r} takes the tables {list(FORMS[form])}, got {sorted(table)}")
    for key in FORMS[form]:
        for width, name in table[key].items():
            if not width.isdigit() or name not in INTRINSIC_FEATURES:
                fail(f"{where} {key}: {width} = {name!r} is not a vector width and an "
                     f"intrinsic of INTRINSIC_FEATURES")


def template(name: str, gen) -> dict:
    """The template of backend `name`, which generation `gen` must be able to run."""
    all_t = templates()
    if name not in all_t:
        raise ISAError(f"unknown ISA backend {name!r}; templates: {', '.join(all_t)}")
    missing = set(all_t[name]["requires"]) - gen.features
    if missing:
        raise ISAError(f"ISA backend {name!r} needs {', '.join(sorted(missing))}, "
                       f"which CPU generation {gen.name!r} lacks")
    return all_t[name]


def available(gen) -> list[str]:
    """Names of the templates whose features `gen` has, best (highest preference) first."""
    ok = [t for t in templates().values() if set(t["requires"]) <= gen.features]
    return [t["name"] for t in sorted(ok, key=lambda t: -t["preference"])]


def best(gen) -> str:
    names = available(gen)
    if not names:
        raise ISAError(f"no kernel template fits CPU generation {gen.name!r}")
    return names[0]


def vector_bits(name: str) -> int:
    return templates()[name]["vector_bits"]


def dot_form(name: str, gen, kind: str) -> str:
    return template(name, gen)[kind]["form"]


def dot_width(name: str, gen, kind: str, lanes: int) -> int:
    """The native int32 lanes per instruction of backend `name` for a panel of `lanes` rows
    (0: plain IR)."""
    table = template(name, gen)[kind]
    key = "dot" if table["form"] == "accumulate" else "madd_wd"
    widths = sorted((int(k) for k in table[key]), reverse=True)
    return next((w for w in widths if w <= lanes and lanes % w == 0), 0)


def gather(name: str, gen) -> dict | None:
    """The byte-permute gather of backend `name` on `gen`, or None where there is none."""
    g = GATHERS.get(template(name, gen).get("gather"))
    return g if g and g["requires"] <= gen.features else None


def gather_window(name: str, gen) -> int:
    """Bytes per window of the byte-permute gather, or 0 if this backend/CPU has none."""
    g = gather(name, gen)
    return g["window"] if g else 0


def kernel_choice(gen, key: tuple, default):
    """The value of a kernel choice `key` measured on `gen`'s LLVM CPU (KERNEL_CHOICES), else
    `default`."""
    return KERNEL_CHOICES.get(gen.llvm_cpu, {}).get(key, default)


def float_kernel(backend: str, key: str, default):
    """The float32 kernel choice `key` measured on `backend` (FLOAT_KERNELS), else `default`."""
    return FLOAT_KERNELS.get(backend, {}).get(key, default)


def bake_limit(backend: str, dtype: str, default: int) -> int:
    """The most instructions a one-vector `dtype` kernel of `backend` is baked into
    (BAKE_LIMITS), else `default`."""
    return BAKE_LIMITS.get(backend, {}).get(dtype, default)


def scan_vector(gen) -> tuple[int, str]:
    """(floats per vector, ISA tag) of the scan kernels for a generation, from SCAN_VECTORS."""
    for features, width, tag in SCAN_VECTORS:
        if gen.has(*features):
            return width, tag
    return 1, "scalar"
