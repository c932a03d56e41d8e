"""`jitvoc bench kernels`: block-sparse matrix-vector kernels against the dense roofline and peers.

Per CPU generation, dtype and matrix: ns per call (MatVec.time_call, native loop) and effective
GMAC/s = non-zeros / ns. The roofline is jitvoc's best dense int8 kernel on an L2-resident
512x512 matrix (native, accumulators 2/4/8). Peers, single-threaded, on the same float32
matrices: NumPy dense `W @ x`, scipy.sparse CSR `csr @ x`, and with torch installed an eager
`nn.Linear` and a dynamic-quantized int8 `nn.Linear`. On AUTOTUNE_MATRICES (patterns of 16x1,
8x4 and 1x1 blocks) the planner's untuned choice is compared with every autotune candidate, the
best of each block shape in a column of its own. Kernels for B vectors (VECTORS_MATRICES, native):
effective GMAC/s = B · non-zeros / ns per call for B in VECTORS, timed in interleaved rounds.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from .. import cpu as cpu_mod
from ..matvec import MatVec
from ..plan import matvec as planner
from ..progress import Steps
from . import report
from ..optional import require

DTYPES = ("int8", "int16", "float32")
QUICK_DTYPES = ("int8",)


@dataclass(frozen=True)
class Matrix:
    label: str
    rows: int
    cols: int
    density: float
    block: tuple = (16, 1)


WAVERNN_R = tuple(Matrix(f"WaveRNN R {d:.0%}", 2688, 896, d)
                  for d in (0.03, 0.05, 0.10, 0.25, 0.50, 1.0))
MATRICES = WAVERNN_R + (Matrix("WaveRNN O1/O3", 448, 448, 0.10),
                        Matrix("WaveRNN O2/O4", 256, 448, 0.10),
                        Matrix("LPCNet GRU-A", 1152, 384, 0.10))
QUICK_MATRICES = (WAVERNN_R[1], WAVERNN_R[-1], MATRICES[6])
AUTOTUNE_MATRICES = (WAVERNN_R[1],      # 2688x896 at 5%, 16x1
                     Matrix("WaveRNN R 5% 8x4", 2688, 896, 0.05, (8, 4)),
                     Matrix("LPCNet GRU-A 8x4", 1152, 384, 0.10, (8, 4)),
                     Matrix("WaveRNN R 10% 1x1", 2688, 896, 0.10, (1, 1)),
                     Matrix("WaveRNN R 50% 1x1", 2688, 896, 0.50, (1, 1)))
VECTORS = (1, 2, 4, 8, 16)
VECTORS_MATRICES = (WAVERNN_R[1], MATRICES[6], MATRICES[8])   # R at 5%, O1/O3, GRU-A 1152x384
SHAPES = ("16x1", "8x4", "16x4", "4x4", "1x1", "dense")   # columns of the autotune table
ROOFLINE_SHAPE = (512, 512)
ROOFLINE_ACCUMULATORS = (2, 4, 8)


def make_matrix(m: Matrix) -> tuple[np.ndarray, np.ndarray]:
    """A float32 matrix with a random block pattern at m.density (fixed seed), and its mask."""
    bh, bw = m.block
    rng = np.random.default_rng([m.rows, m.cols, round(1e4 * m.density), bh, bw])
    nb = (m.rows // bh, m.cols // bw)
    keep = np.zeros(nb[0] * nb[1], bool)
    keep[rng.permutation(keep.size)[:max(1, round(m.density * keep.size))]] = True
    mask = np.kron(keep.reshape(nb), np.ones((bh, bw), bool)).astype(bool)
    w = (rng.standard_normal((m.rows, m.cols)) / np.sqrt(m.density * m.cols)).astype(np.float32)
    return np.where(mask, w, np.float32(0)), mask


def _x(cols: int) -> np.ndarray:
    return np.random.default_rng(cols).standard_normal(cols).astype(np.float32)


def _plan(w, mask, dtype, gen, **kw) -> planner.Plan:
    codes, scale = planner.quantize_weights(w, dtype)
    return planner.build_plan(codes, scale, mask, dtype, gen, **kw)


def _compiled(plan, gen) -> tuple[MatVec, float]:
    t0 = time.perf_counter()
    mv = MatVec(plan, gen)
    return mv, time.perf_counter() - t0


def roofline(repeats: int) -> dict:
    """The machine's dense roofline: the best native dense int8 kernel, 512x512 (L2-resident)."""
    gen = cpu_mod.resolve("native")
    rows, cols = ROOFLINE_SHAPE
    w = np.random.default_rng(1).standard_normal((rows, cols)).astype(np.float32)
    mask, x = np.ones((rows, cols), bool), _x(cols)
    tried = []
    for acc in ROOFLINE_ACCUMULATORS:
        mv, _ = _compiled(_plan(w, mask, "int8", gen, variant="dense", accumulators=acc), gen)
        ns, spread = report.summary(report.time_native(mv, x, repeats))
        tried.append({"spec": mv.spec, "accumulators": acc, "ns_per_call": ns,
                      "ns_spread": spread, "gmacs": rows * cols / ns})
    best = min(tried, key=lambda t: t["ns_per_call"])
    return {"bench": "roofline", "label": f"dense roofline {rows}x{cols} int8", "cpu": "native",
            "llvm_cpu": gen.llvm_cpu, "rows": rows, "cols": cols, "density": 1.0,
            "dtype": "int8", **best, "tried": tried}


