"""Train a pruned WaveRNN vocoder for jitvoc (docs/model.md), teacher-forced, over many runs.

    python -m models.train --config models/configs/multivoice.json --shards 0 --out .ckpt \
        [--resume .ckpt | models/checkpoint/latest.npz] [--time-budget 540] [--eval-shard F]

The GPU machine takes commands of at most 10 minutes and keeps nothing between them, so the
recipe is built to span many runs: every run trains on one data shard (models/prepare_data.py;
each holds every voice in proportion), stops inside `--time-budget`, and leaves a checkpoint
from which the next run resumes exactly. The schedule (learning rate, pruning) is a function
of the global step and `total_steps`, so it does not depend on how the steps were split.

Recipe:
* data: the shards of models/prepare_data.py; features are `jitvoc.mel_spectrogram` of each
  (silence-trimmed) recording; the audio is encoded once into coarse/fine codes with the
  config's sample representation (jitvoc/representation.py: µ-law coarse byte, linear fine
  refinement, pre-emphasis; its DC blocker r acts only on decoding, not on the codes);
* random crops of `crop_frames` frames, the GRU starting from h = 0 at the crop, inputs
  [ĉ_{t-1}, f̂_{t-1}, ĉ_t, cond_t] teacher-forced from the recording, except that Gaussian noise
  of `input_noise` classes is added to the previous sample's codes (rounded, clipped), so that
  the model learns to recover from its own sampling errors (LPCNet's remedy for exposure bias);
  the current coarse code ĉ_t of the fine pass is exact, as it is at inference;
* loss: cross-entropy of the coarse and of the fine softmax (bits per sample: (CE_c + CE_f)/ln 2);
* Adam, linear warm-up then cosine decay from `lr` to `lr_min` over `total_steps`, gradient
  norm clipping;
* gradual block pruning (WaveRNN paper), late: dense until `prune.start`·total_steps, then
  z_t = Z (1 − (1 − (t − t0)/S)^3) until (start + span)·total_steps; R's three gate matrices
  pruned separately, O1..O4 each; 16x1 blocks scored by L2 norm; pruned blocks never regrow;
  masks applied after every optimizer step, with I[coarse rows, 2] = 0 re-imposed;
* at the end of every run: held-out teacher-forced likelihood per voice (`--eval-shard`), free-
  running samples of the held-out recordings for models.evaluate to score (`--free-running`), and
  activation ranges of every matrix product's input, stored for models/export.py.

Checkpoints (`--out DIR`): `weights.npz` (fp32 weights, masks, generator state and a JSON `meta`:
config, step, history, runs), `adam_m.npz` and `adam_v.npz` (Adam's moments, fp32), each under
the 16 MiB that one file may take back from the GPU machine; resuming from them is bit-exact
(`--until` splits a run anywhere; tests/test_training_smoke.py checks it). The compact
copy kept in the repository (`--compact models/checkpoint/latest.npz`: fp16 weights, packed
masks, meta; about 7 MB) resumes everything but Adam's moments, which restart, with the learning
rate warmed up again over `rewarm_steps`.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from jitvoc.audio import read_audio
from jitvoc.mel import DEFAULT_CONFIG, mel_spectrogram
from jitvoc.representation import Representation, decode
from models.checkpoint import ADAM_FILES, read_checkpoint, save_checkpoint, save_compact, save_npz

T_START = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULTS = {
    "name": "wavernn",
    "hidden": 896,
    "cond_channels": 128,
    "cond_layers": [{"kernel": 5, "activation": "relu"}, {"kernel": 5, "activation": "relu"}],
    "sample_rate": 16000,
    "mel": None,                 # None: jitvoc's default mel config
    "representation": {"code": "mulaw", "preemphasis": 0.85, "dc_block": 0.995},
    "input_noise": {"coarse": 1.0, "fine": 8.0},
    "data": {"shards": ".traindata", "wav_dir": None, "max_sentences": None},
    "batch_size": 256,
    "crop_frames": 8,
    "total_steps": 50000,
    "lr": 5e-4,
    "lr_min": 2e-5,
    "warmup_steps": 500,
    "rewarm_steps": 200,
    "grad_clip": 1.0,
    "prune": {"R": 0.95, "O": 0.90, "start": 0.2, "span": 0.45, "every": 100, "block": 16},
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


def representation(cfg):
    return Representation.from_meta(cfg["representation"])


# ---------------------------------------------------------------------------------------------
# data

def read_shard(path_flac):
    """[(voice, name, int16 audio)] of one shard written by models/prepare_data.py."""
    import soundfile as sf
    audio, sr = sf.read(path_flac, dtype="int16")
    with open(path_flac[:-5] + ".json") as f:
        index = json.load(f)
    assert sr == index["sample_rate"] and len(audio) == index["samples"], path_flac
    return [(u["voice"], u["name"], audio[u["offset"]:u["offset"] + u["length"]])
            for u in index["utterances"]]


def load_utterances(cfg, shards):
    d = cfg["data"]
    if d.get("wav_dir"):  # festvox-ru recordings read directly (smoke test)
        from models.prepare_data import load_split, trim_silence
        names = load_split()["voices"]["festvox_ru"]["train"][:d.get("max_sentences")]
        utts = []
        for n in names:
            x, sr, _ = read_audio(os.path.join(d["wav_dir"], n + ".wav"))
            a, b = trim_silence(x, sr)
            utts.append(("festvox_ru", n, x[a:b]))
        return utts, f"{d['wav_dir']} ({len(names)} training sentences of models/split.json)"
    root = d["shards"]
    if not os.path.isdir(root):
        raise SystemExit(f"models.train: no training data in {root}: prepare it first "
                         f"(python -m models.prepare_data --out {root})")
    if shards is None:
        shards = sorted(int(f[5:-5]) for f in os.listdir(root) if f.startswith("shard") and f.endswith(".flac"))
    utts = []
    for s in shards:
        utts += read_shard(os.path.join(root, f"shard{s}.flac"))
    return utts[:d.get("max_sentences")], f"{root} shards {shards}"


def _mel_job(args):
    x, sr, mel_cfg = args
    return mel_spectrogram(x, sr, mel_cfg)


def compute_mels(utts, sr, mel_cfg, workers):
    jobs = [(x, sr, mel_cfg) for _, _, x in utts]
    if workers > 1 and len(jobs) > 8:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            return pool.map(_mel_job, jobs, chunksize=4)
    return [_mel_job(j) for j in jobs]


class Corpus:
    """All training codes and mel frames on the device, with random crop sampling."""

    def __init__(self, utts, mels, hop, device, rep):
        import torch
        self.hop, self.device = hop, device
        lens = np.array([len(x) for _, _, x in utts], np.int64)
        nfr = np.array([m.shape[0] for m in mels], np.int64)
        assert (nfr == -(-lens // hop)).all(), "mel frames != ceil(samples / hop)"
        codes = [rep.encode(x) for _, _, x in utts]
        self.c = torch.from_numpy(np.concatenate([c for c, _ in codes]).astype(np.uint8)).to(device)
        self.f = torch.from_numpy(np.concatenate([f for _, f in codes]).astype(np.uint8)).to(device)
        self.mel = torch.from_numpy(np.concatenate(mels).astype(np.float32)).to(device)
        self.a_off = torch.from_numpy(np.concatenate([[0], np.cumsum(lens)[:-1]])).to(device)
        self.m_off = torch.from_numpy(np.concatenate([[0], np.cumsum(nfr)[:-1]])).to(device)
        self.n_frames = torch.from_numpy(nfr).to(device)
        self.seconds = float(lens.sum()) / 16000.0

    def batch(self, B, Tf, radius, gen):
        """A random batch of crops: codes (prev_c, prev_f, cur_c, cur_f) int64 [B, T], the mel
        window [B, n_mels, Tf + 1 + 2 radius] and its validity mask."""
        import torch
        starts = (self.n_frames - Tf).clamp(min=0)          # crop starts f0 in [0, F - Tf)
        cum = torch.cumsum(starts, 0)
        g = torch.randint(0, int(cum[-1]), (B,), device=self.device, generator=gen)
        i = torch.searchsorted(cum, g, right=True)
        f0 = g - (cum[i] - starts[i])
        pos = f0[:, None] * self.hop + torch.arange(Tf * self.hop, device=self.device)[None, :]
        at = self.a_off[i][:, None] + pos
        first = pos == 0                                    # silence before the first sample
        prev = (at - 1).clamp(min=0)
        prev_c = torch.where(first, 128, self.c[prev].long())
        prev_f = torch.where(first, 0, self.f[prev].long())
        fr = f0[:, None] - radius + torch.arange(Tf + 1 + 2 * radius, device=self.device)[None, :]
        valid = (fr >= 0) & (fr < self.n_frames[i][:, None])
        mel = self.mel[self.m_off[i][:, None] + fr.clamp(min=0).minimum(self.n_frames[i][:, None] - 1)]
        mel = mel * valid[..., None]
        codes = (prev_c, prev_f, self.c[at].long(), self.f[at].long())
        return codes, mel.transpose(1, 2).contiguous(), valid


def noisy(codes, noise, gen):
    """The previous sample's codes with rounded Gaussian noise of `noise` classes (clipped)."""
    import torch
    prev_c, prev_f, c, f = codes
    out = []
    for q, sigma in ((prev_c, noise["coarse"]), (prev_f, noise["fine"])):
        if sigma:
            q = (q + torch.round(sigma * torch.randn(q.shape, device=q.device, generator=gen)).long()).clamp(0, 255)
        out.append(q)
    return (*out, c, f)


