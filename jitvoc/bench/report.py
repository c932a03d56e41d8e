"""Shared benchmark plumbing: timing statistics, single-threaded peers, progress on stderr, and the
outputs (terminal table, markdown, JSON, plot) with the spread warning.

Every figure is the median of repeats; its spread is the interquartile range over the median
(IQR/median). A spread above NOISY (10%) means the machine was busy: the run warns.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time

import numpy as np

from ..optional import require

from ..blas import blas_threads
from ..errors import JitvocError

NOISY = 0.10  # spread (IQR/median) above which a figure is flagged


# --- statistics and timing -----------------------------------------------------------------------
def summary(samples) -> tuple[float, float]:
    """(median, spread) of a list of timings; spread = IQR / median."""
    a = np.asarray(samples, dtype=np.float64)
    med = float(np.median(a))
    q1, q3 = np.percentile(a, [25, 75])
    return med, float((q3 - q1) / med) if med > 0 else 0.0


def paired_ratio(numerators, denominators) -> float:
    """The median of the quotients of samples taken in the same rounds: the machine's drift
    between rounds cancels, where a ratio of medians would keep it."""
    return float(np.median(np.divide(numerators, denominators)))


def median_seconds(fn, repeats: int, clock=time.perf_counter) -> float:
    """Median seconds of fn() over `repeats` calls timed by `clock` (time.process_time for CPU
    time), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return float(np.median(times))


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median CPU seconds (key), wall seconds (key + "_wall") and CPU seconds of the calling
    thread alone (key + "_main": the critical path where a free core runs the other threads)
    of each function, timed in rounds (one call of each per round), so that the machine's
    drift reaches them all alike."""
    times = {k + suffix: [] for k in fns for suffix in ("", "_wall", "_main")}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, w0, m0 = time.process_time(), time.perf_counter(), time.thread_time()
            fn()
            times[k + "_main"].append(time.thread_time() - m0)
            times[k + "_wall"].append(time.perf_counter() - w0)
            times[k].append(time.process_time() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def time_python(fn, repeats: int, min_seconds: float = 0.01) -> list[float]:
    """ns per call of `fn()` in CPU time of the calling thread (as MatVec.time_call; the peers
    run one-threaded), one sample per repeat, each a loop of many calls (>= min_seconds)."""
    fn()
    n = 1
    while True:
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        dt = time.thread_time() - t0
        if dt >= min_seconds / 4 or n >= 1 << 20:
            break
        n *= 4
    n = max(1, int(n * min_seconds / max(dt, 1e-9)))
    samples = []
    for _ in range(repeats):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        samples.append((time.thread_time() - t0) / n * 1e9)
    return samples


def time_native(matvec, x, repeats: int, min_seconds: float = 0.02) -> list[float]:
    """ns per call of a compiled MatVec, one sample per repeat, each from its native loop."""
    return [matvec.time_call(x, repeats=1, min_seconds=min_seconds) for _ in range(repeats)]


# --- one thread for the peers --------------------------------------------------------------------
@contextlib.contextmanager
def single_threaded():
    """BLAS and torch limited to one thread; yields how BLAS was limited (a short note)."""
    torch = torch_or_none()
    torch_threads = None
    if torch is not None:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        with blas_threads(1):
            yield "1 (threadpoolctl)"
    finally:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)


def torch_or_none():
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# --- tables --------------------------------------------------------------------------------------
class Table:
    def __init__(self, title: str, headers: list, rows: list, notes: list | None = None):
        self.title, self.headers, self.rows, self.notes = title, headers, rows, notes or []

    def text(self) -> str:
        cells = [self.headers] + [[str(c) for c in r] for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]
        out = [self.title]
        for j, r in enumerate(cells):
            out.append("  ".join(c.rjust(w) if i else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))).rstrip())
            if j == 0:
                out.append("  ".join("-" * w for w in widths))
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
               "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in self.rows]
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out)


def fmt(v, digits: int = 3) -> str:
    """A figure with `digits` significant digits, '-' when missing."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


# --- noise ---------------------------------------------------------------------------------------
SPREAD_KEYS = ("ns_spread", "numpy_spread", "scipy_csr_spread", "torch_spread",
               "torch_int8_spread", "spread")


def noisy(records: list[dict], threshold: float = NOISY) -> list[str]:
    """Labels of the figures whose spread exceeds `threshold` (a peer shared by several
    records is named once, by its matrix)."""
    out = []
    for r in records:
        for key in SPREAD_KEYS:
            s = r.get(key)
            if s is None or s <= threshold:
                continue
            who = r.get("label", r.get("bench")) if key in ("ns_spread", "spread") else \
                f"{key[:-7]} on {r.get('matrix')}"
            label = f"{who} ({100 * s:.0f}%)"
            if label not in out:
                out.append(label)
    return out


def spread_warning(records: list[dict]) -> str | None:
    bad = noisy(records)
    if not bad:
        return None
    shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
    return (f"warning: {len(bad)} figure(s) have a spread (IQR/median) above "
            f"{100 * NOISY:.0f}%: the machine was noisy; re-run on an idle machine. {shown}")