def peers(w: np.ndarray, repeats: int) -> dict:
    """ns per call of the single-threaded float32 peers on the dense matrix `w`."""
    require("scipy", "benchmarking against scipy.sparse", "jitvoc[bench]")
    import scipy.sparse
    x = _x(w.shape[1])
    csr = scipy.sparse.csr_matrix(w)
    out = {}
    for key, fn in (("numpy", lambda: w @ x), ("scipy_csr", lambda: csr @ x)):
        out[f"{key}_ns"], out[f"{key}_spread"] = report.summary(report.time_python(fn, repeats))
    torch = report.torch_or_none()
    if torch is None:
        out.update(torch_ns=None, torch_spread=None, torch_int8_ns=None, torch_int8_spread=None)
        return out
    with torch.inference_mode():
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data = torch.from_numpy(w.copy())
        with warnings.catch_warnings():   # "quantized tensors are deprecated"
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin),
                                                       {torch.nn.Linear}, dtype=torch.qint8)
        xt = torch.from_numpy(x)[None]
        for key, mod in (("torch", lin), ("torch_int8", q)):
            out[f"{key}_ns"], out[f"{key}_spread"] = report.summary(
                report.time_python(lambda: mod(xt), repeats))
    return out


def kernel_record(m: Matrix, w, mask, dtype, gen, repeats, peer: dict, roof: dict) -> dict:
    mv, build_s = _compiled(_plan(w, mask, dtype, gen), gen)
    ns, spread = report.summary(report.time_native(mv, _x(m.cols), repeats))
    nnz = int(np.count_nonzero(mask))
    gmacs = nnz / ns
    rec = {"bench": "kernel", "label": f"{gen.name} {dtype} {m.label}", "matrix": m.label,
           "cpu": gen.name, "llvm_cpu": gen.llvm_cpu, "rows": m.rows, "cols": m.cols,
           "density": m.density, "block": f"{m.block[0]}x{m.block[1]}", "nnz": nnz,
           "dtype": dtype, "spec": mv.spec, "family": mv.kernel.family,
           "variant": mv.kernel.variant, "ns_per_call": ns, "ns_spread": spread, "gmacs": gmacs,
           "roofline_gmacs": roof["gmacs"], "roofline_ratio": gmacs / roof["gmacs"],
           "build_s": build_s, **peer}
    for key in ("numpy", "scipy_csr", "torch", "torch_int8"):
        rec[f"speedup_vs_{key}"] = None if peer.get(f"{key}_ns") is None else peer[f"{key}_ns"] / ns
    return rec


