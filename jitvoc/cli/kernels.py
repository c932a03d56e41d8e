"""`jitvoc kernels MODEL --cpu GEN --emit ll|asm|both --out DIR`: dump every kernel a model would
use, as LLVM IR and/or assembly named by spec, with the plan as plan.json.
`jitvoc kernels --cell gru:512 ...`: the same for a library cell (jitvoc.cells.named): its fused
loop, the kernels of its stacked and hoisted products, and its schedule (schedule.txt).

MODEL is a jitvoc model file (.npz with a `meta` key: the five matrix kernels, the fused
generation loop (the WaveRNN cell's, as JitEngine compiles it), the cores it calls and its
schedule.txt) or an installed model's name, or an .npz of named 2-D matrices (one kernel per
matrix). Works for any known CPU generation, also one this host cannot run: kernels are only
compiled, never run.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np

from .. import cells
from .. import cpu as cpu_mod
from .. import jit, npy, pretrained
from ..audio import make_output_folder
from ..bench.cells import random_weights
from ..calibration import calibrate
from ..config import compiler_version
from ..emit import cell as emit_cell
from ..emit import spmv as emit_spmv
from ..engine_jit import activation_ranges
from ..errors import JitvocError
from ..model import load_model
from ..plan import cell as plan_cell
from ..plan.cell import HOIST_VECTORS
from ..plan import matvec as mv_plan
from ..plan.vocoder import plan_vocoder, vocoder_cell
from ..spec import DTYPES


def register(sub) -> None:
    summary = "write the kernels a model would use as LLVM IR / assembly, with the plan"
    p = sub.add_parser("kernels", help=summary, description=(
        "Write every kernel a model would use as LLVM IR and/or assembly, one file per kernel "
        "named by its spec, with the plan as plan.json. MODEL is a jitvoc model file or an "
        "installed model's name (the five matrix kernels and the fused generation loop: the "
        "WaveRNN cell's, its cores and schedule.txt) or an .npz of named 2-D matrices (one "
        "kernel per matrix). Any known CPU generation works, also one this host cannot run: "
        "the kernels are compiled, never run."))
    p.add_argument("model", nargs="?", help="jitvoc model file (.npz with meta) or installed "
                                             "model name, or an .npz of 2-D matrices")
    p.add_argument("--cell", metavar="NAME:HIDDEN", help="instead of a model, a library cell: "
                   "gru, lstm or gilr as NAME:HIDDEN or NAME:INPUT:HIDDEN, sru as sru:SIZE, "
                   "wavernn as wavernn:HIDDEN (even) "
                   "(its fused loop, its products' kernels and schedule.txt)")
    p.add_argument("--density", type=float, default=1.0,
                   help="with --cell: the share of 16x1 blocks of its random matrices kept "
                        "(default 1: dense)")
    p.add_argument("--cpu", help="CPU generation to compile for (default: $JITVOC_CPU or native);"
                                 " need not be runnable here")
    p.add_argument("--dtype", choices=DTYPES, default="int8", help="arithmetic (default int8)")
    p.add_argument("--emit", choices=("ll", "asm", "both"), default="both",
                   help="ll: LLVM IR as emitted, asm: assembly for --cpu (default both)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.set_defaults(func=_kernels)


MAX_MATRICES = 64        # members of an .npz of matrices
MAX_BYTES = 1 << 30      # their data, in total


def _read_npz(path) -> dict | None:
    """The arrays of an .npz of matrices, read with bounds (npy.Archive); None for a jitvoc
    model file (a `meta` member), which load_model reads."""
    try:
        with npy.Archive(path, MAX_MATRICES) as archive:
            headers = archive.headers()
            if "meta" in headers:
                return None
            total = sum(h.nbytes for h in headers.values())
            if total > MAX_BYTES:
                raise JitvocError(f"{path}: its arrays hold {total} bytes, over the limit of "
                                  f"{MAX_BYTES}")
            return {k: archive.read(k, h) for k, h in headers.items()}
    except npy.NpyError as e:
        raise JitvocError(f"{path}: {e}") from None


def matrix_plans(path, arrays, dtype, gen) -> dict:
    """(name -> untuned Plan, name -> mask) for each named 2-D matrix of the .npz file `path`,
    whose arrays are `arrays`."""
    if not arrays:
        raise JitvocError(f"{path}: holds no arrays")
    plans, masks = {}, {}
    for name, w in arrays.items():
        if w.ndim != 2:
            raise JitvocError(f"{path}: array {name!r} has shape {w.shape}; every array of a "
                              f"matrix file must be 2-D (or give a jitvoc model file)")
        w = mv_plan.check_matrix(w)
        mask = masks[name] = w != 0
        codes, scale = mv_plan.quantize_weights(w, dtype)
        plans[name] = mv_plan.build_plan(codes, scale, mask, dtype, gen)
    return plans, masks


def _write(out, name, module, gen, emit) -> list[str]:
    files = []
    if emit in ("ll", "both"):
        files.append(_put(out, f"{name}.ll", str(module)))
    if emit in ("asm", "both"):
        files.append(_put(out, f"{name}.s", jit.assembly(module, gen)))
    return files


def _put(out, filename, text) -> str:
    with open(os.path.join(out, filename), "w") as f:
        f.write(text)
    return filename


def _matrix_entry(plan, mask) -> dict:
    """plan.json's entry for one matrix: the spec's fields, its name, panels and density."""
    return dict(asdict(plan.spec), block=list(plan.spec.block), name=plan.spec.name,
                family=plan.spec.family, shape=list(plan.w_codes.shape),
                panels=plan.packed.n_panels, density=float(np.count_nonzero(mask) / mask.size))


def _kernels(args) -> int:
    if (args.model is None) == (args.cell is None):
        raise JitvocError("give a MODEL or --cell NAME:HIDDEN (one of them)")
    if args.cell is not None:
        return _cell_kernels(args)
    args.model = pretrained.resolve(args.model)
    gen = cpu_mod.resolve(args.cpu)
    make_output_folder(args.out, "--out names the folder the kernels go to")
    doc = {"source": os.path.abspath(args.model), "cpu": gen.name, "llvm_cpu": gen.llvm_cpu,
           "llvm_features": gen.llvm_features, "dtype": args.dtype,
           "runnable_here": cpu_mod.runnable(gen), "compiler": compiler_version(),
           "llvm_version": ".".join(map(str, jit.llvm_version())), "matrices": {}, "loop": None,
           "files": []}
    arrays = _read_npz(args.model)
    if arrays is None:
        model = load_model(args.model)   # validates the file as a model
        ranges = None if args.dtype == "float32" else activation_ranges(calibrate(model))
        vplan = plan_vocoder(model, args.dtype, gen, ranges)
        plans = vplan.plans
        masks = {m: mk for m, (_, mk) in model.matrices().items()}
        doc["kind"], doc["hidden"] = "model", model.hidden
        schedule, in_loop = vocoder_cell(vplan)
        doc["loop"] = emit_cell.loop_name(schedule, in_loop)
        doc["input_formats"] = {m: str(f) for m, f in vplan.formats.items()}
    else:
        vplan = None
        plans, masks = matrix_plans(args.model, arrays, args.dtype, gen)
        doc["kind"] = "matrices"
    written = set()
    for name, plan in plans.items():
        doc["matrices"][name] = _matrix_entry(plan, masks[name])
        if plan.spec.name not in written:   # same spec, same code
            written.add(plan.spec.name)
            doc["files"] += _write(args.out, plan.spec.name,
                                   emit_spmv.build_module(plan.spec, plan.packed, gen), gen,
                                   args.emit)
    if vplan is not None:
        doc["files"] += _vocoder_loop(args, schedule, in_loop, gen)
    doc["files"].append("plan.json")
    with open(os.path.join(args.out, "plan.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(doc['files'])} files to {args.out} for {gen.name} "
          f"(LLVM {gen.llvm_cpu}, {args.dtype})"
          + ("" if doc["runnable_here"] else "; this host cannot run them"))
    for name, e in doc["matrices"].items():
        print(f"  {name:<12} {e['name']}  {e['panels']} panels, density {e['density']:.3f}")
    if vplan is not None:
        print(f"  loop         {doc['loop']}")
    return 0


def _vocoder_loop(args, schedule, in_loop: dict, gen) -> list:
    """The vocoder's loop (its WaveRNN cell), the cores it calls and its schedule.txt."""
    files = []
    for symbol, build in emit_cell.core_modules(schedule, in_loop, gen):
        files += _write(args.out, symbol, build(), gen, args.emit)
    files += _write(args.out, emit_cell.loop_name(schedule, in_loop),
                    emit_cell.build(schedule, in_loop, gen), gen, args.emit)
    names = {label: [kp.spec.name] for label, kp in in_loop.items()}
    return files + [_put(args.out, "schedule.txt", plan_cell.describe(schedule, names) + "\n")]


