"""Train a pruned WaveRNN vocoder for jitvoc (docs/model.md), teacher-forced, on GPU or CPU.

    python -m models.train --config models/configs/festvox_ru.json

runs the whole recipe in one command (all data shards, `total_steps` from the config). The
shipped model was trained in time-limited invocations on one H100, each on one data shard (see
models/CARD.md for the exact commands): `--time-budget` stops and checkpoints in time,
`--plan-runs N` re-plans `total_steps` from the speed measured after 30 steps so that the
pruning schedule ends within this and N-1 more runs of the same budget, `--resume` continues.

Recipe:
* data: models/prepare_data.py (festvox-ru, split in models/split.json); features are
  `jitvoc.mel_spectrogram` of each (silence-trimmed) training sentence;
* random crops of `crop_frames` frames (crop_frames * hop samples), the GRU starting from h = 0
  at the crop, inputs [ĉ_{t-1}, f̂_{t-1}, ĉ_t, cond_t] teacher-forced from the recording;
* loss: cross-entropy of the coarse and of the fine softmax (reported in bits per sample:
  (CE_c + CE_f) / ln 2 is the NLL of the 16-bit sample);
* Adam, linear warm-up then cosine decay from `lr` to `lr_min`, gradient norm clipping;
* gradual block pruning (WaveRNN paper): z_t = Z (1 − (1 − (t − t0)/S)^3), t0 = prune_start ·
  total_steps, S = prune_span · total_steps, masks recomputed every `prune_every` steps;
  R's three gate matrices ([H, H] each) pruned separately, O1..O4 each; 16x1 blocks (16
  consecutive rows of one column) scored by L2 norm; pruned blocks never regrow; masks applied
  after every optimizer step, with I[coarse rows, 2] = 0 re-imposed;
* at the end: activation ranges (max |x| and percentiles of every matrix product's input) on
  teacher-forced training crops, stored in the checkpoint for models/export.py.

The checkpoint (np.savez_compressed, `<out>/ckpt.npz`) holds weights, masks, Adam state and a
JSON `meta` (config, step, schedule, losses, runs, calibration).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

T_START = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DEFAULTS = {
    "name": "wavernn",
    "hidden": 896,
    "cond_channels": 128,
    "cond_layers": [{"kernel": 5, "activation": "relu"}, {"kernel": 5, "activation": "relu"}],
    "sample_rate": 16000,
    "mel": None,                 # None: jitvoc's default mel config
    "data": {"shards": ".traindata", "wav_dir": None, "max_sentences": None, "trim": True},
    "batch_size": 256,
    "crop_frames": 16,
    "total_steps": 6000,
    "lr": 1e-3,
    "lr_min": 2e-4,
    "warmup_steps": 200,
    "grad_clip": 3.0,
    "precision": "fp32",         # fp32 (TF32 matmuls on GPU) or bf16 (autocast; did not learn, CARD.md)
    "prune": {"R": 0.95, "O": 0.90, "start": 0.1, "span": 0.6, "every": 100, "block": 16},
    "calibration": {"crops": 64, "crop_frames": 80},
    "seed": 1234,
    "device": "cuda",
    "log_every": 50,
}


def log(*a):
    print(f"[{time.time() - T_START:7.1f}s]", *a, flush=True)


def load_config(path):
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        with open(path) as f:
            user = json.load(f)
        for k, v in user.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
    return cfg


def import_mel():
    """jitvoc.mel.mel_spectrogram and DEFAULT_CONFIG, without needing jitvoc's compiled parts."""
    try:
        from jitvoc.mel import DEFAULT_CONFIG, mel_spectrogram
    except ImportError:  # jitvoc/__init__ needs something missing here: load the module alone
        import importlib
        import types
        pkg = types.ModuleType("jitvoc")
        pkg.__path__ = [os.path.join(ROOT, "jitvoc")]
        sys.modules["jitvoc"] = pkg
        mel = importlib.import_module("jitvoc.mel")
        DEFAULT_CONFIG, mel_spectrogram = mel.DEFAULT_CONFIG, mel.mel_spectrogram
    return mel_spectrogram, dict(DEFAULT_CONFIG)


# ---------------------------------------------------------------------------------------------
# data

