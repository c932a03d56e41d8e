"""Golden IR: the LLVM IR text of a handful of small kernels, a tiny vocoder loop (its WaveRNN
cell, for one stream and for B streams), the scans and the loops of three small compiled cells, kept in tests/golden/*.ll.gz
(gzip: the vocoder loop alone is 1.2 MB of text) so that any change to the emitted code fails
test_golden.py, which shows the diff (tinygrad's process replay is the model).

Regenerate on purpose, after checking that a change of the IR is intended:

    python -m tests.golden --update
"""
from __future__ import annotations

import argparse
import gzip
import pathlib

import numpy as np

from jitvoc import cells, cpu
from jitvoc.bench.cells import random_weights
from jitvoc.calibration import calibrate
from jitvoc.emit import cell as emit_cell
from jitvoc.emit import scan, spmv
from jitvoc.engine_jit import activation_ranges
from jitvoc.model import random_model
from jitvoc.plan import cell as plan_cell
from jitvoc.plan import matvec as planner
from jitvoc.plan import scan as plan_scan
from jitvoc.plan.vocoder import plan_vocoder, vocoder_cell

FOLDER = pathlib.Path(__file__).parent

# name: (generation, dtype, block (None: dense), variant); one matrix of 40x72 at 25% density
MATVEC_CASES = {
    "int8_16x1_idx_haswell": ("haswell", "int8", (16, 1), "idx"),   # AVX2 vpshufb gathers
    "int8_16x1_grouped_haswell": ("haswell", "int8", (16, 1), "grouped"),
    "int8_16x1_idx_icelake": ("icelake-server", "int8", (16, 1), "idx"),
    "int8_16x1_baked_cascadelake": ("cascadelake", "int8", (16, 1), "baked"),
    "int8_8x4_grouped_skylake": ("skylake-avx512", "int8", (8, 4), "grouped"),
    "int8_1x1_grouped_core2": ("core2", "int8", (1, 1), "grouped"),
    "int8_dense_alderlake": ("alderlake", "int8", None, "dense"),
    "int16_16x1_idx_x86-64": ("x86-64", "int16", (16, 1), "idx"),
    "int16_4x4_baked_haswell": ("haswell", "int16", (4, 4), "baked"),
    "float32_16x1_idx_haswell": ("haswell", "float32", (16, 1), "idx"),
    "float32_dense_skylake": ("skylake-avx512", "float32", None, "dense"),
}
# name: (generation, engine dtype, streams); random_model(hidden=32)
LOOP_CASES = {
    "loop_int8_icelake": ("icelake-server", "int8", 1),
    "loop_int16_haswell": ("haswell", "int16", 1),
    "loop_float32_x86-64": ("x86-64", "float32", 1),
    "loop_int8_b4_icelake": ("icelake-server", "int8", 4),
    "loop_float32_b2_x86-64": ("x86-64", "float32", 2),
}

# name: (kind, generation, non-temporal stores)
SCAN_CASES = {
    "scan_serial_haswell": ("serial", "haswell", False),
    "scan_serial_nt_skylake": ("serial", "skylake-avx512", True),
    "scan_reduce_x86-64": ("reduce", "x86-64", False),
}

# name: (library cell, dtype, generation): the loop quantizes its in-loop products' inputs
# for their kernels (dense random weights)
CELL_CASES = {
    "cell_gru_float32": ("gru:24:40", "float32", "haswell"),
    "cell_lstm_int8": ("lstm:24:40", "int8", "icelake-server"),
    "cell_sru_int16": ("sru:40", "int16", "haswell"),
}


def _matrix(block, seed: int = 12):
    """A 40x72 matrix and its mask: 25% of its (block or 16x1) blocks present."""
    rng = np.random.default_rng(seed)
    bh, bw = block or (16, 1)
    keep = rng.random((-(-40 // bh), -(-72 // bw))) < 0.25
    mask = np.kron(keep, np.ones((bh, bw), bool))[:40, :72]
    return np.where(mask, rng.standard_normal((40, 72)), 0).astype(np.float32), mask


def matvec_ir(name: str) -> str:
    gen_name, dtype, block, variant = MATVEC_CASES[name]
    gen = cpu.generation(gen_name)
    w, mask = _matrix(block)
    codes, scale = planner.quantize_weights(w, dtype)
    plan = planner.build_plan(codes, scale, mask, dtype, gen, block=block, variant=variant)
    return str(spmv.build_module(plan.spec, plan.packed, gen))


def loop_ir(name: str) -> str:
    """The vocoder's loop (its WaveRNN cell, as JitEngine compiles it: plan.vocoder.vocoder_cell;
    for B streams, emit.cell's streams mode) after its core modules."""
    gen_name, dtype, streams = LOOP_CASES[name]
    model = random_model(hidden=32, density=0.25, output_density=0.25)
    ranges = None if dtype == "float32" else activation_ranges(calibrate(model))
    gen = cpu.generation(gen_name)
    schedule, kernels = vocoder_cell(plan_vocoder(model, dtype, gen, ranges, vectors=streams))
    modules = [build() for _, build in emit_cell.core_modules(schedule, kernels, gen)]
    modules.append(emit_cell.build(schedule, kernels, gen, streams))
    return "\n".join(str(m) for m in modules)


def scan_ir(name: str) -> str:
    kind, gen_name, stream = SCAN_CASES[name]
    return str(scan.build(plan_scan.spec_for(kind, cpu.generation(gen_name), stream)))


def cell_ir(name: str) -> str:
    """The cell's loop module and its core modules, one after another."""
    spec, dtype, gen_name = CELL_CASES[name]
    gen, cell = cpu.generation(gen_name), cells.named(spec)
    plan = plan_cell.plan(cell, dtype)
    kernels = plan_cell.in_loop_kernels(plan, random_weights(cell), gen)
    modules = [build() for _, build in emit_cell.core_modules(plan, kernels, gen)]
    return "\n".join(str(m) for m in modules + [emit_cell.build(plan, kernels, gen)])


def emitted(name: str) -> str:
    if name in MATVEC_CASES:
        return matvec_ir(name)
    if name in CELL_CASES:
        return cell_ir(name)
    return loop_ir(name) if name in LOOP_CASES else scan_ir(name)


def path(name: str) -> pathlib.Path:
    return FOLDER / f"{name}.ll.gz"


def stored(name: str) -> str | None:
    """The golden IR of a case, None if it has none yet."""
    return gzip.decompress(path(name).read_bytes()).decode() if path(name).exists() else None


def names() -> list:
    return [*MATVEC_CASES, *LOOP_CASES, *SCAN_CASES, *CELL_CASES]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite every golden file")
    args = parser.parse_args()
    changed = [n for n in names() if stored(n) != emitted(n)]
    if args.update:
        for n in changed:
            path(n).write_bytes(gzip.compress(emitted(n).encode(), compresslevel=9, mtime=0))
    print(f"{len(changed)} of {len(names())} golden IR files "
          f"{'rewritten' if args.update else 'differ'}: {', '.join(changed) or '-'}")
