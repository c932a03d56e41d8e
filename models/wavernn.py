"""The PyTorch WaveRNN that models/train.py trains: exactly the math of docs/model.md.

Correspondence with the jitvoc model file (models/export.py does the conversion):

* conditioning: `convs[l]` are `cond.conv{l}` (Conv1d, K odd, zero "same" padding, activation
  per layer); their output A_L is upsampled linearly to the sample rate (`upsample_linear`);
* the GRU is one cuDNN `nn.GRU(3 + C, H)` whose input at step t is
  `[ĉ_{t-1}, f̂_{t-1}, ĉ_t, cond_t]`: `weight_ih[:, 3:]` is `cond.proj`, `weight_ih[:, :3]` is
  `gru.I`, `bias_ih` is `gru.b`, `weight_hh` is `gru.R` and `bias_hh` is `gru.bR`, all after
  reordering PyTorch's gates (r, z, n) into jitvoc's (u, r, e) = (z, r, n). (Linear upsampling
  commutes with the affine projection because its two weights sum to 1.)
* `weight_ih[coarse rows of every gate, 2]` is held at zero (`enforce_constraints`), so the
  coarse half of h_t does not see c_t;
* output heads: `O1`..`O4` (nn.Linear) on the coarse / fine halves of h_t.
"""
import math

import torch
import torch.nn as nn

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "none": lambda x: x}


def scale(c):
    """class index in [0, 255] -> network input in [-1, 1]."""
    return c.float() / 127.5 - 1.0