# --- files ---------------------------------------------------------------------------------------
def environment(blas: str) -> dict:
    """What the figures depend on besides jitvoc: host, libraries, threads."""
    from .. import __version__
    from .. import cpu as cpu_mod
    scipy = require("scipy", "benchmarking against scipy.sparse", "jitvoc[bench]")
    torch = torch_or_none()
    return {"host": cpu_mod.describe_host(), "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "torch": torch.__version__ if torch else None,
            "jitvoc": __version__, "blas_threads": blas, "torch_threads": 1 if torch else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=_jsonable)
        f.write("\n")


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (tuple, set, frozenset)):
        return list(v)
    raise TypeError(f"not JSON-serializable: {type(v).__name__}")


def markdown(tables: list[Table], env: dict, command: str, wall_s: float,
             notes: list[str]) -> str:
    host = env["host"]
    lines = [f"Command: `{command}`", "",
             f"Host: {host['brand']} (LLVM: {host['llvm_cpu']}, {env['cores']} cores), "
             f"LLVM {host['llvm_version']}, Python {env['python']}, NumPy {env['numpy']}, "
             f"SciPy {env['scipy']}, PyTorch {env['torch'] or 'not installed'}; "
             f"one thread everywhere (BLAS threads: {env['blas_threads']}). "
             f"{env['date']}, wall time {wall_s:.0f} s.", ""]
    for t in tables:
        lines += [t.markdown(), ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def pyplot():
    """matplotlib.pyplot (Agg), or a clear error when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise JitvocError("--plot needs matplotlib: pip install 'jitvoc[plot]' "
                          "(or pip install matplotlib)") from None
    return plt


def plot(path: str, records: list[dict]) -> None:
    """Two panels: realtime factor per generation and dtype; GMAC/s against density."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    _plot_realtime(ax1, [r for r in records if r["bench"] == "vocoder" and r["engine"] == "jit"],
                   [r for r in records if r["bench"] == "vocoder" and r["engine"] != "jit"])
    _plot_density(ax2, [r for r in records if r["bench"] == "kernel"],
                  next((r for r in records if r["bench"] == "roofline"), None))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_realtime(ax, jit, peers) -> None:
    ax.set_title("vocoder (hidden 896, one thread): realtime factor at 24 kHz")
    if not jit:
        ax.text(0.5, 0.5, "vocoder not measured in this run", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    gens = list(dict.fromkeys(r["cpu"] for r in jit))
    dtypes = list(dict.fromkeys(r["dtype"] for r in jit))
    width = 0.8 / len(dtypes)
    for j, dt in enumerate(dtypes):
        by = {r["cpu"]: r["realtime"] for r in jit if r["dtype"] == dt}
        xs = [i + (j - (len(dtypes) - 1) / 2) * width for i in range(len(gens))]
        ax.bar(xs, [by.get(g, 0) for g in gens], width, label=dt)
    for r in peers:
        ax.axhline(r["realtime"], ls=":", color="grey")
        ax.text(-0.45, r["realtime"], f"{r['engine']} ({r['realtime']:.2g}x)", va="bottom",
                ha="left", fontsize=7, color="dimgrey")
    ax.axhline(1.0, color="red", lw=0.8)
    ax.set_xticks(range(len(gens)), gens, rotation=20)
    ax.set_ylabel("x realtime (samples/s / 24000)")
    ax.set_yscale("log")
    ax.legend(title="dtype")


def _plot_density(ax, kernels, roof) -> None:
    ax.set_title("matrix-vector 2688x896, 16x1 blocks: effective GMAC/s")
    sweep = [r for r in kernels if (r["rows"], r["cols"]) == (2688, 896)]
    if not sweep:
        ax.text(0.5, 0.5, "kernels not measured in this run", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    styles = {"int8": "-", "int16": "--", "float32": ":"}
    gens = list(dict.fromkeys(r["cpu"] for r in sweep))
    colors = {g: f"C{i % 10}" for i, g in enumerate(gens)}   # one colour per generation
    for (gen, dt) in dict.fromkeys((r["cpu"], r["dtype"]) for r in sweep):
        pts = sorted((r["density"], r["gmacs"]) for r in sweep
                     if r["cpu"] == gen and r["dtype"] == dt)
        ax.plot(*zip(*pts), styles.get(dt, "-"), color=colors[gen], marker="o", ms=3,
                label=f"{gen} {dt}")
    one = {r["density"]: r for r in sweep}
    pts = sorted(one.items())
    ax.plot([d for d, _ in pts], [r["nnz"] / r["scipy_csr_ns"] for _, r in pts], "k-.",
            marker="x", ms=4, label="scipy CSR f32")
    ax.plot([d for d, _ in pts], [r["nnz"] / r["numpy_ns"] for _, r in pts], "k--",
            marker="s", ms=3, label="numpy dense f32")
    if roof:
        ax.axhline(roof["gmacs"], color="red", lw=1.2,
                   label=f"dense roofline {roof['gmacs']:.0f} GMAC/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("density (non-zeros / entries)")
    ax.set_ylabel("GMAC/s counting non-zeros")
    ax.legend(fontsize=6, ncol=2)
