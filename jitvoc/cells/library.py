"""Cells written in the language: GRU and LSTM (PyTorch's weight names and gate orders), SRU and
GILR (jitvoc.layers' equations, matrices in matvec orientation: the transposes of the layers'
[d_in, d] arrays), and the WaveRNN step of docs/model.md with its two passes and both draws."""
from __future__ import annotations

import numpy as np

from ..errors import CellError
from ..representation import Representation
from .graph import (INDEX, Cell, CellBuilder, Node, Rows, column, concat, const, lookup, relu,
                    sample, sigmoid, softmax, split, tanh)


def gru(input_size: int, hidden: int):
    """torch.nn.GRU's cell: gates (r, z, n) stacked in weight_ih [3H, in], weight_hh [3H, H]."""
    b = CellBuilder("gru")
    x, h = b.input("x", input_size), b.state("h", hidden)
    gi = b.weight("weight_ih", (3 * hidden, input_size)) @ x + b.weight("bias_ih", 3 * hidden)
    gh = b.weight("weight_hh", (3 * hidden, hidden)) @ h + b.weight("bias_hh", 3 * hidden)
    (i_r, i_z, i_n), (h_r, h_z, h_n) = split(gi, 3), split(gh, 3)
    r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
    n = tanh(i_n + r * h_n)
    h_new = (1 - z) * n + z * h
    return b.build(update={"h": h_new}, outputs={"h": h_new})


def lstm(input_size: int, hidden: int):
    """torch.nn.LSTM's cell: gates (i, f, g, o) stacked in weight_ih [4H, in], weight_hh [4H, H]."""
    b = CellBuilder("lstm")
    x, h, c = b.input("x", input_size), b.state("h", hidden), b.state("c", hidden)
    gates = (b.weight("weight_ih", (4 * hidden, input_size)) @ x + b.weight("bias_ih", 4 * hidden)
             + b.weight("weight_hh", (4 * hidden, hidden)) @ h + b.weight("bias_hh", 4 * hidden))
    i, f, g, o = split(gates, 4)
    c_new = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h_new = sigmoid(o) * tanh(c_new)
    return b.build(update={"h": h_new, "c": c_new}, outputs={"h": h_new})


def sru(size: int):
    """SRU, highway form: x̃ = W x, f = σ(W_f x + b_f), r = σ(W_r x + b_r),
    c_t = f ∘ c_{t−1} + (1 − f) ∘ x̃, h_t = r ∘ tanh(c_t) + (1 − r) ∘ x."""
    b = CellBuilder("sru")
    x, c = b.input("x", size), b.state("c", size)
    W, W_f, W_r = (b.weight(name, (size, size)) for name in ("W", "W_f", "W_r"))
    f = sigmoid(W_f @ x + b.weight("b_f", size))
    r = sigmoid(W_r @ x + b.weight("b_r", size))
    c_new = f * c + (1 - f) * (W @ x)
    return b.build(update={"c": c_new}, outputs={"h": r * tanh(c_new) + (1 - r) * x})


def gilr(input_size: int, size: int):
    """GILR: g = σ(U x + b_g), h_t = g ∘ h_{t−1} + (1 − g) ∘ tanh(V x + b_i)."""
    b = CellBuilder("gilr")
    x, h = b.input("x", input_size), b.state("h", size)
    g = sigmoid(b.weight("U", (size, input_size)) @ x + b.weight("b_g", size))
    i = tanh(b.weight("V", (size, input_size)) @ x + b.weight("b_i", size))
    h_new = g * h + (1 - g) * i
    return b.build(update={"h": h_new}, outputs={"h": h_new})


