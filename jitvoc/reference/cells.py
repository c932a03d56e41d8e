"""The NumPy interpreter of jitvoc.cells graphs: the oracle every compiled cell is tested against.

    outputs, state = run(cell, weights, inputs, state, seed=0, t0=0)

One Python step per timestep, float32 throughout, every operation rounded on its own in the
order the graph writes it (docs/cells.md). The draw is jitvoc.reference.vocoder's, with ξ from
the counter-based generator at sample index t0 + step.
"""
from __future__ import annotations

import numpy as np

from ..cells import FLOAT, INDEX, Cell, Rows
from ..errors import CellError
from .vocoder import draw, softmax, uniform

_DTYPES = {FLOAT: np.float32, INDEX: np.int32}


def run(cell: Cell, weights: dict, inputs: dict, state: dict | None = None, seed: int = 0,
        t0: int = 0, steps: int | None = None):
    """(outputs, state): every output stacked over the steps ([T, *shape]) and the states after
    the last step. `inputs` maps each input's name to [T, *shape] (or Rows of a table);
    `state` maps state names to initial values (a state left out starts at zero); `steps` is T
    for a cell without inputs."""
    W = cell.weight_arrays(weights)
    xs, T = _inputs(cell, inputs, steps)
    current = _initial(cell, state or {})
    rows = {name: [] for name in cell.outputs}
    for step in range(T):
        values = _step(cell, W, {k: v[step] for k, v in xs.items()}, current, seed, t0 + step)
        current = {name: values[node] for name, node in cell.update.items()}
        for name, node in cell.outputs.items():
            rows[name].append(values[node])
    outputs = {name: np.array(rows[name], _DTYPES[node.dtype]).reshape((T, *node.shape))
               for name, node in cell.outputs.items()}
    return outputs, current


def _step(cell, W, x, state, seed, t) -> dict:
    """node -> value for one step."""
    values = {}
    for node in cell.nodes:
        values[node] = _evaluate(node, values, cell, W, x, state, seed, t)
    return values


def _evaluate(node, values, cell, W, x, state, seed, t):
    op, args = node.op, [values.get(a) for a in node.args]
    if op == "input":
        return x[node.name]
    if op == "state":
        return state[node.name]
    if op == "weight":
        return W[node.name]
    if op == "const":
        return node.attr("value")
    if op == "ref":
        return values[cell.bindings[node.name]]
    return _OPS[op](node, *args, seed=seed, t=t)


_ONE, _ZERO = np.float32(1), np.float32(0)
_OPS = {
    "add": lambda n, a, b, **_: a + b,
    "sub": lambda n, a, b, **_: a - b,
    "mul": lambda n, a, b, **_: a * b,
    "affine": lambda n, x, a, b, **_: a * x + b,
    "neg": lambda n, x, **_: -x,
    "sigmoid": lambda n, x, **_: _ONE / (_ONE + np.exp(-x)),
    "tanh": lambda n, x, **_: np.tanh(x),
    "relu": lambda n, x, **_: np.maximum(x, _ZERO),
    "exp": lambda n, x, **_: np.exp(x),
    "matvec": lambda n, W, x, **_: W @ x,
    "column": lambda n, W, **_: W[:, n.attr("index")],
    "take": lambda n, x, **_: x[n.attr("start"):n.attr("stop")],
    "concat": lambda n, *xs, **_: np.concatenate([np.atleast_1d(x) for x in xs]),
    "lookup": lambda n, table, i, **_: table[i],
    "sample": lambda n, logits, seed, t: np.int32(
        draw(logits, uniform(seed, t, n.attr("stream")))),
    "softmax": lambda n, logits, **_: softmax(logits),
}


def _inputs(cell, inputs, steps):
    unknown = set(inputs) - set(cell.inputs)
    if unknown:
        raise CellError(f"{cell.name}: unknown inputs {sorted(unknown)}")
    xs = {}
    for name, node in cell.inputs.items():
        if name not in inputs:
            raise CellError(f"{cell.name}: no values for input {name!r}")
        value = inputs[name]
        xs[name] = np.asarray(value.values() if isinstance(value, Rows) else value,
                              _DTYPES[node.dtype])
        if xs[name].shape[1:] != node.shape:
            raise CellError(f"{cell.name}: input {name!r} must be [T, *{node.shape}], "
                            f"got {xs[name].shape}")
    lengths = {len(v) for v in xs.values()} | ({steps} if steps is not None else set())
    if len(lengths) != 1:
        raise CellError(f"{cell.name}: the inputs and steps disagree on the number of steps: "
                        f"{sorted(lengths)}" if lengths else
                        f"{cell.name}: a cell without inputs needs steps=")
    return xs, lengths.pop()


def _initial(cell, state) -> dict:
    unknown = set(state) - set(cell.states)
    if unknown:
        raise CellError(f"{cell.name}: unknown states {sorted(unknown)}")
    out = {}
    for name, node in cell.states.items():
        value = np.asarray(state.get(name, 0), _DTYPES[node.dtype])
        if value.shape == () and node.shape:          # a scalar fills a vector state
            value = np.full(node.shape, value)
        if value.shape != node.shape:
            raise CellError(f"{cell.name}: state {name!r} must have shape {node.shape}, "
                            f"got {value.shape}")
        out[name] = value if node.shape else value[()]
    return out
