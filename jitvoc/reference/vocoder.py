"""The NumPy float32 oracle of docs/model.md: slow, written for clarity, and the definition every
other engine is tested against.

The engine interface (ReferenceEngine here, JitEngine in jitvoc/engine_jit.py):

    Engine(model, cpu=None, dtype=...)           attributes: model, cpu, dtype, backend (a name)
    engine.generate(K, t0, n_samples, state, seed) -> int16 [n_samples]
    engine.teacher_forced(K, audio) -> float32 [T, 2, 256]

`K` holds conditioning rows (jitvoc.engine.conditioning) starting at the frame of sample `t0`;
it must cover frame `(t0 + n - 1) // hop` plus one more row, the next frame for linear
interpolation (past the last frame of an utterance the caller repeats the last row). `state` is a
jitvoc.engine.GenState, advanced in place. Splitting a generation into several calls at frame
boundaries must not change a single sample.
"""
import numpy as np

from ..engine import GenState, conditioning
from ..errors import InputError

_M32 = 0xFFFFFFFF


def teacher_forced_states(model, mel, audio) -> np.ndarray:
    """h_t [T, H] of the reference run teacher-forced on `audio` with its mel frames."""
    K = conditioning(model, mel)
    K = np.concatenate([K, K[-1:]])
    return ReferenceEngine(model).states(K, np.asarray(audio, np.int16))


def upsample(K, t, hop, mode) -> np.ndarray:
    """k_t for sample offsets `t` (int array, counted from the start of K's first frame):
    float32 [len(t), 3H]. "linear" reads the next row too; "repeat" does not."""
    t = np.asarray(t)
    f = t // hop
    if mode == "repeat":
        return K[f]
    alpha = ((t % hop).astype(np.float32) / np.float32(hop))[:, None]
    return K[f] + alpha * (K[f + 1] - K[f])


def uniform(seed, t, k) -> np.ndarray:
    """ξ in (0, 1) for sample index `t` (int or int array) and pass `k` (0 coarse, 1 fine):
    the counter-based generator of docs/model.md, as float32 (exact: the middle of one of 2²³
    equal bins, so never 0 and never 1)."""
    x = (2 * np.asarray(t, np.uint64) + np.uint64(k + 1)) & _M32
    x ^= np.uint64((int(seed) * 0x9E3779B9) & _M32)
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return ((x >> 9).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -23)


def segments(code):
    """The decode tables of docs/model.md ("Samples"): base[c], step[c] (float32 [256]) and the
    fine offset of `code` ("linear" or "mulaw")."""
    c = np.arange(257) / 128.0 - 1.0
    if code == "linear":
        edges = c
    else:  # µ-law expansion, µ = 255, rounded to float32 from float64
        edges = np.sign(c) * (np.power(256.0, np.abs(c)) - 1.0) / 255.0
        edges[256] = 1.0
    edges = edges.astype(np.float32)
    return edges[:256], edges[1:] - edges[:256], np.float32(0.0 if code == "linear" else 0.5)


def draw(logits, xi) -> np.ndarray:
    """The inverse-CDF rule in float32: the smallest i with p_0 + … + p_i > ξ·Σp (Σp being the
    last partial sum), else the last class. `logits` [..., n], `xi` broadcastable to [...]."""
    logits = np.asarray(logits, np.float32)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1, dtype=np.float32)        # sequential, in index order
    above = cdf > (np.float32(xi) * cdf[..., -1])[..., None]
    return np.where(above.any(axis=-1), above.argmax(axis=-1), logits.shape[-1] - 1)