def read_shard(path_flac):
    import soundfile as sf
    audio, sr = sf.read(path_flac, dtype="int16")
    with open(path_flac[:-5] + ".json") as f:
        index = json.load(f)
    assert sr == index["sample_rate"] and len(audio) == index["samples"], path_flac
    return [(u["name"], audio[u["offset"]:u["offset"] + u["length"]]) for u in index["utterances"]]


def load_utterances(cfg, shards):
    d = cfg["data"]
    utts = []
    if d.get("wav_dir"):  # read recordings directly (smoke test / no prepared shards)
        from models.prepare_data import load_split, read_wav_int16, trim_silence
        names = load_split()["train"]
        if d.get("max_sentences"):
            names = names[:d["max_sentences"]]
        for n in names:
            x, sr = read_wav_int16(os.path.join(d["wav_dir"], n + ".wav"))
            a, b = trim_silence(x, sr) if d.get("trim", True) else (0, len(x))
            utts.append((n, x[a:b]))
        source = f"{d['wav_dir']} ({len(names)} training sentences of models/split.json)"
    else:
        root = d["shards"]
        if shards is None:
            shards = sorted(int(f[5:-5]) for f in os.listdir(root) if f.startswith("shard") and f.endswith(".flac"))
        for s in shards:
            utts += read_shard(os.path.join(root, f"shard{s}.flac"))
        if d.get("max_sentences"):
            utts = utts[:d["max_sentences"]]
        source = f"{root} shards {shards}"
    return utts, source


def _mel_job(args):
    x, sr, mel_cfg = args
    mel_spectrogram, _ = import_mel()
    return mel_spectrogram(x, sr, mel_cfg)


def compute_mels(utts, sr, mel_cfg, workers):
    jobs = [(x, sr, mel_cfg) for _, x in utts]
    if workers > 1 and len(jobs) > 8:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            return pool.map(_mel_job, jobs, chunksize=4)
    return [_mel_job(j) for j in jobs]