def autotune_record(m: Matrix, w, mask, dtype, gen, repeats, baked: bool = True) -> dict:
    """The planner's untuned choice against every autotune candidate, all compiled first and
    then timed in 2 x `repeats` interleaved rounds (one sample of each per round), so that a
    drift of the machine's speed during the run reaches every kernel alike instead of showing
    as a ratio. The best candidate is picked on the even rounds and compared on the odd ones
    (untuned/best: the median of those rounds' paired ratios): picked and compared on the
    same samples, the least of a dozen noisy medians would sit below the best kernel's time
    by the noise (near-ties such as u8a4 and u4a2 gave untuned/best up to 1.2)."""
    codes, scale = planner.quantize_weights(w, dtype)
    x = _x(m.cols)
    untuned, build_s = _compiled(_plan(w, mask, dtype, gen), gen)
    kernels, candidates, shape = {untuned.spec: untuned}, set(), {}
    for plan in planner.candidates(codes, scale, mask, dtype, gen):
        if not baked and plan.spec.variant == "baked":
            continue
        mv, dt = _compiled(plan, gen)
        build_s += dt
        kernels.setdefault(mv.spec, mv)
        candidates.add(mv.spec)
        shape[mv.spec] = ("dense" if plan.spec.variant == "dense"
                          else f"{plan.spec.block[0]}x{plan.spec.block[1]}")
    samples = {name: [] for name in kernels}
    for _ in range(2 * repeats):
        for name, mv in kernels.items():
            samples[name] += report.time_native(mv, x, 1)
    stats = {name: report.summary(v) for name, v in samples.items()}
    best = min(candidates, key=lambda n: report.summary(samples[n][0::2])[0])
    compared = {n: samples[n][1::2] for n in (untuned.spec, best)}
    untuned_ns, (best_ns, best_spread) = (report.summary(compared[untuned.spec])[0],
                                         report.summary(compared[best]))
    return {"bench": "autotune", "label": f"{gen.name} {dtype} autotune {m.label}",
            "matrix": m.label, "cpu": gen.name, "rows": m.rows, "cols": m.cols,
            "density": m.density, "dtype": dtype, "untuned_spec": untuned.spec,
            "untuned_ns": untuned_ns, "best_spec": best, "best_ns": best_ns,
            "spread": best_spread,
            "untuned_over_best": report.paired_ratio(compared[untuned.spec], compared[best]),
            "candidates": len(candidates), "baked_candidates": baked, "build_s": build_s,
            "all": {name: st[0] for name, st in stats.items()},
            "best_by_shape": {sh: min(stats[n][0] for n in candidates if shape[n] == sh)
                              for sh in set(shape.values())}}


def vectors_record(m: Matrix, w, mask, dtype, gen, repeats) -> dict:
    """The planner's kernel for each B in VECTORS, compiled first, then timed in interleaved
    rounds (as autotune_record), so that ratios between B are measured alike."""
    kernels = {n: _compiled(_plan(w, mask, dtype, gen, vectors=n), gen)[0] for n in VECTORS}
    xs = {n: np.random.default_rng(n).standard_normal((n, m.cols) if n > 1 else m.cols)
          .astype(np.float32) for n in VECTORS}
    samples = {n: [] for n in VECTORS}
    for _ in range(repeats):
        for n, mv in kernels.items():
            samples[n] += report.time_native(mv, xs[n], 1)
    nnz = int(np.count_nonzero(mask))
    per = {n: report.summary(v) for n, v in samples.items()}
    return {"bench": "vectors", "label": f"{gen.name} {dtype} vectors {m.label}",
            "matrix": m.label, "cpu": gen.name, "rows": m.rows, "cols": m.cols,
            "density": m.density, "dtype": dtype, "nnz": nnz,
            "by_vectors": {n: {"spec": kernels[n].spec, "ns_per_call": ns, "ns_spread": sp,
                               "gmacs": n * nnz / ns} for n, (ns, sp) in per.items()}}


