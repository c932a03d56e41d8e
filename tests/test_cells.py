"""The cell language (jitvoc.cells): graph checks, the NumPy interpreter, and the cells written in
it against PyTorch, the linear-recurrence layers and the reference vocoder."""
import numpy as np
import pytest

from jitvoc import cells
from jitvoc.cells import CellBuilder, schedule, concat, lookup, sample, sigmoid, split, tanh
from jitvoc.errors import CellError, JitvocError
from jitvoc.model import random_model
from jitvoc.reference import scan
from jitvoc.reference.cells import run
from jitvoc.reference.vocoder import GenState, ReferenceEngine, draw, uniform
from jitvoc.reference.vocoder import upsample as upsample_rows
from jitvoc.representation import Representation

EPS = float(np.finfo(np.float32).eps)


def rng(seed=0):
    return np.random.default_rng(seed)


def normal(shape, seed=0, scale=1.0):
    return (scale * rng(seed).standard_normal(shape)).astype(np.float32)


def tolerance(weights, x, steps, terms):
    """A first-order bound (loose by orders of magnitude, but far below what a wrong gate order,
    sign or bias would make) on the float32 difference of two evaluations in different orders:
    a dot product of n terms is within n·ε·Σ|w·x| (Higham, γ_n); σ' ≤ ¼ and tanh' ≤ 1 do not
    amplify it, and the state carries each step's error on with gain at most about 1, so the
    errors of `steps` steps add up. Σ|w·x| ≤ the largest row sum of |W| times
    max(|x|, |h| ≤ 1) plus |b|, over all the weights."""
    scale = max(1.0, float(np.abs(x).max()))
    row_sums = sum(np.abs(w).sum(axis=-1).max() if w.ndim == 2 else np.abs(w).max()
                   for w in weights.values())
    return steps * (terms + 8) * EPS * scale * row_sums


# ---- the graph: shapes, names and cycles are checked when it is built ----

def test_a_cell_is_frozen_data_in_argument_order():
    cell = cells.gru(3, 4)
    assert set(cell.inputs) == {"x"} and set(cell.states) == {"h"}
    assert set(cell.weights) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    seen = set()
    for node in cell.nodes:
        assert all(arg in seen for arg in node.args)
        seen.add(node)
    with pytest.raises(AttributeError):
        cell.nodes[0].op = "exp"
    with pytest.raises(TypeError):
        cell.update["h"] = cell.nodes[0]


def test_shape_mismatches_are_cell_errors():
    b = CellBuilder("bad")
    x, h, W = b.input("x", 3), b.state("h", 4), b.weight("W", (4, 5))
    with pytest.raises(CellError, match="shapes do not match"):
        x + h
    with pytest.raises(CellError, match="5 columns"):
        W @ x
    with pytest.raises(CellError, match="weight matrix"):
        h @ x
    with pytest.raises(CellError, match="equal parts"):
        split(h, 3)
    with pytest.raises(CellError, match="out of range"):
        h[2:9]
    with pytest.raises(CellError, match="out of range"):
        h[-2:]
    with pytest.raises(CellError, match="positive ints"):
        b.input("y", (2, 0))
    with pytest.raises(CellError, match="does not tile"):
        b.weight("R", (4, 6), block=(3, 1))
    assert issubclass(CellError, JitvocError)


def test_dtype_mismatches_are_cell_errors():
    b = CellBuilder("bad")
    c, v = b.state("c", dtype="int32"), b.input("v", 8)
    with pytest.raises(CellError, match="float32 operands"):
        c + 1
    with pytest.raises(CellError, match="int32 scalar"):
        lookup(v, v[0:1])
    with pytest.raises(CellError, match="stream is 0 or 1"):
        sample(v, 2)
    with pytest.raises(CellError, match="unknown dtype"):
        b.state("q", dtype="float16")