class WaveRNN(nn.Module):
    def __init__(self, hidden=896, n_mels=80, cond_channels=128,
                 cond_layers=({"kernel": 5, "activation": "relu"}, {"kernel": 5, "activation": "relu"})):
        super().__init__()
        if hidden % 2 or hidden % 32:
            raise ValueError("hidden must be a multiple of 32 (two halves of 16-row blocks)")
        self.hidden, self.n_mels, self.cond_channels = hidden, n_mels, cond_channels
        self.cond_layers = [dict(l) for l in cond_layers]
        convs, cin = [], n_mels
        for l in self.cond_layers:
            k = int(l["kernel"])
            if k % 2 == 0:
                raise ValueError("conditioning kernels must be odd")
            convs.append(nn.Conv1d(cin, cond_channels, k, padding=k // 2))
            cin = cond_channels
        self.convs = nn.ModuleList(convs)
        self.gru = nn.GRU(3 + cond_channels, hidden, batch_first=True)
        h2 = hidden // 2
        self.O1, self.O2 = nn.Linear(h2, h2), nn.Linear(h2, 256)
        self.O3, self.O4 = nn.Linear(h2, h2), nn.Linear(h2, 256)
        self.enforce_constraints()

    # ---- constraints -------------------------------------------------------------------------
    def coarse_rows(self):
        """Row indices (PyTorch gate layout) of the coarse half of every gate."""
        H, h2 = self.hidden, self.hidden // 2
        return torch.cat([torch.arange(g * H, g * H + h2) for g in range(3)])

    @torch.no_grad()
    def enforce_constraints(self):
        """I[coarse rows of every gate, 2] = 0: the coarse half must not see c_t."""
        H, h2 = self.hidden, self.hidden // 2
        for g in range(3):
            self.gru.weight_ih_l0[g * H:g * H + h2, 2] = 0.0

    def prunable(self):
        """name -> (parameter, list of row slices, one per separately pruned matrix)."""
        H = self.hidden
        return {
            "gru.R": (self.gru.weight_hh_l0, [slice(g * H, (g + 1) * H) for g in range(3)]),
            "out.O1": (self.O1.weight, [slice(None)]),
            "out.O2": (self.O2.weight, [slice(None)]),
            "out.O3": (self.O3.weight, [slice(None)]),
            "out.O4": (self.O4.weight, [slice(None)]),
        }

    # ---- conditioning ------------------------------------------------------------------------
    def condition(self, mel, valid=None):
        """mel [B, n_mels, W] (frames on the last axis) -> A_L [B, C, W].

        `valid` [B, W] bool marks frames inside the utterance; outside it every layer's input is
        zero, which is exactly the zero "same" padding of running the stack on the whole
        utterance (docs/model.md, "Conditioning")."""
        a = mel
        m = None if valid is None else valid[:, None, :].to(mel.dtype)
        for conv, l in zip(self.convs, self.cond_layers):
            if m is not None:
                a = a * m
            a = ACTIVATIONS[l["activation"]](conv(a))
        if m is not None:
            a = a * m
        return a

    @staticmethod
    def upsample_linear(a, hop):
        """A [B, C, Tf + 1] -> [B, Tf * hop, C]: k_t = K_f + α (K_{f+1} − K_f), α = (t mod hop)/hop."""
        B, C, W = a.shape
        alpha = torch.arange(hop, device=a.device, dtype=a.dtype) / hop
        a0, a1 = a[:, :, :-1, None], a[:, :, 1:, None]
        up = a0 + alpha * (a1 - a0)                       # [B, C, Tf, hop]
        return up.reshape(B, C, (W - 1) * hop).transpose(1, 2)

    # ---- sample rate -------------------------------------------------------------------------
    def heads(self, h):
        h2 = self.hidden // 2
        yc, yf = h[..., :h2], h[..., h2:]
        zc, zf = torch.relu(self.O1(yc)), torch.relu(self.O3(yf))
        return self.O2(zc), self.O4(zf), (yc, yf, zc, zf)

    def forward(self, prev_c, prev_f, cur_c, cond, h0=None, return_activations=False):
        """Teacher-forced: class indices [B, T] (previous coarse/fine, current coarse) and
        cond [B, T, C] -> logits_c, logits_f [B, T, 256] (and the final state)."""
        x = torch.cat([scale(prev_c)[..., None], scale(prev_f)[..., None], scale(cur_c)[..., None],
                       cond.to(torch.float32) if cond.dtype != torch.float32 else cond], dim=-1)
        h, hT = self.gru(x, h0)
        lc, lf, acts = self.heads(h)
        if return_activations:
            return lc, lf, hT, (h,) + acts
        return lc, lf, hT


def block_mask(weight, sparsity, old_mask=None, block=16):
    """Block magnitude pruning mask of one [rows, cols] matrix: blocks of `block` consecutive rows
    of one column, scored by their L2 norm; the `sparsity` fraction with the smallest scores is
    zeroed. Blocks already pruned (`old_mask`) stay pruned."""
    rows, cols = weight.shape
    if rows % block:
        raise ValueError(f"{rows} rows are not a multiple of the {block}-row block")
    score = weight.detach().float().reshape(rows // block, block, cols).norm(dim=1)
    alive = torch.ones_like(score, dtype=torch.bool)
    if old_mask is not None:
        alive = old_mask.reshape(rows // block, block, cols)[:, 0, :].bool()
        score = torch.where(alive, score, torch.full_like(score, -1.0))
    n = score.numel()
    k = int(math.floor(sparsity * n))
    keep = torch.ones(n, dtype=torch.bool, device=weight.device)
    if k > 0:
        idx = torch.argsort(score.flatten(), stable=True)[:k]
        keep[idx] = False
    keep &= alive.flatten()  # a lower target never regrows pruned blocks
    keep = keep.reshape(rows // block, 1, cols).expand(rows // block, block, cols)
    return keep.reshape(rows, cols).to(weight.dtype)


def sparsity_at(step, final, t0, span):
    """z_t = Z (1 − (1 − (t − t0)/S)^3) for t0 ≤ t ≤ t0 + S (WaveRNN paper, eq. 5)."""
    if step < t0:
        return 0.0
    p = min(1.0, (step - t0) / max(span, 1))
    return final * (1.0 - (1.0 - p) ** 3)