class ReferenceEngine:
    """float32 NumPy engine, one Python step per sample. `cpu` is ignored (it runs anywhere);
    `dtype` must be "float32". jitvoc.load(model, engine=ReferenceEngine) makes a Vocoder of it."""
    backend = "reference"

    def __init__(self, model, cpu=None, dtype="float32"):
        if dtype != "float32":
            raise InputError(f"the reference engine computes in float32, not {dtype}")
        self.model, self.cpu, self.dtype = model, None, "float32"
        self._w = model.weights
        self._R = np.ascontiguousarray(model.weights["gru.R"], np.float32)
        self._hop, self._mode = model.hop_length, model.upsample
        rep = model.representation
        self._base, self._step, self._offset = segments(rep.code)
        self._alpha, self._r = np.float32(rep.preemphasis), np.float32(rep.dc_block)

    def generate(self, K, t0, n_samples, state: GenState, seed) -> np.ndarray:
        """Sample `n_samples` int16 samples from t0 on, two passes per sample (docs/model.md).
        Holds k_t for all of them at once: call it a few frames at a time."""
        self._check_k(K, t0, n_samples)
        if state.t != t0:
            raise InputError(f"state is at sample {state.t}, not at t0 = {t0}")
        state.check_filters()
        H2, out = self.model.hidden // 2, np.empty(n_samples, np.int16)
        t = t0 + np.arange(n_samples)
        xi_c, xi_f = uniform(seed, t, 0), uniform(seed, t, 1)
        k_all = upsample(K, np.arange(n_samples), self._hop, self._mode)
        h, c, f = state.h, state.c_prev, state.f_prev
        s, y = np.float32(state.s_prev), np.float32(state.y_prev)
        for i in range(n_samples):
            a = self._R @ h + self._w["gru.bR"]
            # Pass 1: the coarse half does not see c_t (gru.I[coarse, 2] == 0); use 0 for it.
            h_coarse = self._cell(a, h, (_scaled(c), _scaled(f), np.float32(0)), k_all[i])[:H2]
            c_new = int(draw(self._logits(h_coarse, "O1", "b1", "O2", "b2"), xi_c[i]))
            # Pass 2: with ĉ_t; the coarse half comes out the same, bit for bit.
            h = self._cell(a, h, (_scaled(c), _scaled(f), _scaled(c_new)), k_all[i])
            c, f = c_new, int(draw(self._logits(h[H2:], "O3", "b3", "O4", "b4"), xi_f[i]))
            out[i], s, y = self.output_sample(c, f, s, y)
        state.h, state.c_prev, state.f_prev, state.t = h, c, f, t0 + n_samples
        state.s_prev, state.y_prev = float(s), float(y)
        return out

    def output_sample(self, c, f, s_prev, y_prev):
        """(the int16 sample, s_t, y_t) for the classes (c, f), s_{t-1} and y_{t-1}, per
        docs/model.md: e = base[c] + step[c]·((f + offset)·2⁻⁸), s = e + α·s_prev, with a DC
        blocker (r ≠ 0) y = (s − s_prev) + r·y_prev, else y = s (y_t returned: y_prev), and
        rint(y·32768) clipped."""
        e = self._base[c] + self._step[c] * ((np.float32(f) + self._offset) * np.float32(2.0 ** -8))
        s = e + self._alpha * s_prev
        y = (s - s_prev) + self._r * y_prev if self._r else y_prev
        sample = np.rint((y if self._r else s) * np.float32(32768))
        return int(np.clip(sample, -32768, 32767)), s, y

    def teacher_forced(self, K, audio) -> np.ndarray:
        """P(c_t) and P(f_t) given the true previous samples (and the true c_t for the fine
        half), the audio encoded with the model's representation: float32 [T, 2, 256], each row
        a softmax. K starts at sample 0."""
        audio = np.asarray(audio)
        if audio.dtype != np.int16 or audio.ndim != 1 or audio.size == 0:
            raise InputError(f"audio must be non-empty 1-D int16, got {audio.dtype} {audio.shape}")
        self._check_k(K, 0, len(audio))
        states = self.states(K, audio)
        H2 = self.model.hidden // 2
        probs = [softmax(self._logits(states[:, :H2], "O1", "b1", "O2", "b2")),
                 softmax(self._logits(states[:, H2:], "O3", "b3", "O4", "b4"))]
        return np.stack(probs, axis=1)

    def states(self, K, audio) -> np.ndarray:
        """The teacher-forced GRU states h_t, float32 [T, H] (K starts at sample 0), the audio
        encoded with the model's representation."""
        c_cur, f_cur = self.model.representation.encode(audio)
        c_prev = np.concatenate([[128], c_cur[:-1]])
        f_prev = np.concatenate([[0], f_cur[:-1]])
        k_all = upsample(K, np.arange(len(audio)), self._hop, self._mode)
        h = np.zeros(self.model.hidden, np.float32)
        states = np.empty((len(audio), self.model.hidden), np.float32)
        for t in range(len(audio)):
            a = self._R @ h + self._w["gru.bR"]
            x = (_scaled(c_prev[t]), _scaled(f_prev[t]), _scaled(c_cur[t]))
            h = states[t] = self._cell(a, h, x, k_all[t])
        return states

    def _cell(self, a, h, x, k):
        """h_t from a = R h + bR, the inputs x = (ĉ_{t-1}, f̂_{t-1}, ĉ_t) and k_t."""
        I = self._w["gru.I"]
        v = I[:, 0] * x[0] + I[:, 1] * x[1] + I[:, 2] * x[2] + k
        (au, ar, ae), (vu, vr, ve) = a.reshape(3, -1), v.reshape(3, -1)
        u, r = _sigmoid(au + vu), _sigmoid(ar + vr)
        e = np.tanh(r * ae + ve)
        return u * h + (np.float32(1) - u) * e

    def _logits(self, y, o_hidden, b_hidden, o_out, b_out):
        """O_out relu(O_hidden y + b_hidden) + b_out, for y [H/2] or [T, H/2]."""
        w = self._w
        z = np.maximum(y @ w["out." + o_hidden].T + w["out." + b_hidden], np.float32(0))
        return z @ w["out." + o_out].T + w["out." + b_out]

    def _check_k(self, K, t0, n_samples):
        H3, hop = 3 * self.model.hidden, self._hop
        if not (isinstance(K, np.ndarray) and K.dtype == np.float32 and K.ndim == 2
                and K.shape[1] == H3):
            raise InputError(f"K must be float32 [rows, {H3}], got "
                             f"{getattr(K, 'dtype', type(K).__name__)} {np.shape(K)}")
        if t0 < 0 or t0 % hop:
            raise InputError(f"t0 = {t0} is not a non-negative multiple of hop {hop}")
        if n_samples < 0:
            raise InputError(f"n_samples must be non-negative, got {n_samples}")
        rows = (n_samples - 1) // hop + 2 if n_samples else 0
        if len(K) < rows:
            raise InputError(f"{n_samples} samples need {rows} rows of K, got {len(K)}")


def _scaled(q):
    """A coarse or fine class in [0, 255] as a network input in [-1, 1]."""
    return np.float32(q / 127.5 - 1)


def _sigmoid(x):
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def softmax(logits):
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)