def test_unknown_and_duplicate_names_are_cell_errors():
    b = CellBuilder("bad")
    h = b.state("h", 2)
    with pytest.raises(CellError, match="declared twice"):
        b.input("h", 2)
    with pytest.raises(CellError, match="unknown states"):
        b.build(update={"h": tanh(h), "g": h}, outputs={"h": h})
    with pytest.raises(CellError, match="have no update"):
        b.build(update={}, outputs={"h": h})
    with pytest.raises(CellError, match="its update is"):
        b.build(update={"h": h[0:1]}, outputs={"h": h})
    with pytest.raises(CellError, match="no declared ref"):
        b.let("h", h)
    with pytest.raises(CellError, match="all nodes"):
        b.build(update={"h": h}, outputs={"h": 1.0})
    other = CellBuilder("other").state("g", 2)
    with pytest.raises(CellError, match="another builder"):
        b.build(update={"h": h + other}, outputs={"h": h})


def test_cycles_must_go_through_state():
    b = CellBuilder("loop")
    x = b.input("x", 2)
    p, q = b.ref("p", 2), b.ref("q", 2)
    b.let("p", tanh(q + x))
    b.let("q", sigmoid(p))
    with pytest.raises(CellError, match="cycle not through a state: p -> q -> p"):
        b.build(update={}, outputs={"y": p})
    unbound = CellBuilder("unbound")
    r = unbound.ref("r", 2)
    with pytest.raises(CellError, match="never bound"):
        unbound.build(update={}, outputs={"y": r})


def test_forward_references_and_state_cycles_are_fine():
    b = CellBuilder("acc")
    x, h = b.input("x", 2), b.state("h", 2)
    later = b.ref("later", 2)
    h_new = h + later                              # used before it is written
    b.let("later", x * 2.0)
    cell = b.build(update={"h": h_new}, outputs={"h": h_new})
    xs = normal((5, 2))
    out, state = run(cell, {}, {"x": xs})
    np.testing.assert_array_equal(out["h"], np.cumsum(xs * np.float32(2), axis=0, dtype=np.float32))
    np.testing.assert_array_equal(state["h"], out["h"][-1])


# ---- the interpreter ----

def test_a_cell_without_inputs_runs_for_the_given_steps():
    b = CellBuilder("counter")
    n = b.state("n")
    cell = b.build(update={"n": n + 1.0}, outputs={"n": n})
    out, state = run(cell, {}, {}, {"n": 5.0}, steps=3)
    np.testing.assert_array_equal(out["n"], [5, 6, 7])
    assert state["n"] == 8
    with pytest.raises(CellError, match="needs steps="):
        run(cell, {}, {})


def test_every_elementwise_op_is_float32_numpy():
    b = CellBuilder("ops")
    x, W = b.input("x", 4), b.weight("W", (3, 4))
    lo, hi = split(x, [1, 3])
    y = concat(cells.exp(lo), cells.relu(hi), cells.affine(W @ x, 0.5, -x[0:3]),
               -cells.column(W, 1), sigmoid(x) - tanh(x))
    cell = b.build(update={}, outputs={"y": y})
    xs, w = normal((3, 4)), normal((3, 4), 1)
    out, _ = run(cell, {"W": w}, {"x": xs})
    for t, v in enumerate(xs):
        want = np.concatenate([np.exp(v[:1]), np.maximum(v[1:], 0),
                               np.float32(0.5) * (w @ v) + -v[:3], -w[:, 1],
                               1 / (1 + np.exp(-v)) - np.tanh(v)])
        assert out["y"][t].dtype == np.float32
        np.testing.assert_array_equal(out["y"][t], want)