def _cell_kernels(args) -> int:
    """--cell: the cell's loop, the kernels of its products (in-loop: one; hoisted: the
    B-vector and one-vector kernels) for random weights of --density, and its schedule."""
    if not 0 < args.density <= 1:
        raise JitvocError(f"--density must be in (0, 1], got {args.density}")
    gen = cpu_mod.resolve(args.cpu)
    cell = cells.named(args.cell)
    plan = plan_cell.plan(cell, args.dtype)
    weights = random_weights(cell, args.density)
    make_output_folder(args.out, "--out names the folder the kernels go to")
    files, kernels, doc = [], {}, {}
    in_loop = plan_cell.in_loop_kernels(plan, weights, gen)
    for product in (*plan.hoisted, *plan.products):
        W = product.stacked(weights)
        codes, scale = mv_plan.quantize_weights(W, args.dtype)
        kps = [mv_plan.build_plan(codes, scale, W != 0, args.dtype, gen, vectors=vectors)
               for vectors in (HOIST_VECTORS, 1)] if product.hoisted else [in_loop[product.label]]
        kernels[product.label] = [kp.spec.name for kp in kps]
        for kp in kps:
            doc[kp.spec.name] = _matrix_entry(kp, W != 0)
            files += _write(args.out, kp.spec.name,
                            emit_spmv.build_module(kp.spec, kp.packed, gen), gen, args.emit)
    for symbol, build in emit_cell.core_modules(plan, in_loop, gen):
        files += _write(args.out, symbol, build(), gen, args.emit)
    loop = emit_cell.loop_name(plan, in_loop)
    files += _write(args.out, loop, emit_cell.build(plan, in_loop, gen), gen, args.emit)
    schedule = plan_cell.describe(plan, kernels)
    files.append(_put(args.out, "schedule.txt", schedule + "\n"))
    files.append(_put(args.out, "plan.json", json.dumps({
        "cell": args.cell, "cpu": gen.name, "dtype": args.dtype, "density": args.density,
        "loop": loop, "products": kernels, "kernels": doc, "files": files + ["plan.json"]},
        indent=1) + "\n"))
    print(f"wrote {len(files)} files to {args.out} for {gen.name} ({args.dtype})")
    print(schedule)
    return 0