def wavernn(hidden: int, representation: Representation = Representation(), block=None,
            upsample: str | None = None):
    """One WaveRNN sample (docs/model.md), weights named as in the model file. Input: k, the
    upsampled conditioning row [3H]; with upsample="linear" the rows K_f, K_f+1 of the sample's
    frame and the next as inputs k0, k1 and alpha = (t mod hop) / hop (a scalar), k formed in
    the cell as the reference's upsample forms it, k0 + alpha · (k1 − k0) (what the compiled
    cell needs to give the hand-written loop's bits). States: h [H], the previous classes c
    and f (int32; start them at 128 and 0), the de-emphasised s and the DC blocker's y
    (float32). Outputs: the classes c and f, and `value`, the sample in [−1, 1] before
    rint(value · 32768) and clipping.

    Pass 1 finishes the coarse half of h (it does not see c_t) and draws c_t from stream 0;
    pass 2 adds I[:, 2] ĉ_t to the fine rows, finishes the fine half and draws f_t (stream 1).
    The operations are the reference vocoder's, in its order, except that pass 1 leaves out
    the term I[coarse rows, 2] ĉ_t, zero in every model file (the reference adds I[:, 2] · 0
    there: the same float, but for the sign of an exact zero).
    """
    b, k, h = _wavernn_leaves("wavernn", hidden, upsample)
    c, f = b.state("c", dtype=INDEX), b.state("f", dtype=INDEX)
    s, y = b.state("s"), b.state("y")
    h_new, _, c_new, logits_f = _wavernn_step(b, k, h, c, f,
                                              lambda logits: sample(logits, stream=0), block)
    f_new = sample(logits_f, stream=1)
    s_new, y_new, value = _decode(representation, c_new, f_new, s, y)
    return b.build(update={"h": h_new, "c": c_new, "f": f_new, "s": s_new, "y": y_new},
                   outputs={"c": c_new, "f": f_new, "value": value})


def wavernn_teacher(hidden: int, block=None, upsample: str | None = None):
    """The WaveRNN step teacher-forced: the true classes as int32 inputs (c and f, the previous
    sample's; c_t, the current coarse class that the fine half reads in place of its draw),
    the conditioning as wavernn's, the state h; output p [512], the distributions of c_t and
    f_t (softmax of each head's logits) side by side. The GRU and the heads are wavernn's."""
    b, k, h = _wavernn_leaves("wavernn_teacher", hidden, upsample)
    c, f, c_t = (b.input(name, dtype=INDEX) for name in ("c", "f", "c_t"))
    h_new, logits_c, _, logits_f = _wavernn_step(b, k, h, c, f, lambda logits: c_t, block)
    return b.build(update={"h": h_new}, outputs={"p": concat(softmax(logits_c), softmax(logits_f))})


def _wavernn_leaves(name: str, hidden: int, upsample: str | None) -> tuple:
    """(builder, the conditioning row k_t, the state h) of a WaveRNN cell (see wavernn)."""
    b = CellBuilder(name)
    if upsample not in (None, "linear"):
        raise CellError(f"wavernn's upsample is None (input k) or 'linear', got {upsample!r}")
    if upsample:
        k0, k1 = b.input("k0", 3 * hidden), b.input("k1", 3 * hidden)
        k = k0 + b.input("alpha") * (k1 - k0)
    else:
        k = b.input("k", 3 * hidden)
    return b, k, b.state("h", hidden)