class Corpus:
    """All training audio and mel frames on the device, with random crop sampling."""

    def __init__(self, utts, mels, hop, device):
        import torch
        self.hop = hop
        self.device = device
        lens = np.array([len(x) for _, x in utts], np.int64)
        nfr = np.array([m.shape[0] for m in mels], np.int64)
        assert (nfr == -(-lens // hop)).all(), "mel frames != ceil(samples / hop)"
        self.audio = torch.from_numpy(np.concatenate([x for _, x in utts]).astype(np.int16)).to(device)
        self.mel = torch.from_numpy(np.concatenate(mels).astype(np.float32)).to(device)
        self.a_off = torch.from_numpy(np.concatenate([[0], np.cumsum(lens)[:-1]])).to(device)
        self.m_off = torch.from_numpy(np.concatenate([[0], np.cumsum(nfr)[:-1]])).to(device)
        self.n_frames = torch.from_numpy(nfr).to(device)
        self.seconds = float(lens.sum()) / 16000.0
        self.names = [n for n, _ in utts]

    def batch(self, B, Tf, radius, gen):
        """A random batch of crops: (s_prev, s_cur) int16 samples [B, T], mel window
        [B, n_mels, Tf + 1 + 2 radius] and its validity mask."""
        import torch
        starts = (self.n_frames - Tf).clamp(min=0)          # crop starts f0 in [0, F - Tf)
        cum = torch.cumsum(starts, 0)
        g = torch.randint(0, int(cum[-1]), (B,), device=self.device, generator=gen)
        i = torch.searchsorted(cum, g, right=True)
        f0 = g - (cum[i] - starts[i])
        T = Tf * self.hop
        pos = f0[:, None] * self.hop + torch.arange(T, device=self.device)[None, :]
        s_cur = self.audio[self.a_off[i][:, None] + pos]
        prev_pos = pos - 1
        s_prev = torch.where(prev_pos >= 0, self.audio[self.a_off[i][:, None] + prev_pos.clamp(min=0)],
                             torch.zeros_like(s_cur))
        fr = f0[:, None] - radius + torch.arange(Tf + 1 + 2 * radius, device=self.device)[None, :]
        valid = (fr >= 0) & (fr < self.n_frames[i][:, None])
        mel = self.mel[self.m_off[i][:, None] + fr.clamp(min=0).minimum(self.n_frames[i][:, None] - 1)]
        mel = mel * valid[..., None]
        return s_prev, s_cur, mel.transpose(1, 2).contiguous(), valid


# ---------------------------------------------------------------------------------------------
# model pieces

def receptive_radius(cfg):
    return sum(int(l["kernel"]) // 2 for l in cfg["cond_layers"])


def teacher_forced(model, s_prev, s_cur, mel, valid, Tf, hop, radius, return_activations=False):
    from models.wavernn import split_sample
    a = model.condition(mel, valid)[:, :, radius:radius + Tf + 1]
    cond = model.upsample_linear(a, hop)
    pc, pf = split_sample(s_prev)
    c, f = split_sample(s_cur)
    out = model(pc, pf, c, cond, return_activations=return_activations)
    return out, c, f, a


def loss_fn(lc, lf, c, f):
    import torch.nn.functional as F
    ce_c = F.cross_entropy(lc.reshape(-1, 256).float(), c.reshape(-1))
    ce_f = F.cross_entropy(lf.reshape(-1, 256).float(), f.reshape(-1))
    return ce_c, ce_f


class Pruner:
    def __init__(self, model, cfg):
        import torch
        self.model, self.p = model, cfg["prune"]
        self.masks = {n: torch.ones_like(w) for n, (w, _) in model.prunable().items()}

    def targets(self, step, total):
        t0 = self.p["start"] * total
        span = self.p["span"] * total
        from models.wavernn import sparsity_at
        return (sparsity_at(step, self.p["R"], t0, span), sparsity_at(step, self.p["O"], t0, span))

    def update(self, step, total, optimizer=None):
        import torch
        from models.wavernn import block_mask
        zR, zO = self.targets(step, total)
        for name, (w, slices) in self.model.prunable().items():
            z = zR if name == "gru.R" else zO
            m = self.masks[name]
            for sl in slices:
                m[sl] = block_mask(w.data[sl], z, m[sl], self.p["block"])
            if optimizer is not None and w in optimizer.state:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in optimizer.state[w]:
                        optimizer.state[w][key].mul_(m)
        self.apply()

    @property
    def block(self):
        return self.p["block"]

    def apply(self):
        import torch
        with torch.no_grad():
            for name, (w, _) in self.model.prunable().items():
                w.data.mul_(self.masks[name])
            self.model.enforce_constraints()

    def sparsity(self):
        out = {}
        H = self.model.hidden
        for name, (w, slices) in self.model.prunable().items():
            m = self.masks[name]
            if name == "gru.R":  # report in jitvoc's gate order u, r, e = torch z, r, n
                for g, tg in (("u", 1), ("r", 0), ("e", 2)):
                    out[f"gru.R.{g}"] = 1.0 - float(m[tg * H:(tg + 1) * H].mean())
            out[name] = 1.0 - float(m.mean())
        return out


def lr_at(step, cfg, total):
    if step < cfg["warmup_steps"]:
        return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
    p = min(1.0, (step - cfg["warmup_steps"]) / max(1, total - cfg["warmup_steps"]))
    return cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (1 + math.cos(math.pi * p))


# ---------------------------------------------------------------------------------------------
# checkpoints

def save_checkpoint(path, model, pruner, optimizer, meta):
    arrays = {}
    for n, p in model.state_dict().items():
        arrays["model/" + n] = p.detach().float().cpu().numpy()
    for n, m in pruner.masks.items():
        arrays["mask/" + n] = m.detach().cpu().numpy().astype(np.uint8)
    names = {id(p): n for n, p in model.named_parameters()}
    for p, st in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                a = st[key].detach().float().cpu().numpy()  # stored as bfloat16 bits: half the size
                arrays[f"adam/{names[id(p)]}/{key}"] = (a.view(np.uint32) >> 16).astype(np.uint16)
        if "step" in st:
            meta["adam_step"] = float(st["step"])
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    from jitvoc.atomic import atomic_file
    from jitvoc.errors import JitvocError
    with atomic_file(path, JitvocError) as f:
        np.savez_compressed(f, **arrays)


def load_checkpoint(path):
    z = np.load(path, allow_pickle=False)
    meta = json.loads(bytes(z["meta"]).decode())
    return z, meta


def _unbf16(a):
    return (a.astype(np.uint32) << 16).view(np.float32) if a.dtype == np.uint16 else a.astype(np.float32)


def build_model(cfg, n_mels):
    from models.wavernn import WaveRNN
    return WaveRNN(cfg["hidden"], n_mels, cfg["cond_channels"], cfg["cond_layers"])


def restore(model, pruner, optimizer, z, device):
    import torch
    sd = {k[6:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("model/")}
    model.load_state_dict(sd)
    for n in pruner.masks:
        pruner.masks[n] = torch.from_numpy(z["mask/" + n].astype(np.float32)).to(device)
    meta = json.loads(bytes(z["meta"]).decode())
    if optimizer is not None:
        for n, p in model.named_parameters():
            if f"adam/{n}/exp_avg" in z.files:
                optimizer.state[p] = {
                    "step": torch.tensor(float(meta.get("adam_step", meta["step"]))),
                    "exp_avg": torch.from_numpy(_unbf16(z[f"adam/{n}/exp_avg"])).to(device),
                    "exp_avg_sq": torch.from_numpy(_unbf16(z[f"adam/{n}/exp_avg_sq"])).to(device),
                }
    pruner.apply()


# ---------------------------------------------------------------------------------------------
# calibration

def calibrate(model, corpus, cfg, radius, gen):
    """Activation ranges of every matrix product's input over teacher-forced training crops."""
    import torch
    Tf = cfg["calibration"]["crop_frames"]
    n = cfg["calibration"]["crops"]
    stats = {}
    qs = torch.tensor([0.999, 0.9999], device=corpus.device)

    def add(name, x):
        x = x.detach().float().abs().flatten()
        if x.numel() > 2_000_000:
            sub = x[torch.randint(0, x.numel(), (2_000_000,), device=x.device, generator=gen)]
        else:
            sub = x
        q = torch.quantile(sub, qs)
        s = stats.setdefault(name, {"max": 0.0, "p99.9": 0.0, "p99.99": 0.0})
        s["max"] = max(s["max"], float(x.max()))
        s["p99.9"] = max(s["p99.9"], float(q[0]))
        s["p99.99"] = max(s["p99.99"], float(q[1]))

    model.eval()
    with torch.no_grad():
        done = 0
        while done < n:
            b = min(16, n - done)
            s_prev, s_cur, mel, valid = corpus.batch(b, Tf, radius, gen)
            (lc, lf, _, acts), c, f, a = teacher_forced(model, s_prev, s_cur, mel, valid, Tf, corpus.hop,
                                                        radius, return_activations=True)
            h, yc, yf, zc, zf = acts
            add("mel", mel)                    # input of cond.conv0
            add("cond.A_L", a)                 # input of cond.proj
            add("gru.R", h)                    # input of R (h_{t-1})
            add("out.O1", yc)
            add("out.O3", yf)
            add("out.O2", zc)
            add("out.O4", zf)
            add("logits.coarse", lc)
            add("logits.fine", lf)
            done += b
    model.train()
    return {"method": f"max and percentiles of |x| over {n} teacher-forced training crops of "
                      f"{Tf * corpus.hop} samples (fp32, final masks)",
            "activation_ranges": stats}


def heldout_nll(model, utts, mels, hop, device, max_seconds=None):
    """Teacher-forced NLL (bits per 16-bit sample, coarse and fine nats) of whole held-out
    utterances from h = 0, batched with padding."""
    import torch
    import torch.nn.functional as F
    from models.wavernn import split_sample
    model.eval()
    tot = {"c": 0.0, "f": 0.0, "n": 0}
    with torch.no_grad():
        conds, ss = [], []
        for (_, x), mel in zip(utts, mels):
            if max_seconds:
                x = x[:int(max_seconds * 16000)]
                mel = mel[:-(-len(x) // hop)]
            m = torch.from_numpy(np.asarray(mel, np.float32)).to(device).T[None]
            a = model.condition(m)
            a = torch.cat([a, a[:, :, -1:]], dim=2)
            conds.append(model.upsample_linear(a, hop)[0, :len(x)])
            ss.append(torch.from_numpy(x.astype(np.int64)).to(device))
        T = max(len(s) for s in ss)
        B = len(ss)
        cond = torch.zeros(B, T, conds[0].shape[1], device=device)
        s = torch.zeros(B, T, dtype=torch.long, device=device)
        valid = torch.zeros(B, T, dtype=torch.bool, device=device)
        for i, (cnd, x) in enumerate(zip(conds, ss)):
            cond[i, :len(x)], s[i, :len(x)], valid[i, :len(x)] = cnd, x, True
        prev = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], dim=1)
        pc, pf = split_sample(prev)
        c, f = split_sample(s)
        h, sum_c, sum_f = None, 0.0, 0.0
        for a in range(0, T, 32000):  # chunks carrying the state (cuDNN's sizes are 32-bit)
            sl = slice(a, min(T, a + 32000))
            lc, lf, h = model(pc[:, sl], pf[:, sl], c[:, sl], cond[:, sl], h0=h)
            v = valid[:, sl].flatten()
            sum_c += float(F.cross_entropy(lc.reshape(-1, 256)[v].float(), c[:, sl].flatten()[v], reduction="sum"))
            sum_f += float(F.cross_entropy(lf.reshape(-1, 256)[v].float(), f[:, sl].flatten()[v], reduction="sum"))
        tot["n"] = int(valid.sum())
        tot["c"], tot["f"] = sum_c / tot["n"], sum_f / tot["n"]
    model.train()
    return {"ce_coarse": tot["c"], "ce_fine": tot["f"], "samples": tot["n"],
            "bits_per_sample": (tot["c"] + tot["f"]) / math.log(2)}


# ---------------------------------------------------------------------------------------------

def autotune(model, corpus, cfg, radius, device, candidates):
    """Time forward+backward of a few batch sizes at the configured precision; pick the fastest
    per sample, preferring the smallest batch within 20% of the best (more optimizer steps)."""
    import torch
    gen = torch.Generator(device=device).manual_seed(0)
    Tf = cfg["crop_frames"]
    results = []
    for prec in (cfg["precision"],):
        for B in candidates:
            try:
                times = []
                for it in range(3):
                    torch.cuda.synchronize()
                    t = time.time()
                    s_prev, s_cur, mel, valid = corpus.batch(B, Tf, radius, gen)
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(prec == "bf16")):
                        (lc, lf, _), c, f, _ = teacher_forced(model, s_prev, s_cur, mel, valid, Tf, corpus.hop, radius)
                    ce_c, ce_f = loss_fn(lc, lf, c, f)
                    (ce_c + ce_f).backward()
                    model.zero_grad(set_to_none=True)
                    torch.cuda.synchronize()
                    times.append(time.time() - t)
                    del lc, lf, ce_c, ce_f
                dt = min(times[1:])
                sps = B * Tf * corpus.hop / dt
                results.append((prec, B, dt, sps))
                log(f"autotune {prec} B={B}: {dt * 1000:.0f} ms/step, {sps / 1e6:.2f} M samples/s "
                    f"mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
            except Exception as e:  # OOM or unsupported: skip this candidate
                log(f"autotune {prec} B={B}: failed: {type(e).__name__}: {str(e)[:200]}")
                model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    if not results:
        raise RuntimeError("no configuration ran")
    best = max(r[3] for r in results)
    ok = [r for r in results if r[3] >= 0.8 * best]
    ok.sort(key=lambda r: (r[1], -r[3]))
    return ok[0], results


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train a pruned WaveRNN for jitvoc")
    ap.add_argument("--config", default=os.path.join(HERE, "configs", "festvox_ru.json"))
    ap.add_argument("--shards", default=None, help="comma-separated shard numbers (default: all)")
    ap.add_argument("--out", default=".ckpt", help="checkpoint folder")
    ap.add_argument("--resume", default=None, help="checkpoint to continue from")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds (from process start) after which to save and stop")
    ap.add_argument("--plan-runs", type=int, default=None,
                    help="with --time-budget: set total_steps so that this and (N-1) more runs "
                         "of the same budget finish the schedule")
    ap.add_argument("--autotune", action="store_true", help="GPU: pick batch size and precision by timing")
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=None, help="override total_steps")
    ap.add_argument("--export", default=None, help="also export the final model file here")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--eval-shard", default=None, help="FLAC shard of held-out sentences: "
                    "teacher-forced NLL at the end")
    ap.add_argument("--save-every", type=float, default=120.0, help="seconds between checkpoints")
    args = ap.parse_args(argv)

    import torch
    cfg = load_config(args.config)
    if args.steps:
        cfg["total_steps"] = args.steps
    device = args.device or cfg["device"]
    if device == "cuda" and not torch.cuda.is_available():
        log("CUDA not available: training on the CPU")
        device = "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg["seed"])
    command = "python -m models.train " + " ".join(sys.argv[1:] if argv is None else argv)

    mel_spectrogram, mel_default = import_mel()
    mel_cfg = cfg["mel"] or mel_default
    cfg["mel"] = mel_cfg
    hop = mel_cfg["hop_length"]
    shards = [int(s) for s in args.shards.split(",")] if args.shards else None
    utts, source = load_utterances(cfg, shards)
    log(f"{len(utts)} utterances from {source}")
    mels = compute_mels(utts, cfg["sample_rate"], mel_cfg, args.workers)
    if device == "cuda":  # CUDA is first touched here, after the forked mel workers are done
        log("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    corpus = Corpus(utts, mels, hop, device)
    del utts, mels
    log(f"corpus: {corpus.seconds / 60:.1f} min of audio, {corpus.mel.shape[0]} frames, on {device}")

    radius = receptive_radius(cfg)
    model = build_model(cfg, mel_cfg["n_mels"]).to(device)
    pruner = Pruner(model, cfg)
    meta = {"config": cfg, "step": 0, "runs": [], "history": []}
    z = None
    if args.resume:
        z, meta_old = load_checkpoint(args.resume)
        meta.update({k: v for k, v in meta_old.items() if k != "config"})
        for k in ("batch_size", "precision", "total_steps"):
            cfg[k] = meta_old["config"][k]
        if args.steps:
            cfg["total_steps"] = args.steps
        if cfg["total_steps"] <= meta["step"]:
            raise SystemExit(f"{args.resume} is at step {meta['step']}, its total_steps is "
                             f"{cfg['total_steps']}: pass --steps N (N > {meta['step']}) to go on")
        log(f"resuming {args.resume} at step {meta['step']} (total_steps {cfg['total_steps']})")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.999))
    if z is not None:
        restore(model, pruner, optimizer, z, device)
    pruner.apply()

    if args.autotune and device == "cuda" and not args.resume:
        (prec, B, dt, sps), table = autotune(model, corpus, cfg, radius, device, [64, 128, 256, 512])
        cfg["precision"], cfg["batch_size"] = prec, B
        meta["autotune"] = [{"precision": p, "batch": b, "s_per_step": d, "samples_per_s": s} for p, b, d, s in table]
        log(f"autotune chose {prec} B={B}")
    if device == "cpu":
        cfg["precision"] = "fp32"
    B, Tf = cfg["batch_size"], cfg["crop_frames"]
    use_bf16 = cfg["precision"] == "bf16"
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] + meta["step"])
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "ckpt.npz")

    step0 = step = meta["step"]
    total = cfg["total_steps"]
    deadline = T_START + args.time_budget if args.time_budget else None
    reserve = 40.0  # seconds kept for the last checkpoint and calibration
    t_train = time.time()
    last_save = time.time()
    ema = None
    planned = False
    log(f"training: B={B} crop={Tf * hop} samples precision={cfg['precision']} steps {step}..{total}")
    while step < total:
        if deadline and time.time() > deadline - reserve:
            log("time budget reached")
            break
        lr = lr_at(step, cfg, total)
        for gparam in optimizer.param_groups:
            gparam["lr"] = lr
        s_prev, s_cur, mel, valid = corpus.batch(B, Tf, radius, gen)
        with torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16,
                            enabled=use_bf16):
            (lc, lf, _), c, f, _ = teacher_forced(model, s_prev, s_cur, mel, valid, Tf, hop, radius)
        ce_c, ce_f = loss_fn(lc, lf, c, f)
        loss = ce_c + ce_f
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        step += 1
        p = pruner.p
        t0, t_end = p["start"] * total, (p["start"] + p["span"]) * total
        if step >= t0 and (step % p["every"] == 0 or step == math.ceil(t_end) or step == total):
            pruner.update(step, total, optimizer)   # recompute masks (and apply them)
        else:
            pruner.apply()
        if step % cfg["log_every"] == 0 or step == total:
            cc, ff = float(ce_c.detach()), float(ce_f.detach())
            ema = (cc, ff) if ema is None else (0.9 * ema[0] + 0.1 * cc, 0.9 * ema[1] + 0.1 * ff)
            el = time.time() - t_train
            sps = (step - step0) * B * Tf * hop / el
            sp = pruner.sparsity()
            meta["history"].append({"step": step, "ce_c": cc, "ce_f": ff, "lr": lr, "grad_norm": float(gn),
                                    "R": sp["gru.R"], "O": sp["out.O1"], "t": round(el, 1)})
            log(f"step {step}/{total} ce_c {cc:.3f} ce_f {ff:.3f} ({(cc + ff) / math.log(2):.2f} bits/sample) "
                f"lr {lr:.2e} |g| {float(gn):.2f} R {sp['gru.R']:.3f} O {sp['out.O1']:.3f} "
                f"{sps / 1e6:.2f} M samples/s")
        if deadline and args.plan_runs and not planned and step - step0 == 30:
            rate = (step - step0) / (time.time() - t_train)
            left = deadline - reserve - time.time()
            new_total = step + int(rate * left * 0.97) + int(rate * (args.time_budget - 90) * (args.plan_runs - 1))
            log(f"plan: {rate:.2f} steps/s, {left:.0f} s left in this run, {args.plan_runs} run(s) -> "
                f"total_steps {total} -> {new_total}")
            total = cfg["total_steps"] = new_total
            planned = True
        if time.time() - last_save > args.save_every:
            meta["step"] = step
            meta["config"] = cfg
            save_checkpoint(ckpt_path, model, pruner, optimizer, meta)
            last_save = time.time()
            log(f"checkpoint {ckpt_path}")
    el = time.time() - t_train
    cfg["total_steps"] = total
    meta["step"] = step
    meta["config"] = cfg
    run = {"command": command, "data": source, "steps": [step0, step], "seconds": round(el, 1),
           "samples_per_s": (step - step0) * B * Tf * hop / max(el, 1e-9),
           "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
           "torch": torch.__version__, "batch_size": B, "precision": cfg["precision"]}
    meta["runs"].append(run)
    meta["sparsity"] = pruner.sparsity()
    if ema:
        meta["final_ce"] = {"coarse": ema[0], "fine": ema[1], "bits_per_sample": (ema[0] + ema[1]) / math.log(2)}
    log(f"run: {run}")
    log(f"sparsity: {json.dumps({k: round(v, 4) for k, v in meta['sparsity'].items()})}")
    save_checkpoint(ckpt_path, model, pruner, optimizer, meta)
    if args.eval_shard:
        ev = read_shard(args.eval_shard)
        ev_m = compute_mels(ev, cfg["sample_rate"], mel_cfg, args.workers)
        meta["heldout"] = dict(heldout_nll(model, ev, ev_m, hop, device), step=step,
                               sentences=[n for n, _ in ev])
        log(f"held-out teacher-forced: {meta['heldout']}")
    meta["calibration"] = calibrate(model, corpus, cfg, radius, gen)
    save_checkpoint(ckpt_path, model, pruner, optimizer, meta)
    log(f"calibration: {json.dumps(meta['calibration']['activation_ranges'])}")
    log(f"saved {ckpt_path} ({os.path.getsize(ckpt_path) / 2**20:.1f} MiB)")
    if args.export:
        from models.export import export
        export(ckpt_path, args.export)
        log(f"exported {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def utterance_logits(model, audio, mel, hop, device="cpu"):
    """Teacher-forced logits of a whole utterance from h = 0, exactly as jitvoc computes them
    (Vocoder.teacher_forced): int16 audio [T], log-mel [F, n_mels] with (F-1)*hop < T <= F*hop
    -> (logits_c, logits_f) float32 tensors [T, 256]."""
    import torch
    from models.wavernn import split_sample
    T = len(audio)
    with torch.no_grad():
        m = torch.from_numpy(np.asarray(mel, np.float32)).to(device).T[None]        # [1, n_mels, F]
        a = model.condition(m)                                                         # [1, C, F]
        a = torch.cat([a, a[:, :, -1:]], dim=2)                                       # K_F := K_{F-1}
        cond = model.upsample_linear(a, hop)[:, :T]
        s = torch.from_numpy(np.asarray(audio, np.int16).astype(np.int64)).to(device)[None]
        prev = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], dim=1)
        pc, pf = split_sample(prev)
        c, _ = split_sample(s)
        lc, lf, _ = model(pc, pf, c, cond)
    return lc[0].float(), lf[0].float()