# ---------------------------------------------------------------------------------------------
# model pieces

def receptive_radius(cfg):
    return sum(int(l["kernel"]) // 2 for l in cfg["cond_layers"])


def teacher_forced(model, codes, mel, valid, Tf, hop, radius, return_activations=False):
    prev_c, prev_f, c, _ = codes
    a = model.condition(mel, valid)[:, :, radius:radius + Tf + 1]
    cond = model.upsample_linear(a, hop)
    return model(prev_c, prev_f, c, cond, return_activations=return_activations), a


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

    def window(self, total):
        return self.p["start"] * total, self.p["span"] * total

    def update(self, step, total, optimizer=None):
        from models.wavernn import block_mask, sparsity_at
        t0, span = self.window(total)
        zR, zO = sparsity_at(step, self.p["R"], t0, span), sparsity_at(step, self.p["O"], t0, span)
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

    def due(self, step, total):
        """Masks are recomputed every `every` steps inside the window, and at its end."""
        t0, span = self.window(total)
        return step >= t0 and (step % self.p["every"] == 0 or step == math.ceil(t0 + span))

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


def lr_at(step, cfg, total, rewarm_from=None):
    if step < cfg["warmup_steps"]:
        lr = cfg["lr"] * (step + 1) / cfg["warmup_steps"]
    else:
        p = min(1.0, (step - cfg["warmup_steps"]) / max(1, total - cfg["warmup_steps"]))
        lr = cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (1 + math.cos(math.pi * p))
    if rewarm_from is not None:  # Adam's moments restarted (compact checkpoint)
        lr *= min(1.0, (step - rewarm_from + 1) / cfg["rewarm_steps"])
    return lr


def rescale_schedule(meta, cfg, total):
    """Plan `total` steps instead of cfg["total_steps"], keeping the schedule's position: the
    step counter (and the step a re-warm-up started from) move to the same fraction of the
    plan, so the learning rate and the pruning target are where they were. A recipe change
    that makes steps cheaper (shorter crops) is then compared with the old one at equal wall
    time and equal schedule position."""
    ratio = total / cfg["total_steps"]
    meta.setdefault("rescaled", []).append({"from": [meta["step"], cfg["total_steps"]],
                                            "to": [round(meta["step"] * ratio), total]})
    meta["step"] = round(meta["step"] * ratio)
    if "rewarm_from" in meta:
        meta["rewarm_from"] = round(meta["rewarm_from"] * ratio)
    cfg["total_steps"] = total


def build_model(cfg, n_mels):
    from models.wavernn import WaveRNN
    return WaveRNN(cfg["hidden"], n_mels, cfg["cond_channels"], cfg["cond_layers"])


# ---------------------------------------------------------------------------------------------
# checkpoints

def restore(model, pruner, optimizer, ckpt, device):
    import torch
    weights, masks, meta, _, adam = ckpt
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    for n in pruner.masks:
        pruner.masks[n] = torch.from_numpy(masks[n].astype(np.float32)).to(device)
    for n, p in model.named_parameters():
        if f"{n}/exp_avg" in adam:
            optimizer.state[p] = {
                "step": torch.tensor(float(meta.get("adam_step", meta["step"]))),
                "exp_avg": torch.from_numpy(adam[f"{n}/exp_avg"]).to(device),
                "exp_avg_sq": torch.from_numpy(adam[f"{n}/exp_avg_sq"]).to(device),
            }
    pruner.apply()


# ---------------------------------------------------------------------------------------------
# calibration and held-out likelihood

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
        for done in range(0, n, 16):
            codes, mel, valid = corpus.batch(min(16, n - done), Tf, radius, gen)
            (lc, lf, _, acts), a = teacher_forced(model, codes, mel, valid, Tf, corpus.hop, radius,
                                                  return_activations=True)
            h, yc, yf, zc, zf = acts
            for name, x in (("mel", mel), ("cond.A_L", a), ("gru.R", h), ("out.O1", yc),
                            ("out.O3", yf), ("out.O2", zc), ("out.O4", zf),
                            ("logits.coarse", lc), ("logits.fine", lf)):
                add(name, x)
    model.train()
    return {"method": f"max and percentiles of |x| over {n} teacher-forced training crops of "
                      f"{Tf * corpus.hop} samples (fp32, final masks)",
            "activation_ranges": stats}


def utterance_codes(rep, audio):
    """(prev_c, prev_f, cur_c, cur_f) int64 tensors [1, T] of a whole utterance from silence."""
    import torch
    c, f = (torch.from_numpy(q)[None] for q in rep.encode(audio))
    prev_c = torch.cat([torch.full_like(c[:, :1], 128), c[:, :-1]], dim=1)
    prev_f = torch.cat([torch.zeros_like(f[:, :1]), f[:, :-1]], dim=1)
    return prev_c, prev_f, c, f


def utterance_logits(model, audio, mel, hop, rep, device="cpu"):
    """Teacher-forced logits of a whole utterance from h = 0, exactly as jitvoc computes them
    (Vocoder.teacher_forced): int16 audio [T], log-mel [F, n_mels] with (F-1)*hop < T <= F*hop
    -> (logits_c, logits_f) float32 tensors [T, 256]."""
    import torch
    T = len(audio)
    with torch.no_grad():
        m = torch.from_numpy(np.asarray(mel, np.float32)).to(device).T[None]        # [1, n_mels, F]
        a = model.condition(m)
        a = torch.cat([a, a[:, :, -1:]], dim=2)                                       # K_F := K_{F-1}
        cond = model.upsample_linear(a, hop)[:, :T]
        prev_c, prev_f, c, _ = (q.to(device) for q in utterance_codes(rep, audio))
        lc, lf, _ = model(prev_c, prev_f, c, cond)
    return lc[0].float(), lf[0].float()


def heldout_nll(model, utts, mels, hop, device, rep):
    """Teacher-forced bits per sample (and coarse/fine nats) of whole held-out recordings from
    h = 0, per voice and in all: one padded batch, run in chunks that carry the state."""
    import torch
    import torch.nn.functional as F
    model.eval()
    T = max(len(x) for _, _, x in utts)
    conds, codes = [], []
    with torch.no_grad():
        for (_, _, x), mel in zip(utts, mels):
            m = torch.from_numpy(np.asarray(mel, np.float32)).to(device).T[None]
            a = model.condition(m)
            a = torch.cat([a, a[:, :, -1:]], dim=2)
            conds.append(F.pad(model.upsample_linear(a, hop)[0, :len(x)], (0, 0, 0, T - len(x))))
            codes.append([F.pad(q[0], (0, T - len(x))) for q in utterance_codes(rep, x)])
        cond = torch.stack(conds)
        prev_c, prev_f, c, f = (torch.stack(q).to(device) for q in zip(*codes))
        valid = torch.arange(T, device=device)[None, :] < torch.tensor([len(x) for _, _, x in utts], device=device)[:, None]
        ce = torch.zeros(2, len(utts), device=device)
        h = None
        for t in range(0, T, 32000):   # cuDNN's sizes are 32-bit: chunks carrying the state
            sl = slice(t, t + 32000)
            lc, lf, h = model(prev_c[:, sl], prev_f[:, sl], c[:, sl], cond[:, sl], h0=h)
            v = valid[:, sl]
            ce[0] += (F.cross_entropy(lc.transpose(1, 2), c[:, sl], reduction="none") * v).sum(1)
            ce[1] += (F.cross_entropy(lf.transpose(1, 2), f[:, sl], reduction="none") * v).sum(1)
    model.train()
    sums = {}
    for (voice, _, x), cc, ff in zip(utts, ce[0].tolist(), ce[1].tolist()):
        for key in (voice, "all"):
            s = sums.setdefault(key, [0.0, 0.0, 0])
            s[0], s[1], s[2] = s[0] + cc, s[1] + ff, s[2] + len(x)
    return {v: {"ce_coarse": c / n, "ce_fine": f / n, "samples": n,
                "bits_per_sample": (c + f) / n / math.log(2)} for v, (c, f, n) in sums.items()}


def free_running(model, utts, mels, hop, device, rep, seconds, sample_rate, seed=0):
    """Free-running samples of the first `seconds` of each held-out recording (int16 arrays),
    drawn by PyTorch from the model's two softmaxes (torch.multinomial, not jitvoc's draw rule):
    the coarse half of h_t is computed with c_t = 0 (it does not see c_t), c_t is drawn, then the
    fine half with c_t. All recordings advance together, one batch."""
    import torch
    lens = [min(len(x), int(seconds * sample_rate)) for _, _, x in utts]
    T = max(lens)
    cell = torch.nn.GRUCell(model.gru.input_size, model.hidden).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(model.gru, name + "_l0"))
        conds = []
        for mel, n in zip(mels, lens):
            m = torch.from_numpy(np.asarray(mel, np.float32)).to(device).T[None]
            a = model.condition(m)
            a = torch.cat([a, a[:, :, -1:]], dim=2)
            k = model.upsample_linear(a, hop)[0, :n]
            conds.append(torch.nn.functional.pad(k, (0, 0, 0, T - n)))
        cond = torch.stack(conds)                                    # [N, T, C]
        N = len(utts)
        h = torch.zeros(N, model.hidden, device=device)
        x = torch.zeros(N, 3 + cond.shape[2], device=device)
        prev = torch.tensor([[128.0, 0.0]], device=device).expand(N, 2)
        codes = torch.zeros(T, 2, N, dtype=torch.long, device=device)
        for t in range(T):
            x[:, :2] = prev / 127.5 - 1.0
            x[:, 2] = 0.0
            x[:, 3:] = cond[:, t]
            lc, _, _ = model.heads(cell(x, h))
            c = torch.multinomial(torch.softmax(lc, -1), 1, generator=gen)[:, 0]
            x[:, 2] = c / 127.5 - 1.0
            h = cell(x, h)
            _, lf, _ = model.heads(h)
            f = torch.multinomial(torch.softmax(lf, -1), 1, generator=gen)[:, 0]
            codes[t, 0], codes[t, 1] = c, f
            prev = torch.stack([c, f], 1).float()
    model.train()
    codes = codes.cpu().numpy()
    return [decode(rep, codes[:n, 0, i], codes[:n, 1, i])[0] for i, n in enumerate(lens)]


