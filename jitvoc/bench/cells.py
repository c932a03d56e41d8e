"""`jitvoc bench cells`: compiled LSTM and GRU cells against PyTorch, one thread, same weights.

For each cell (LSTM, GRU), hidden size (512, 1024; input size = hidden) and density (dense, and
90% block-sparse: 10% of the 16x1 blocks of every matrix kept), over a sequence of 1,000 steps:
jitvoc's compiled cell in float32 and int8 (jitvoc.compile_cell: `run` over the sequence,
hoisting and hidden-state products included), PyTorch eager (torch.nn.LSTM / torch.nn.GRU over
the sequence, batch 1) and TorchScript (torch.jit.script of the same cell written as a loop over
the steps, the usual custom-RNN form), all float32. PyTorch runs sparse weights as dense ones:
it has no block-sparse recurrent path. Figures are CPU-time medians of repeats in µs per step,
measured in one process; without torch its rows are skipped with a message. int8 cells are
compiled with autotune (every in-loop product's fastest kernel, the same bits).

The "bound" of a jitvoc row is a lower bound from memory traffic, measured in the same run: the
weight bytes its loop must read per step (every in-loop product's W array, and every hoisted
one's over HOIST_VECTORS steps) over the read bandwidth of one core on a buffer the size of all
those W arrays (read_bandwidth); "bound vs eager" is the largest speedup that allows.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from .. import cells
from .. import cpu as cpu_mod
from ..cellrun import compile_cell
from ..options import count
from ..plan.cell import HOIST_VECTORS
from .report import median_seconds

CELLS = {"lstm": cells.lstm, "gru": cells.gru}
HIDDEN, HIDDEN_QUICK = (512, 1024), (512,)
DENSITIES = (1.0, 0.1)
BLOCK = (16, 1)
STEPS = 1000
DTYPES = ("float32", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="hidden 512 only, fewer repeats")
    parser.add_argument("--steps", type=count, default=STEPS, help="sequence length (1000)")
    parser.add_argument("--repeats", type=count, default=None, help="repeats per figure")
    parser.add_argument("--cpu", default=None, help="CPU generation (default: native)")
    parser.add_argument("--json", metavar="FILE", help="write the records as JSON")


def random_weights(cell, density: float = 1.0, seed: int = 0) -> dict:
    """Weights for a library cell: N(0, 1/n) matrices with `density` of their BLOCK blocks
    kept (every matrix dense at 1.0), N(0, 0.1²) vectors."""
    g = np.random.default_rng(seed)
    out = {}
    for name, node in cell.weights.items():
        if len(node.shape) < 2:
            out[name] = (0.1 * g.standard_normal(node.shape)).astype(np.float32)
            continue
        rows, cols = node.shape
        w = g.standard_normal(node.shape) / np.sqrt(cols * density)
        if density < 1:
            keep = g.random((rows // BLOCK[0], cols // BLOCK[1])) < density
            w = w * np.kron(keep, np.ones(BLOCK))
        out[name] = w.astype(np.float32)
    return out


def _cpu_median(fn, repeats: int) -> float:
    """Median CPU seconds of the process for fn() (after one warm-up call)."""
    return median_seconds(fn, repeats, clock=time.process_time)


def read_bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes per CPU second one core reads from a float32 buffer of `nbytes`, read over and over
    (so from the cache level a working set of that size lives in): the best of three NumPy
    reductions of it (max, bitwise or of 64-bit words, dot product), CPU-time medians."""
    buf = np.ones(max(nbytes // 8, 1) * 2, np.float32)
    calls = max(1, (1 << 24) // buf.nbytes)
    probes = (buf.max, lambda: np.bitwise_or.reduce(buf.view(np.int64)), lambda: buf.dot(buf))
    return max(buf.nbytes * calls / _cpu_median(lambda: [f() for _ in range(calls)], repeats)
               for f in probes)


def streamed_bytes(runner) -> tuple[float, int]:
    """(weight bytes a runner's loop reads per step at least, bytes of all those weights): the
    W arrays of the in-loop products' kernels, and of the hoisted products' B-vector kernels
    over HOIST_VECTORS steps."""
    plan, kernels = runner.plan, runner.kernels()
    hoisted = [kernels[p.label][0].entry(plan.hoisted_format)[1]["W"].nbytes for p in plan.hoisted]
    looped = [kernels[p.label][0].entry(plan.formats[p.label])[1]["W"].nbytes
              for p in plan.products]
    return sum(looped) + sum(hoisted) / HOIST_VECTORS, sum(looped) + sum(hoisted)


def jitvoc_rows(name, hidden, density, gen, steps, repeats) -> list:
    cell = CELLS[name](hidden, hidden)
    w = random_weights(cell, density)
    x = {"x": np.random.default_rng(1).standard_normal((steps, hidden)).astype(np.float32)}
    rows = []
    for dtype in DTYPES:
        runner = compile_cell(cell, w, dtype=dtype, cpu=gen, autotune=dtype != "float32")
        seconds = _cpu_median(lambda: runner.run(x), repeats)
        kernels = [m.spec for ms in runner.kernels().values() for m in ms[:1]]
        per_step, working_set = streamed_bytes(runner)
        row = _row(name, hidden, density, f"jitvoc {dtype}", seconds, steps, " ".join(kernels))
        row["bound_us"] = 1e6 * per_step / read_bandwidth(working_set, repeats)
        rows.append(row)
    return rows


def torch_rows(torch, name, hidden, density, steps, repeats) -> list:
    """PyTorch eager (nn.LSTM / nn.GRU) and TorchScript (a scripted step loop), float32."""
    w = {k: torch.from_numpy(v) for k, v in random_weights(CELLS[name](hidden, hidden),
                                                           density).items()}
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((steps, 1, hidden))
                         .astype(np.float32))
    layer = (torch.nn.LSTM if name == "lstm" else torch.nn.GRU)(hidden, hidden)
    layer.load_state_dict({f"{k}_l0": v for k, v in w.items()})
    scripted = torch.jit.script(_scripted_cell(torch, name))
    args = (x[:, 0], w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"])
    with torch.inference_mode():
        eager = _cpu_median(lambda: layer(x), repeats)
        script = _cpu_median(lambda: scripted(*args), repeats)
    return [_row(name, hidden, density, "torch eager float32", eager, steps, "nn." + name.upper()),
            _row(name, hidden, density, "torchscript float32", script, steps, "jit.script loop")]


def _scripted_cell(torch, name: str):
    """The cell as a TorchScript-able module: x [T, in] -> h [T, H], PyTorch's equations."""
    class Loop(torch.nn.Module):
        def forward(self, x, w_ih, w_hh, b_ih, b_hh):
            H = w_hh.shape[1]
            h = torch.zeros(H)
            c = torch.zeros(H)
            gi = torch.addmm(b_ih, x, w_ih.t())
            out = []
            for t in range(x.shape[0]):
                gh = torch.addmv(b_hh, w_hh, h)
                if w_hh.shape[0] == 4 * H:
                    i, f, g, o = (gi[t] + gh).chunk(4)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                else:
                    i_r, i_z, i_n = gi[t].chunk(3)
                    h_r, h_z, h_n = gh.chunk(3)
                    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                    n = torch.tanh(i_n + r * h_n)
                    h = (1 - z) * n + z * h
                out.append(h)
            return torch.stack(out)
    return Loop()


def _row(cell, hidden, density, engine, seconds, steps, detail) -> dict:
    return {"cell": cell, "hidden": hidden, "density": density, "engine": engine,
            "us_per_step": 1e6 * seconds / steps, "detail": detail}


def run_bench(args) -> list[dict]:
    gen = cpu_mod.resolve(args.cpu)
    cpu_mod.require_runnable(gen)
    repeats = args.repeats or (3 if args.quick else 5)
    torch = _torch()
    records = []
    for name in CELLS:
        for hidden in HIDDEN_QUICK if args.quick else HIDDEN:
            for density in DENSITIES:
                records += jitvoc_rows(name, hidden, density, gen, args.steps, repeats)
                if torch is not None:
                    records += torch_rows(torch, name, hidden, density, args.steps, repeats)
    _print(records, gen, args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": records, "cpu": gen.name, "steps": args.steps}, f, indent=1)
    return records


def _torch():
    """torch on one thread, or None (with a message: its rows are skipped)."""
    try:
        import torch
    except ImportError:
        print("torch is not installed: the PyTorch and TorchScript rows are skipped")
        return None
    torch.set_num_threads(1)
    return torch


def _print(records, gen, steps) -> None:
    print(f"cells on {gen.name}, {steps} steps, one thread: CPU µs per step (median), "
          f"speedup against PyTorch eager float32; bound: µs per step the weights' memory "
          f"traffic takes at least")
    print(f"{'cell':<5} {'hidden':>6} {'density':>7}  {'engine':<20} {'µs/step':>9} "
          f"{'vs eager':>8} {'bound':>7} {'bound vs eager':>14}")
    for r in records:
        eager = [e["us_per_step"] for e in records if e["engine"] == "torch eager float32" and
                 (e["cell"], e["hidden"], e["density"]) == (r["cell"], r["hidden"], r["density"])]
        bound = r.get("bound_us")
        print(f"{r['cell']:<5} {r['hidden']:>6} {r['density']:>7.2f}  {r['engine']:<20} "
              f"{r['us_per_step']:>9.1f} {_ratio(eager, r['us_per_step']):>8} "
              f"{'-' if bound is None else f'{bound:.1f}':>7} {_ratio(eager, bound):>14}")


def _ratio(eager: list, us) -> str:
    return f"{eager[0] / us:.1f}x" if eager and us else "-"


run = run_bench  # the CLI entry point: run(args) -> list[dict]
