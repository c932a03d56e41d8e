"""`jitvoc bench scan`: linear-recurrence throughput over T × D, and a GILR layer forward pass.

Kernels per cell: the serial kernel, the parallel scan with 1 and with all threads, the planner's
choice and a NumPy loop over T (timed on at most NUMPY_STEPS steps: its cost per step is flat).
Each figure is the median of repeats; elements/s = T·D / time. Cells whose arrays exceed
--max-gib are skipped and listed. The closing note compares the serial scan's bytes/s
(12 bytes per element: read λ and x, write h) with a measured copy bandwidth.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from .. import cpu as cpu_mod
from ..errors import JitvocError
from ..layers import GILR
from ..options import count
from ..plan import scan as plan_scan
from ..recurrence import auto_plan, empty, parallel_speedup
from ..recurrence import run as run_plan
from .report import median_seconds

T_FULL, D_FULL = (1 << 10, 1 << 13, 1 << 16, 1 << 20), (32, 256, 1024)
T_QUICK, D_QUICK = (1 << 10, 1 << 13, 1 << 16), (32, 256)
NUMPY_STEPS = 4096
GILR_T, GILR_D = 1 << 16, 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the records as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="heatmap of elements/s (matplotlib)")
    parser.add_argument("--quick", action="store_true", help="a smaller grid, fewer repeats")
    parser.add_argument("--cpu", default=None, help="CPU generation (default: native)")
    parser.add_argument("--max-gib", type=float, default=1.0,
                        help="skip cells whose [T, D] array exceeds this (default 1 GiB)")
    parser.add_argument("--repeats", type=count, default=None)


def _inputs(T: int, D: int):
    block = np.random.default_rng(0).uniform(0.5, 1.0, (min(T, 4096), D)).astype(np.float32)
    return np.resize(block, (T, D)), np.resize(block - 0.75, (T, D))


def _numpy_loop(lam, x, h0, out):
    h = h0
    for t in range(len(lam)):
        h = out[t] = lam[t] * h + x[t]


def copy_bandwidth(nbytes: int = 256 << 20) -> float:
    """Bytes/s of a large numpy copy (read + write), the memory roof for comparison."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    return 2 * a.nbytes / median_seconds(lambda: np.copyto(b, a), 5)


def _record(kernel, T, D, threads, seconds, spec, **extra):
    return {"kernel": kernel, "T": T, "D": D, "threads": threads, "ns": seconds * 1e9,
            "elements_per_s": T * D / seconds, "gb_per_s": 12 * T * D / seconds / 1e9,
            "spec": spec, **extra}