def _wavernn_step(b, k, h, c, f, coarse, block) -> tuple:
    """(h_t, the logits of c_t, c_t, the logits of f_t) of one WaveRNN step from the
    conditioning row k, the state h and the previous classes c, f; coarse(logits of c_t) gives
    c_t (a draw, or the true class), which the fine half reads."""
    H = h.shape[0]
    R, I = b.weight("gru.R", (3 * H, H), block), b.weight("gru.I", (3 * H, 3))
    unit = const(np.arange(256) / 127.5 - 1)            # a class as a network input in [−1, 1]
    a = R @ h + b.weight("gru.bR", 3 * H)
    known = column(I, 0) * lookup(unit, c) + column(I, 1) * lookup(unit, f)

    h_coarse = _gru_half(_half(a, 0), [v + kk for v, kk in zip(_half(known, 0), _half(k, 0))],
                         h[0:H // 2])
    logits_c = _output_head(b, h_coarse, "O1", "b1", "O2", "b2", block)
    c_new = coarse(logits_c)

    c_hat = column(I, 2) * lookup(unit, c_new)
    v_fine = [(v + i) + kk for v, i, kk in zip(_half(known, 1), _half(c_hat, 1), _half(k, 1))]
    h_fine = _gru_half(_half(a, 1), v_fine, h[H // 2:H])
    logits_f = _output_head(b, h_fine, "O3", "b3", "O4", "b4", block)
    return concat(h_coarse, h_fine), logits_c, c_new, logits_f


def wavernn_inputs(K, hop: int, n: int, t0: int = 0) -> dict:
    """The inputs of wavernn(..., upsample="linear") for samples t0 .. t0 + n − 1 of the
    conditioning K [frames, 3H] (frame 0 at sample 0; the last sample's frame needs the next):
    k0 = K_f and k1 = K_f+1 as rows of K (Rows: no copies), alpha = (t mod hop) / hop in
    float32, as the reference's upsample computes it."""
    t = np.arange(t0, t0 + n)
    f = t // hop
    return {"k0": Rows(K, f), "k1": Rows(K, f + 1),
            "alpha": (t % hop).astype(np.float32) / np.float32(hop)}


def _half(x: Node, which: int) -> list:
    """The coarse (0) or fine (1) half of each of the gates (u, r, e) stacked in x [3H]."""
    return [g[which * g.shape[0] // 2:(which + 1) * g.shape[0] // 2] for g in split(x, 3)]


def _gru_half(a, v, h):
    """One half of the WaveRNN GRU: u = σ(a_u + v_u), r = σ(a_r + v_r), e = tanh(r ∘ a_e + v_e),
    h_t = u ∘ h + (1 − u) ∘ e."""
    u, r = sigmoid(a[0] + v[0]), sigmoid(a[1] + v[1])
    e = tanh(r * a[2] + v[2])
    return u * h + (1 - u) * e


def _output_head(b, y, o_hidden, b_hidden, o_out, b_out, block):
    """O_out relu(O_hidden y + b_hidden) + b_out, the logits of one draw."""
    n = y.shape[0]
    hidden = b.weight("out." + o_hidden, (n, n), block) @ y + b.weight("out." + b_hidden, n)
    return b.weight("out." + o_out, (256, n), block) @ relu(hidden) + b.weight("out." + b_out, 256)


def _decode(rep, c, f, s, y):
    """(s_t, y_t, the output value) per docs/model.md "Samples": e = base[c] + step[c] · fine[f],
    s_t = α s_{t−1} + e, and with a DC blocker y_t = r y_{t−1} + (s_t − s_{t−1})."""
    base, step = rep.segments()
    fine = (np.arange(256) + rep.fine_offset) * 2.0 ** -8     # exact in float32
    e = lookup(const(base), c) + lookup(const(step), c) * lookup(const(fine), f)
    s_new = rep.preemphasis * s + e
    if not rep.dc_block:
        return s_new, y, s_new
    y_new = rep.dc_block * y + (s_new - s)
    return s_new, y_new, y_new


SIZED = {"gru": gru, "lstm": lstm, "sru": sru, "gilr": gilr}   # cells made from sizes alone


def named(spec: str) -> Cell:
    """A library cell from text: "gru:512" or "gru:80:512" (input size, hidden; the input size
    is the hidden size when left out), the same for lstm and gilr, "sru:512", and
    "wavernn:896" (the hidden size, even; the linear representation)."""
    name, *sizes = str(spec).split(":")
    usage = (f"a cell is NAME:HIDDEN or NAME:INPUT:HIDDEN with NAME one of {sorted(SIZED)} "
             f"(sru:SIZE, wavernn:HIDDEN with HIDDEN even), got {spec!r}")
    single = name in ("sru", "wavernn")
    if name not in (*SIZED, "wavernn") or not 1 <= len(sizes) <= (1 if single else 2):
        raise CellError(usage)
    try:
        sizes = [int(v) for v in sizes]
    except ValueError:
        raise CellError(usage) from None
    if min(sizes) <= 0 or name == "wavernn" and sizes[0] % 2:
        raise CellError(usage)
    if name == "wavernn":
        return wavernn(sizes[0])
    return SIZED[name](*sizes) if name == "sru" else SIZED[name](sizes[0], sizes[-1])