def save_free_running(path, utts, audio, step, sample_rate):
    """`path`.npz: one int16 array per held-out recording ("voice/name"), the step and the
    sample rate."""
    arrays = {f"{voice}/{name}": y for (voice, name, _), y in zip(utts, audio)}
    arrays["step"] = np.array(step, np.int64)
    arrays["sample_rate"] = np.array(sample_rate, np.int64)
    save_npz(path, arrays)


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="Train a pruned WaveRNN for jitvoc, over many runs")
    ap.add_argument("--config", default=os.path.join(HERE, "configs", "multivoice.json"))
    ap.add_argument("--shards", default=None, help="comma-separated shard numbers (default: all)")
    ap.add_argument("--out", default=".ckpt", help="checkpoint folder (weights.npz, adam.npz)")
    ap.add_argument("--resume", default=None,
                    help="a checkpoint folder (exact) or a compact copy (.npz) to continue from")
    ap.add_argument("--compact", default=None, help="also write the compact copy here at the end")
    ap.add_argument("--compact-from", default=None, metavar="DIR",
                    help="only write the compact copy (--compact) of the checkpoint folder DIR")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds (from process start) after which to save and stop")
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=None, help="override total_steps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override one entry of the (resumed) recipe, e.g. crop_frames=4")
    ap.add_argument("--rescale-to", type=int, default=None, metavar="TOTAL",
                    help="plan TOTAL steps from here on, moving the step counter to the same "
                         "fraction of the plan (learning rate and pruning continue where they were)")
    ap.add_argument("--until", type=int, default=None, help="stop at this global step")
    ap.add_argument("--export", default=None, help="also export the final model file here")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--eval-shard", default=None, help="FLAC shard of held-out recordings: "
                    "teacher-forced likelihood per voice at the end")
    ap.add_argument("--free-running", default=None, metavar="NPZ",
                    help="with --eval-shard: also sample the first --free-running-seconds of each "
                         "held-out recording free-running and save them here (models.evaluate "
                         "--free-running scores them)")
    ap.add_argument("--free-running-seconds", type=float, default=3.0)
    ap.add_argument("--save-every", type=float, default=240.0, help="seconds between checkpoints")
    args = ap.parse_args(argv)

    if args.compact_from:
        if not args.compact:
            ap.error("--compact-from needs --compact PATH")
        weights, masks, meta, _, _ = read_checkpoint(args.compact_from)
        save_compact(args.compact, weights, masks, meta)
        log(f"compact copy {args.compact} of {args.compact_from} at step {meta['step']}")
        return 0
    import torch
    cfg = load_config(args.config)
    device = args.device or cfg["device"]
    if device == "cuda" and not torch.cuda.is_available():
        log("CUDA not available: training on the CPU")
        device = "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    command = "python -m models.train " + " ".join(sys.argv[1:] if argv is None else argv)

    meta = {"step": 0, "runs": [], "history": []}
    ckpt = None
    if args.resume:
        ckpt = read_checkpoint(args.resume)
        old = ckpt[2]
        meta.update({k: v for k, v in old.items() if k not in ("config", "compact")})
        cfg = old["config"]     # the recipe continues as it was planned
        compact = not os.path.isdir(args.resume)
        if compact:
            meta["rewarm_from"] = meta["step"]
        log(f"resuming {args.resume} at step {meta['step']} of {cfg['total_steps']}"
            + (" (compact copy: Adam's moments restart)" if compact else ""))
    if args.steps:
        cfg["total_steps"] = args.steps
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in cfg:
            ap.error(f"--set {item}: the recipe has no entry {key!r}")
        cfg[key] = json.loads(value)
    if args.rescale_to:
        rescale_schedule(meta, cfg, args.rescale_to)
        log(f"schedule rescaled to {cfg['total_steps']} steps: now at step {meta['step']}")
    torch.manual_seed(cfg["seed"] + meta["step"])
    rep = representation(cfg)
    mel_default = dict(DEFAULT_CONFIG)
    mel_cfg = cfg["mel"] = cfg["mel"] or mel_default
    hop = mel_cfg["hop_length"]
    shards = [int(s) for s in args.shards.split(",")] if args.shards else None
    utts, source = load_utterances(cfg, shards)
    log(f"{len(utts)} recordings from {source}")
    mels = compute_mels(utts, cfg["sample_rate"], mel_cfg, args.workers)
    if device == "cuda":  # CUDA is first touched here, after the forked mel workers are done
        log("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    corpus = Corpus(utts, mels, hop, device, rep)
    del utts, mels
    log(f"corpus: {corpus.seconds / 60:.1f} min of audio, {corpus.mel.shape[0]} frames, {rep} on {device}")

    radius = receptive_radius(cfg)
    model = build_model(cfg, mel_cfg["n_mels"]).to(device)
    pruner = Pruner(model, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.999))
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] + meta["step"])
    if ckpt is not None:
        restore(model, pruner, optimizer, ckpt, device)
        if ckpt[3] is not None:
            gen.set_state(torch.from_numpy(ckpt[3]))
    del ckpt
    pruner.apply()

    B, Tf, total = cfg["batch_size"], cfg["crop_frames"], cfg["total_steps"]
    step0 = step = meta["step"]
    deadline = T_START + args.time_budget if args.time_budget else None
    # seconds kept for the checkpoint, held-out likelihood and calibration (60), and the
    # free-running samples (about 20 s for 20 recordings of 3 s on an H200)
    reserve = 60.0 + (40.0 if args.free_running else 0.0)
    t_train = last_save = time.time()
    ema = None
    log(f"training: B={B} crop={Tf * hop} samples, steps {step}..{total}, noise {cfg['input_noise']}")
    while step < min(total, args.until or total):
        if deadline and time.time() > deadline - reserve:
            log("time budget reached")
            break
        lr = lr_at(step, cfg, total, meta.get("rewarm_from"))
        for group in optimizer.param_groups:
            group["lr"] = lr
        codes, mel, valid = corpus.batch(B, Tf, radius, gen)
        (lc, lf, _), _ = teacher_forced(model, noisy(codes, cfg["input_noise"], gen), mel, valid, Tf, hop, radius)
        ce_c, ce_f = loss_fn(lc, lf, codes[2], codes[3])
        optimizer.zero_grad(set_to_none=True)
        (ce_c + ce_f).backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        step += 1
        if pruner.due(step, total):
            pruner.update(step, total, optimizer)   # recompute masks (and apply them)
        else:
            pruner.apply()
        if step % cfg["log_every"] == 0 or step == total:
            cc, ff = float(ce_c.detach()), float(ce_f.detach())
            ema = (cc, ff) if ema is None else (0.9 * ema[0] + 0.1 * cc, 0.9 * ema[1] + 0.1 * ff)
            el = time.time() - t_train
            sp = pruner.sparsity()
            meta["history"].append({"step": step, "ce_c": cc, "ce_f": ff, "lr": lr, "grad_norm": float(gn),
                                    "R": sp["gru.R"], "O": sp["out.O1"], "t": round(el, 1)})
            log(f"step {step}/{total} ce_c {cc:.3f} ce_f {ff:.3f} ({(cc + ff) / math.log(2):.2f} bits/sample) "
                f"lr {lr:.2e} |g| {float(gn):.2f} R {sp['gru.R']:.3f} O {sp['out.O1']:.3f} "
                f"{(step - step0) / el:.2f} steps/s")
        if time.time() - last_save > args.save_every:
            meta.update(step=step, config=cfg)
            save_checkpoint(args.out, model, pruner, optimizer, meta, gen)
            last_save = time.time()
            log(f"checkpoint {args.out}")
    el = time.time() - t_train
    meta.update(step=step, config=cfg, sparsity=pruner.sparsity())
    meta["runs"].append({"command": command, "data": source, "steps": [step0, step], "seconds": round(el, 1),
                         "steps_per_s": (step - step0) / max(el, 1e-9),
                         "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                         "torch": torch.__version__, "batch_size": B, "precision": "fp32 (TF32 matmuls)"})
    if ema:
        meta["final_ce"] = {"coarse": ema[0], "fine": ema[1], "bits_per_sample": (ema[0] + ema[1]) / math.log(2)}
    log(f"run: {meta['runs'][-1]}")
    log(f"sparsity: {json.dumps({k: round(v, 4) for k, v in meta['sparsity'].items()})}")
    save_checkpoint(args.out, model, pruner, optimizer, meta, gen)
    if args.eval_shard:
        ev = read_shard(args.eval_shard)
        ev_m = compute_mels(ev, cfg["sample_rate"], mel_cfg, args.workers)
        meta.setdefault("heldout", []).append(dict(step=step, **heldout_nll(model, ev, ev_m, hop, device, rep)))
        log("held-out teacher-forced bits/sample: " + json.dumps(
            {v: round(r["bits_per_sample"], 3) for v, r in meta["heldout"][-1].items() if v != "step"}))
        if args.free_running:
            t0 = time.time()
            audio = free_running(model, ev, ev_m, hop, device, rep, args.free_running_seconds,
                                 cfg["sample_rate"])
            save_free_running(args.free_running, ev, audio, step, cfg["sample_rate"])
            log(f"free-running samples of {len(ev)} held-out recordings: {args.free_running} "
                f"({time.time() - t0:.1f} s)")
    # its own generator: the checkpoint's stays where training left it
    meta["calibration"] = calibrate(model, corpus, cfg, radius,
                                    torch.Generator(device=device).manual_seed(cfg["seed"]))
    save_checkpoint(args.out, model, pruner, optimizer, meta, gen)
    if args.compact:
        save_compact(args.compact, {n: p.detach().cpu().numpy() for n, p in model.state_dict().items()},
                     {n: m.detach().cpu().numpy() for n, m in pruner.masks.items()}, meta)
        log(f"compact copy {args.compact} ({os.path.getsize(args.compact) / 2**20:.1f} MiB)")
    log(f"saved {args.out}: " + ", ".join(f"{f} {os.path.getsize(os.path.join(args.out, f)) / 2**20:.1f} MiB"
                                         for f in ("weights.npz", *ADAM_FILES.values())))
    if args.export:
        from models.export import export
        export(args.out, args.export)
        log(f"exported {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