def scan_cell(T: int, D: int, gen, threads: int, repeats: int) -> list[dict]:
    lam, x = _inputs(T, D)
    out, h0 = empty((T, D)), np.zeros(D, np.float32)
    args = (gen, lam.ctypes.data, x.ctypes.data, out.ctypes.data, h0, D)
    variants = {
        "serial": plan_scan.plan(T, D, gen, 1, "serial"),
        "parallel_1": plan_scan.plan(T, D, gen, threads, "parallel").with_threads(1),
        f"parallel_{threads}": plan_scan.plan(T, D, gen, threads, "parallel"),
        "auto": auto_plan(T, D, gen, threads),
    }
    records = []
    for kernel, plan in variants.items():
        dt = median_seconds(lambda: run_plan(plan, *args), repeats)
        records.append(_record(kernel, T, D, plan.threads, dt, plan.name))
    steps = min(T, NUMPY_STEPS)
    dt = median_seconds(lambda: _numpy_loop(lam[:steps], x[:steps], h0, out[:steps]),
                      max(1, repeats // 2)) * T / steps
    records.append(_record("numpy", T, D, 1, dt, "numpy_loop", measured_steps=steps))
    return records


def gilr_records(T: int, D: int, threads: int, repeats: int) -> list[dict]:
    """GILR forward with 1 and all threads, writing into a reused output (`out=`, as a
    streaming caller would) and into a fresh array per call (which adds page faults)."""
    layer = GILR.init(D, D, seed=0)
    x = np.random.default_rng(1).standard_normal((T, D)).astype(np.float32)
    h = empty((T, D))
    records = []
    for n in sorted({1, threads}):
        dt = median_seconds(lambda: layer.forward(x, threads=n, out=h), repeats)
        records.append(_record("gilr_forward", T, D, n, dt, f"gilr_d{D}_t{n}"))
        dt = median_seconds(lambda: layer.forward(x, threads=n), repeats)
        records.append(_record("gilr_forward_fresh", T, D, n, dt, f"gilr_d{D}_t{n}_fresh"))
    return records


def run_bench(args) -> list[dict]:
    if args.plot:
        _pyplot()   # fail before measuring, not after
    gen = cpu_mod.resolve(args.cpu)
    cpu_mod.require_runnable(gen)
    threads = plan_scan.available_threads()
    repeats = args.repeats or (3 if args.quick else 5)
    Ts, Ds = (T_QUICK, D_QUICK) if args.quick else (T_FULL, D_FULL)
    records, skipped = [], []
    for T in Ts:
        for D in Ds:
            if 4 * T * D > args.max_gib * (1 << 30):
                skipped.append((T, D))
                continue
            records += scan_cell(T, D, gen, threads, repeats)
    records += gilr_records(GILR_T, GILR_D, threads, repeats)
    bandwidth = copy_bandwidth()
    records.append({"kernel": "memory_copy", "T": 0, "D": 0, "threads": 1, "ns": 0.0,
                    "elements_per_s": 0.0, "gb_per_s": bandwidth / 1e9, "spec": "numpy_copyto"})
    _print(records, skipped, threads, bandwidth)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": records, "skipped": skipped, "cpu": gen.name}, f, indent=1)
    if args.plot:
        _plot(records, args.plot, threads)
    return records


run = run_bench  # the CLI entry point: run(args) -> list[dict]


def _by(records, kernel):
    return {(r["T"], r["D"]): r for r in records if r["kernel"] == kernel}


def _print(records, skipped, threads, bandwidth) -> None:
    cols = ["serial", "parallel_1", f"parallel_{threads}", "auto", "numpy"]
    table = {k: _by(records, k) for k in cols}
    print(f"linear recurrence, Gelem/s (median), {threads} threads available")
    print(f"{'T':>8} {'D':>5} " + " ".join(f"{c:>11}" for c in cols)
          + "  auto/best  serial/numpy  serial GB/s")
    for key, r in sorted(table["serial"].items()):
        row = [table[c][key]["elements_per_s"] / 1e9 for c in cols]
        best = max(row[0], row[2])
        print(f"{key[0]:>8} {key[1]:>5} " + " ".join(f"{v:>11.3f}" for v in row)
              + f"  {row[3] / best:>9.2f}  {row[0] / row[4]:>12.0f}"
              + f"  {table['serial'][key]['gb_per_s']:>11.1f}")
    for T, D in skipped:
        print(f"{T:>8} {D:>5}  skipped: a [T, D] float32 array is {4 * T * D / 2**30:.1f} GiB")
    for kernel, what in (("gilr_forward", "into a reused output"),
                         ("gilr_forward_fresh", "into a fresh array per call")):
        gilr = sorted((r for r in records if r["kernel"] == kernel), key=lambda r: r["threads"])
        if gilr:
            base = gilr[0]["ns"]
            print("GILR forward (projection + gates + scan), T = %d, D = %d, %s:"
                  % (GILR_T, GILR_D, what))
            for r in gilr:
                print(f"  {r['threads']} threads: {r['ns'] / 1e6:8.1f} ms  "
                      f"({base / r['ns']:.2f}x of 1 thread)")
    big = max(table["serial"].values(), key=lambda r: r["T"] * r["D"])
    share = big["gb_per_s"] * 1e9 / bandwidth
    print(f"planner: parallel_speedup({threads}) = {parallel_speedup(threads):.2f} "
          f"(parallel when > {1 / plan_scan.PARALLEL_MARGIN:.2f})")
    print(f"memory: numpy copy moves {bandwidth / 1e9:.1f} GB/s; the serial scan at "
          f"T={big['T']}, D={big['D']} moves {big['gb_per_s']:.1f} GB/s (12 B/element) = "
          f"{100 * share:.0f}% of it: " + ("bound by memory bandwidth, not the recurrence."
                                           if share > 0.6 else "not memory-bound."))


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise JitvocError("--plot needs matplotlib: pip install 'jitvoc[plot]'") from None
    return plt


def _plot(records, path: str, threads: int) -> None:
    plt = _pyplot()
    kernels = ["serial", "parallel_1", f"parallel_{threads}", "numpy"]
    grids = {k: _by(records, k) for k in kernels}
    Ts = sorted({T for T, _ in grids["serial"]})
    Ds = sorted({D for _, D in grids["serial"]})
    every = [r["elements_per_s"] for g in grids.values() for r in g.values()]
    lo, hi = np.log10(min(every)), np.log10(max(every))   # one colour scale for all panels
    fig, axes = plt.subplots(1, len(kernels), figsize=(4 * len(kernels), 3.6), squeeze=False)
    for ax, k in zip(axes[0], kernels):
        z = np.array([[grids[k].get((T, D), {}).get("elements_per_s", np.nan) for T in Ts]
                      for D in Ds])
        im = ax.imshow(np.log10(z), origin="lower", cmap="viridis", aspect="auto",
                       vmin=lo, vmax=hi)
        for (i, j), v in np.ndenumerate(z):
            ax.text(j, i, "-" if np.isnan(v) else f"{v / 1e9:.2g}", ha="center", va="center",
                    color="w", fontsize=8)
        ax.set_xticks(range(len(Ts)), [f"{T // 1024}k" for T in Ts])
        ax.set_yticks(range(len(Ds)), Ds)
        ax.set_xlabel("T")
        ax.set_ylabel("D")
        ax.set_title(f"{k} (Gelem/s)")
        fig.colorbar(im, ax=ax, label="log10 elements/s")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jitvoc bench scan", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        run_bench(parser.parse_args(argv))
    except JitvocError as e:
        print(f"jitvoc: error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