@dataclass
class Config:
    gens: list            # runnable Generation objects
    dtypes: tuple
    matrices: tuple
    repeats: int
    autotune: dict        # generation name -> dtypes to autotune
    autotune_matrices: tuple
    baked: bool           # autotune includes the (slow to compile) baked candidates
    vectors: tuple        # dtypes of the B-vector kernels (native)

    @classmethod
    def make(cls, gens, quick: bool, dtypes=None, repeats=None) -> "Config":
        dtypes = tuple(dtypes or (QUICK_DTYPES if quick else DTYPES))
        # Autotune on native only: baked candidates for old generations take minutes to
        # compile (x86-64: > 5 min for one 2688x896 kernel).
        autotune = {"native": (tuple(d for d in dtypes if d == "int8") or dtypes[:1]) if quick
                    else dtypes}
        return cls(list(gens), dtypes, QUICK_MATRICES if quick else MATRICES,
                   repeats or (5 if quick else 7), autotune,
                   AUTOTUNE_MATRICES[:1] if quick else AUTOTUNE_MATRICES, baked=not quick,
                   vectors=autotune["native"])

    def steps(self) -> int:
        n_auto = len(self.autotune_matrices) * sum(len(d) for g, d in self.autotune.items()
                                                   if any(x.name == g for x in self.gens))
        n_vec = len(VECTORS_MATRICES) * len(self.vectors) * any(g.name == "native"
                                                                for g in self.gens)
        return 1 + len(self.matrices) * (1 + len(self.gens) * len(self.dtypes)) + n_auto + n_vec


def run(cfg: Config, progress: Steps) -> list[dict]:
    progress.step("kernels roofline (native dense int8 512x512)")
    roof = roofline(cfg.repeats)
    records = [roof]
    for m in cfg.matrices:
        w, mask = make_matrix(m)
        progress.step(f"kernels peers {m.label} {m.rows}x{m.cols}")
        peer = peers(w, cfg.repeats)
        for gen in cfg.gens:
            for dtype in cfg.dtypes:
                progress.step(f"kernels {gen.name} {dtype} {m.label} {m.rows}x{m.cols}")
                rec = kernel_record(m, w, mask, dtype, gen, cfg.repeats, peer, roof)
                records.append(rec)
    for m in cfg.autotune_matrices:
        w, mask = make_matrix(m)
        for gen in cfg.gens:
            for dtype in cfg.autotune.get(gen.name, ()):
                progress.step(f"kernels {gen.name} {dtype} autotune {m.label}")
                records.append(autotune_record(m, w, mask, dtype, gen, cfg.repeats, cfg.baked))
    for m in VECTORS_MATRICES:
        w, mask = make_matrix(m)
        for gen in (g for g in cfg.gens if g.name == "native"):
            for dtype in cfg.vectors:
                progress.step(f"kernels {gen.name} {dtype} {m.label}, B = {VECTORS}")
                records.append(vectors_record(m, w, mask, dtype, gen, cfg.repeats))
    return records


# --- tables --------------------------------------------------------------------------------------
def _short(spec: str) -> str:
    """spmv_s8u8_16x1_avx512vnni_idx_u4a2_2688x896_xu -> 16x1 avx512vnni idx u4a2 xu: the
    name without operation, operands and shape."""
    parts = spec.split("_")
    keep = [p for p in parts[2:] if not (("x" in p) and p.replace("x", "").isdigit()
                                          and p.count("x") == 1 and p != parts[2])]
    return " ".join(keep) or spec