def test_sample_draws_with_the_counter_based_generator():
    b = CellBuilder("draw")
    logits = b.input("logits", 256)
    cell = b.build(update={}, outputs={"c": sample(logits, 0), "f": sample(logits, 1)})
    xs = normal((6, 256), scale=3)
    out, _ = run(cell, {}, {"logits": xs}, seed=7, t0=100)
    t = 100 + np.arange(6)
    assert out["c"].dtype == np.int32
    np.testing.assert_array_equal(out["c"], [draw(l, u) for l, u in zip(xs, uniform(7, t, 0))])
    np.testing.assert_array_equal(out["f"], [draw(l, u) for l, u in zip(xs, uniform(7, t, 1))])


def test_the_interpreter_checks_weights_inputs_and_states():
    cell = cells.gru(3, 4)
    w = {"weight_ih": normal((12, 3)), "weight_hh": normal((12, 4)),
         "bias_ih": normal(12), "bias_hh": normal(12)}
    xs = normal((5, 3))
    with pytest.raises(CellError, match="no weight 'bias_hh'"):
        run(cell, {k: v for k, v in w.items() if k != "bias_hh"}, {"x": xs})
    with pytest.raises(CellError, match="declared \\(12, 4\\)"):
        run(cell, dict(w, weight_hh=normal((4, 12))), {"x": xs})
    with pytest.raises(CellError, match="unknown inputs"):
        run(cell, w, {"x": xs, "y": xs})
    with pytest.raises(CellError, match="must be \\[T"):
        run(cell, w, {"x": normal((5, 4))})
    with pytest.raises(CellError, match="unknown states"):
        run(cell, w, {"x": xs}, {"c": np.zeros(4)})
    with pytest.raises(CellError, match="shape \\(4,\\)"):
        run(cell, w, {"x": xs}, {"h": np.zeros(3)})
    with pytest.raises(CellError, match="disagree"):
        run(cell, w, {"x": xs}, steps=4)


# ---- cells written in the language ----

