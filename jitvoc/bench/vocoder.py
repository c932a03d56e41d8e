"""`jitvoc bench vocoder`: samples per second of the whole WaveRNN generation loop, one thread.

The model is random_model(hidden=896): gru.R at 5% density in 16x1 blocks, O1/O3 (448x448) and
O2/O4 (256x448) at 10%, 24 kHz. Per CPU generation and dtype, the JIT engine generates
`samples` samples from silence (one `generate` call, timed; median of repeats); realtime factor =
samples per second / 24000. Peers in the same run: the NumPy reference step (ReferenceEngine, a
short run) and, with torch installed, a PyTorch eager float32 step loop with the same weights
(explicit GRU formula, the four Linear layers, two multinomial draws per sample).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..calibration import calibrate
from ..engine import GenState, conditioning
from ..engine_jit import JitEngine
from ..mel import mel_spectrogram
from ..model import random_model
from ..reference.vocoder import ReferenceEngine, upsample
from ..progress import Steps
from . import report

DTYPES = ("int8", "int16", "float32")
QUICK_DTYPES = ("int8",)
MODEL = {"hidden": 896, "density": 0.05, "output_density": 0.10, "block": (16, 1),
         "sample_rate": 24000}


@dataclass
class Config:
    gens: list
    dtypes: tuple
    repeats: int
    samples: int         # per timed JIT run
    torch_samples: int   # per timed PyTorch run
    numpy_samples: int   # per timed reference run
    model: dict

    @classmethod
    def make(cls, gens, quick: bool, dtypes=None, repeats=None) -> "Config":
        dtypes = tuple(dtypes or (QUICK_DTYPES if quick else DTYPES))
        if quick:
            return cls(list(gens), dtypes, repeats or 3, 6000, 300, 60, dict(MODEL))
        return cls(list(gens), dtypes, repeats or 5, 24000, 1200, 240, dict(MODEL))

    def steps(self) -> int:
        return 2 + len(self.gens) * len(self.dtypes)


def conditioning_rows(model, n_samples: int) -> np.ndarray:
    """K for n_samples of a chirp (plus the extra row linear upsampling reads)."""
    sr, hop = model.sample_rate, model.hop_length
    t = np.arange(n_samples + hop) / sr
    audio = (8000 * np.sin(2 * np.pi * (100 + 900 * t / t[-1]) * t)).astype(np.int16)
    K = conditioning(model, mel_spectrogram(audio, sr, model.mel_config))
    return np.ascontiguousarray(np.concatenate([K, K[-1:], K[-1:]]), dtype=np.float32)


def _record(engine, cpu, dtype, sps_samples, n, model, **extra) -> dict:
    sps, spread = report.summary(sps_samples)
    return {"bench": "vocoder", "label": f"vocoder {engine} {cpu} {dtype}", "engine": engine,
            "cpu": cpu, "dtype": dtype, "hidden": model.hidden, "sample_rate": model.sample_rate,
            "samples_per_s": sps, "spread": spread, "realtime": sps / model.sample_rate,
            "samples": n, **extra}


def time_jit(engine: JitEngine, K, n: int, repeats: int, seed: int = 0) -> list[float]:
    H = engine.model.hidden
    engine.generate(K, 0, min(n, 600), GenState.initial(H), seed)  # warm up
    out = []
    for _ in range(repeats):
        state = GenState.initial(H)
        t0 = time.perf_counter()
        engine.generate(K, 0, n, state, seed)
        out.append(n / (time.perf_counter() - t0))
    return out


def time_reference(model, K, n: int, repeats: int) -> list[float]:
    ref = ReferenceEngine(model)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref.generate(K, 0, n, GenState.initial(model.hidden), 0)
        out.append(n / (time.perf_counter() - t0))
    return out


def torch_step_loop(torch, model, K, n: int, seed: int = 0) -> np.ndarray:
    """The WaveRNN sampling loop in PyTorch eager float32 (docs/model.md), one sample a step."""
    w = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in model.weights.items()}
    H, H2 = model.hidden, model.hidden // 2
    nn = torch.nn

    def linear(name, bias):
        lin = nn.Linear(w[name].shape[1], w[name].shape[0])
        lin.weight.data, lin.bias.data = w[name], w[bias]
        return lin

    O1, O2 = linear("out.O1", "out.b1"), linear("out.O2", "out.b2")
    O3, O4 = linear("out.O3", "out.b3"), linear("out.O4", "out.b4")
    R, bR, I = w["gru.R"], w["gru.bR"], w["gru.I"]
    k_all = torch.from_numpy(upsample(K, np.arange(n), model.hop_length, model.upsample))
    g = torch.Generator().manual_seed(seed)
    out = np.empty(n, np.int16)
    h, c, f = torch.zeros(H), 128, 0

    def cell(a, x, k, h):
        au, ar, ae = a.view(3, H)
        vu, vr, ve = torch.addmv(k, I, x).view(3, H)
        u, r = torch.sigmoid(au + vu), torch.sigmoid(ar + vr)
        e = torch.tanh(r * ae + ve)
        return u * h + (1 - u) * e

    with torch.inference_mode():
        for i in range(n):
            a = torch.addmv(bR, R, h)
            x = torch.tensor([c / 127.5 - 1, f / 127.5 - 1, 0.0])
            hc = cell(a, x, k_all[i], h)[:H2]
            p = torch.softmax(O2(torch.relu(O1(hc))), -1)
            c_new = int(torch.multinomial(p, 1, generator=g))
            x[2] = c_new / 127.5 - 1
            h = cell(a, x, k_all[i], h)
            p = torch.softmax(O4(torch.relu(O3(h[H2:]))), -1)
            c, f = c_new, int(torch.multinomial(p, 1, generator=g))
            out[i] = 256 * c + f - 32768
    return out


def time_torch(torch, model, K, n: int, repeats: int) -> list[float]:
    torch_step_loop(torch, model, K, min(n, 20))  # warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch_step_loop(torch, model, K, n)
        out.append(n / (time.perf_counter() - t0))
    return out


def run(cfg: Config, progress: Steps) -> list[dict]:
    model = calibrate(random_model(**cfg.model))   # as exported models come
    K = conditioning_rows(model, max(cfg.samples, cfg.torch_samples, cfg.numpy_samples))
    records = []
    progress.step("vocoder numpy reference (float32)")
    records.append(_record("numpy_reference", "-", "float32",
                           time_reference(model, K, cfg.numpy_samples, cfg.repeats),
                           cfg.numpy_samples, model, spec="ReferenceEngine"))
    progress.step("vocoder pytorch eager (float32)")
    torch = report.torch_or_none()
    if torch is not None:
        records.append(_record("torch_eager", "-", "float32",
                               time_torch(torch, model, K, cfg.torch_samples, cfg.repeats),
                               cfg.torch_samples, model, spec=f"torch {torch.__version__}"))
    peers = {r["engine"]: r["samples_per_s"] for r in records}
    for gen in cfg.gens:
        for dtype in cfg.dtypes:
            progress.step(f"vocoder {gen.name} {dtype}")
            t0 = time.perf_counter()
            engine = JitEngine(model, gen, dtype)
            build_s = time.perf_counter() - t0
            rec = _record("jit", gen.name, dtype, time_jit(engine, K, cfg.samples, cfg.repeats),
                          cfg.samples, model, spec=engine.plan.name, llvm_cpu=gen.llvm_cpu,
                          build_s=build_s, kernels={m: p.spec.name
                                                    for m, p in engine.plan.plans.items()})
            for peer, sps in peers.items():
                rec[f"speedup_vs_{peer}"] = rec["samples_per_s"] / sps
            records.append(rec)
    return records


def tables(records: list[dict]) -> list[report.Table]:
    voc = [r for r in records if r["bench"] == "vocoder"]
    if not voc:
        return []
    jit = [r for r in voc if r["engine"] == "jit"]
    peers = [r for r in voc if r["engine"] != "jit"]
    names = [p["engine"] for p in peers]
    headers = ["engine", "cpu", "dtype", "samples/s", "x realtime"] + \
        [f"x {n.replace('_', ' ')}" for n in names] + ["spread", "loop"]
    rows = []
    for r in jit + peers:
        rows.append([r["engine"], r["cpu"], r["dtype"], report.fmt(r["samples_per_s"]),
                     report.fmt(r["realtime"])]
                    + [report.fmt(r.get(f"speedup_vs_{n}")) for n in names]
                    + [report.pct(r["spread"]), r["spec"]])
    first = voc[0]
    notes = [f"random_model(hidden={first['hidden']}), {first['sample_rate']} Hz; "
             f"x realtime = samples/s / {first['sample_rate']}; one thread",
             "samples per timed run: " + ", ".join(sorted({f"{r['engine']} {r['samples']}"
                                                           for r in voc}))]
    return [report.Table("vocoder: whole generation loop", headers, rows, notes)]