def tables(records: list[dict]) -> list[report.Table]:
    kern = [r for r in records if r["bench"] == "kernel"]
    roof = next((r for r in records if r["bench"] == "roofline"), None)
    out = []
    if kern:
        has_torch = any(r.get("torch_ns") is not None for r in kern)
        headers = ["cpu", "dtype", "matrix", "shape", "kernel", "ns/call", "GMAC/s", "roofline",
                   "x numpy", "x scipy CSR"] + (["x torch", "x torch int8"] if has_torch else []) \
            + ["spread"]
        rows = []
        for r in kern:
            row = [r["cpu"], r["dtype"], r["matrix"], f"{r['rows']}x{r['cols']}",
                   _short(r["spec"]), report.fmt(r["ns_per_call"]), report.fmt(r["gmacs"]),
                   report.pct(r["roofline_ratio"]), report.fmt(r["speedup_vs_numpy"]),
                   report.fmt(r["speedup_vs_scipy_csr"])]
            if has_torch:
                row += [report.fmt(r["speedup_vs_torch"]), report.fmt(r["speedup_vs_torch_int8"])]
            rows.append(row + [report.pct(r["ns_spread"])])
        notes = []
        if roof:
            notes.append(f"roofline = {roof['gmacs']:.1f} GMAC/s: {roof['spec']} on native "
                         f"(best of accumulators {', '.join(str(t['accumulators']) for t in roof['tried'])})")
        notes.append("GMAC/s counts non-zeros only; x peer = peer ns / jitvoc ns (float32 peers, "
                     "one thread)")
        out.append(report.Table("block-sparse matrix-vector kernels (one thread)", headers, rows,
                                notes))
        peer_rows = []
        for r in {r["matrix"]: r for r in kern}.values():
            peer_rows.append([r["matrix"], f"{r['rows']}x{r['cols']}", r["nnz"],
                              report.fmt(r["numpy_ns"]), report.fmt(r["scipy_csr_ns"]),
                              report.fmt(r.get("torch_ns")), report.fmt(r.get("torch_int8_ns"))])
        out.append(report.Table("peers, ns per call (float32 unless noted, one thread)",
                                ["matrix", "shape", "nnz", "numpy dense", "scipy CSR",
                                 "torch Linear", "torch dyn-int8 Linear"], peer_rows))
    out += _vectors_tables(records)
    auto = [r for r in records if r["bench"] == "autotune"]
    if auto:
        rows = [[r["matrix"], f"{r['rows']}x{r['cols']}", r["cpu"], r["dtype"],
                 _short(r["untuned_spec"]), report.fmt(r["untuned_ns"]), _short(r["best_spec"]),
                 report.fmt(r["best_ns"]), report.fmt(r["untuned_over_best"]), r["candidates"]]
                + [report.fmt(r["best_by_shape"].get(sh)) for sh in SHAPES] for r in auto]
        notes = ["the shape columns: ns of the best candidate of that block shape (- : none "
                 "tried; autotune tries every shape the pattern is made of, and the cost "
                 "model's two best)"]
        if not all(r["baked_candidates"] for r in auto):
            notes.append("--quick leaves out the baked candidates (seconds to compile each)")
        out.append(report.Table("planner: untuned choice vs best autotune candidate",
                                ["matrix", "shape", "cpu", "dtype", "untuned", "ns",
                                 "best candidate", "ns", "untuned/best", "candidates"]
                                + [f"best {sh}" for sh in SHAPES], rows, notes))
    return out


def _vectors_tables(records: list[dict]) -> list[report.Table]:
    recs = [r for r in records if r["bench"] == "vectors"]
    if not recs:
        return []
    rows = []
    for r in recs:
        by = {int(n): v for n, v in r["by_vectors"].items()}   # JSON keys come back as str
        for n, v in sorted(by.items()):
            rows.append([r["cpu"], r["dtype"], r["matrix"], f"{r['rows']}x{r['cols']}", n,
                         _short(v["spec"]), report.fmt(v["ns_per_call"]),
                         report.fmt(v["ns_per_call"] / n), report.fmt(v["gmacs"]),
                         report.fmt(v["gmacs"] / by[1]["gmacs"]), report.pct(v["ns_spread"])])
    return [report.Table("kernels for B vectors (one weight load for all B, one thread)",
                         ["cpu", "dtype", "matrix", "shape", "B", "kernel", "ns/call",
                          "ns/vector", "GMAC/s", "x B=1", "spread"], rows,
                         ["GMAC/s = B x non-zeros / ns per call; the B kernels timed in "
                          "interleaved rounds"])]