@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_gru_and_lstm_match_torch(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    n_in, hidden, T = 6, 16, 40
    layer = getattr(torch.nn, kind.upper())(n_in, hidden)
    weights = {k[:-len("_l0")]: v.detach().numpy() for k, v in layer.state_dict().items()}
    xs = normal((T, n_in))
    h0 = normal(hidden, 1, scale=0.5)
    c0 = normal(hidden, 2, scale=0.5)
    initial = {"h": h0, "c": c0} if kind == "lstm" else {"h": h0}
    out, state = run(getattr(cells, kind)(n_in, hidden), weights, {"x": xs}, initial)
    start = tuple(torch.from_numpy(v)[None] for v in initial.values())
    with torch.no_grad():
        want, _ = layer(torch.from_numpy(xs), start if kind == "lstm" else start[0])
    tol = tolerance(weights, xs, T, n_in + hidden)
    assert np.abs(out["h"] - want.numpy()).max() <= tol
    assert out["h"].dtype == np.float32


def test_sru_and_gilr_match_the_layers():
    d, T, xs = 8, 30, normal((30, 8))
    sru = {"W": normal((d, d), 1, 0.3), "W_f": normal((d, d), 2, 0.3),
           "W_r": normal((d, d), 3, 0.3), "b_f": normal(d, 4), "b_r": normal(d, 5)}
    out, _ = run(cells.sru(d), sru, {"x": xs})
    want = scan.sru(xs, sru["W"].T, sru["W_f"].T, sru["W_r"].T, sru["b_f"], sru["b_r"])
    assert np.abs(out["h"] - want).max() <= tolerance(sru, xs, T, d)

    gilr = {"U": normal((d, 5), 1, 0.4), "V": normal((d, 5), 2, 0.4),
            "b_g": normal(d, 3), "b_i": normal(d, 4)}
    xs = normal((T, 5), 9)
    out, _ = run(cells.gilr(5, d), gilr, {"x": xs})
    want = scan.gilr(xs, gilr["U"].T, gilr["V"].T, gilr["b_g"], gilr["b_i"])
    assert np.abs(out["h"] - want).max() <= tolerance(gilr, xs, T, 5)


REPRESENTATIONS = [Representation(), Representation("mulaw", 0.85),
                   Representation("mulaw", 0.85, 0.995)]


def to_int16(value):
    """docs/model.md's last step: rint(y · 32768) clipped."""
    return np.clip(np.rint(value * np.float32(32768)), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("upsample", [None, "linear"])
@pytest.mark.parametrize("rep", REPRESENTATIONS,
                         ids=lambda r: f"{r.code}-{r.preemphasis}-{r.dc_block}")
def test_wavernn_cell_matches_the_reference_vocoder_bit_for_bit(rep, upsample):
    """The cell on the upsampled rows k, or (upsample="linear") on the frame rows K_f, K_f+1
    and α, forming k itself."""
    H, n, seed = 32, 300, 5
    model = random_model(hidden=H, density=0.25, sample_rate=16000, n_mels=8, cond_channels=8,
                         representation=rep)
    hop = model.hop_length
    K = normal((n // hop + 2, 3 * H), 1)
    state = GenState.initial(H)
    want = ReferenceEngine(model).generate(K, 0, n, state, seed)

    cell = cells.wavernn(H, rep, upsample=upsample)
    if upsample:
        parts = [cells.wavernn_inputs(K, hop, m, t0) for t0, m in ((0, 120), (120, n - 120))]
    else:
        k = upsample_rows(K, np.arange(n), hop, model.upsample)
        parts = [{"k": k[:120]}, {"k": k[120:]}]
    first, mid = run(cell, model.weights, parts[0], {"c": 128, "f": 0}, seed=seed)
    rest, end = run(cell, model.weights, parts[1], mid, seed=seed, t0=120)
    samples = to_int16(np.concatenate([first["value"], rest["value"]]))
    np.testing.assert_array_equal(samples, want)
    assert len(np.unique(samples)) > 20                 # not a trivial run
    np.testing.assert_array_equal(end["h"], state.h)
    assert (end["c"], end["f"]) == (state.c_prev, state.f_prev)
    assert (float(end["s"]), float(end["y"])) == (state.s_prev, state.y_prev)


# ---- the scheduler's analysis ----

def test_products_of_one_input_stack_and_input_projections_hoist():
    sru = cells.sru(8)
    (stack,) = schedule.stacks(sru)
    assert [n.args[0].name for n in stack] == ["W_f", "W", "W_r"]
    assert {n for n in schedule.hoisted(sru) if n.op == "matvec"} == set(stack)

    gru = cells.gru(4, 8)
    assert schedule.stacks(gru) == []
    assert [n.args[0].name for n in schedule.hoisted(gru) if n.op == "matvec"] == ["weight_ih"]
    assert [kind for kind, _ in schedule.step(gru)] == ["barrier", "pass"]


def test_the_wavernn_step_is_two_passes_of_products_and_a_draw():
    cell = cells.wavernn(32)
    assert not [n for n in schedule.hoisted(cell) if n.op == "matvec"]
    barriers = [[n.args[0].name if n.op == "matvec" else f"draw {n.attr('stream')}" for n in nodes]
                for kind, nodes in schedule.step(cell) if kind == "barrier"]
    assert barriers == [["gru.R"], ["out.O1"], ["out.O2"], ["draw 0"],
                        ["out.O3"], ["out.O4"], ["draw 1"]]
    text = schedule.describe(cell)
    assert "then: gru.R @ h" in text and text.count("pass:") == 7


@pytest.mark.parametrize("make", [lambda: cells.gru(4, 8), lambda: cells.lstm(4, 8),
                                  lambda: cells.gilr(4, 8), lambda: cells.wavernn(16)])
def test_every_computed_node_is_scheduled_once(make):
    cell = make()
    looped = [n for _, nodes in schedule.step(cell) for n in nodes]
    placed = looped + schedule.hoisted(cell)
    assert len(placed) == len(set(placed))
    assert set(placed) == {n for n in cell.nodes if n.op not in schedule.DATA}
