"""NumPy serial loops defining the linear recurrence, its backward pass and the layers built on it.

    h_t = λ_t ⊙ h_{t-1} + x_t,   h_{-1} = h0                       (linear_recurrence)

Layers (Martin & Cundy 2018), x: [T, ..., D_in], weights as the jitvoc.layers classes hold them:

- GILR:     g = σ(x U + b_g), i = tanh(x V + b_i), h_t = g ⊙ h_{t-1} + (1 − g) ⊙ i
- SRU:      x̃ = x W, f = σ(x W_f + b_f), r = σ(x W_r + b_r),
            c_t = f ⊙ c_{t-1} + (1 − f) ⊙ x̃,  h_t = r ⊙ tanh(c_t) + (1 − r) ⊙ x   (D_in = D)
- LS-LSTM:  the LSTM whose gates see a linear surrogate s (a GILR of x) instead of h:
            [f, i, o, z] = [x_t, s_{t-1}] W + b,  c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(z),
            h_t = σ(o) ⊙ tanh(c_t),  s_{-1} = 0.

`layer_forward(layer, x, state0)` is what a jitvoc.layers layer's forward(x, state0) computes.
"""
from __future__ import annotations

from dataclasses import fields

import numpy as np


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def linear_recurrence(decays, impulses, initial_state=None):
    """The serial loop over T, in the inputs' dtype."""
    lam = np.asarray(decays)
    x = np.asarray(impulses)
    h = np.empty(np.broadcast_shapes(lam.shape, x.shape), np.result_type(lam, x))
    prev = np.zeros(h.shape[1:], h.dtype) if initial_state is None else np.asarray(initial_state)
    for t in range(h.shape[0]):
        prev = h[t] = lam[t] * prev + x[t]
    return h


def linear_recurrence_backward(decays, h, initial_state, grad_h):
    """(dL/d decays, dL/d impulses, dL/d initial_state) given grad_h = dL/dh."""
    lam, h, g = np.asarray(decays), np.asarray(h), np.asarray(grad_h)
    h0 = np.zeros(h.shape[1:], h.dtype) if initial_state is None else np.asarray(initial_state)
    delta = np.empty_like(g)
    carry = np.zeros(g.shape[1:], g.dtype)
    for t in range(g.shape[0] - 1, -1, -1):
        carry = delta[t] = g[t] + (lam[t + 1] * carry if t + 1 < g.shape[0] else 0)
    prev = np.concatenate([h0[None], h[:-1]]) if len(h) else h
    return delta * prev, delta, (lam[0] * delta[0] if len(g) else np.zeros_like(h0))


def _stacked(rows, x, d):
    """The per-step outputs as one array [T, ..., d] (also for T = 0)."""
    return np.stack(rows) if rows else np.zeros(x.shape[:-1] + (d,), x.dtype)


def gilr(x, U, V, b_g, b_i, h0=None):
    """GILR layer, one timestep at a time."""
    h = np.zeros(x.shape[1:-1] + (U.shape[1],), x.dtype) if h0 is None else h0
    out = []
    for xt in x:
        g = sigmoid(xt @ U + b_g)
        h = g * h + (1 - g) * np.tanh(xt @ V + b_i)
        out.append(h)
    return _stacked(out, x, U.shape[1])


def sru(x, W, W_f, W_r, b_f, b_r, c0=None):
    """SRU layer (highway form, D_in = D), one timestep at a time."""
    c = np.zeros(x.shape[1:-1] + (W.shape[1],), x.dtype) if c0 is None else c0
    out = []
    for xt in x:
        f, r = sigmoid(xt @ W_f + b_f), sigmoid(xt @ W_r + b_r)
        c = f * c + (1 - f) * (xt @ W)
        out.append(r * np.tanh(c) + (1 - r) * xt)
    return _stacked(out, x, W.shape[1])


def ls_lstm(x, U, V, b_g, b_i, W, b, c0=None):
    """Linear-surrogate LSTM: GILR(U, V, b_g, b_i) surrogate, then the LSTM cell, per timestep."""
    s_all = gilr(x, U, V, b_g, b_i)
    D = U.shape[1]
    c = np.zeros(x.shape[1:-1] + (D,), x.dtype) if c0 is None else c0
    s = np.zeros_like(c)
    out = []
    for xt, st in zip(x, s_all):
        f, i, o, z = np.split(np.concatenate([xt, s], axis=-1) @ W + b, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(z)
        out.append(sigmoid(o) * np.tanh(c))
        s = st
    return _stacked(out, x, D)


def layer_forward(layer, x, state0=None):
    """What `layer.forward(x, state0)` computes, for a jitvoc.layers GILR, SRU or LSLSTM, one
    timestep at a time: the layer's fields, in order, are the arguments of its function here."""
    function = {"GILR": gilr, "SRU": sru, "LSLSTM": ls_lstm}[type(layer).__name__]
    return function(x, *(getattr(layer, f.name) for f in fields(layer)), state0)
