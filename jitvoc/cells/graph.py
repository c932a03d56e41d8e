"""Recurrent cells as data: a small graph of typed nodes, written in a few lines of Python.

    b = CellBuilder("gru")
    x, h = b.input("x", 8), b.state("h", 16)
    gi = b.weight("W_ih", (48, 8)) @ x + b.weight("b_ih", 48)
    ...
    cell = b.build(update={"h": h_new}, outputs={"h": h_new})

Every node has a shape (() a scalar, (n,) a vector; (m, n) only for weights) and a dtype
("float32", or "int32" for class indices); both are checked when the node is made, and a
mistake raises jitvoc.CellError. The graph is never run as Python per step by the engines: the
planner reads it, and jitvoc.reference.cells interprets it as the oracle. Semantics of every op:
docs/cells.md. This module sits below the stages and imports only numpy and jitvoc.errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..errors import CellError

FLOAT, INDEX = "float32", "int32"
DECLARED = ("input", "state", "weight", "ref")   # leaves with a name
DRAW_STREAMS = (0, 1)   # the counter-based generator gives two draws per step (docs/model.md)


@dataclass(frozen=True)
class Rows:
    """A per-step input given as rows of a table: step t's value is table[index[t]] (a
    vocoder's conditioning repeats one row over the samples of a frame). The interpreter takes
    it as those rows; a compiled cell reads them in place, without the copies."""
    table: object
    index: object

    def values(self) -> np.ndarray:
        return np.asarray(self.table)[np.asarray(self.index)]


@dataclass(frozen=True, eq=False)
class Node:
    """One value of the graph: `op` applied to `args`, with static `shape` and `dtype`; `attrs`
    holds the op's parameters as (key, value) pairs (a leaf's name, a slice's bounds, ...)."""
    op: str
    args: tuple = ()
    shape: tuple = ()
    dtype: str = FLOAT
    attrs: tuple = ()

    def attr(self, key):
        return dict(self.attrs)[key]

    @property
    def name(self):
        return dict(self.attrs).get("name")

    def __repr__(self):
        label = self.name or self.op
        return f"<{label}: {self.dtype}{list(self.shape)}>"

    __add__ = lambda self, other: add(self, other)
    __radd__ = lambda self, other: add(other, self)
    __sub__ = lambda self, other: sub(self, other)
    __rsub__ = lambda self, other: sub(other, self)
    __mul__ = lambda self, other: mul(self, other)
    __rmul__ = lambda self, other: mul(other, self)
    __neg__ = lambda self: _unary("neg", self)
    __matmul__ = lambda self, other: matvec(self, other)

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise CellError(f"{self!r}: only contiguous slices x[a:b] are supported, got {key!r}")
        start = 0 if key.start is None else key.start
        return take(self, start, _length(self) if key.stop is None else key.stop)


def const(value) -> Node:
    """A float32 constant: a scalar or a vector (a table for `lookup`). The values as given
    (float64) stay with it as "given": a compiler folding a factor into the constant rounds the
    product once from them."""
    given = np.array(value, np.float64)
    if given.ndim > 1:
        raise CellError(f"a constant is a scalar or a vector, got shape {given.shape}")
    array = given.astype(np.float32)
    array.setflags(write=False)
    given.setflags(write=False)
    return Node("const", shape=array.shape, attrs=(("value", array), ("given", given)))


def _node(value) -> Node:
    return value if isinstance(value, Node) else const(value)


def _float(op, *args):
    for a in args:
        if a.dtype != FLOAT:
            raise CellError(f"{op} needs float32 operands, got {a!r}")
        if len(a.shape) > 1:
            raise CellError(f"{op} works on scalars and vectors, not the matrix {a!r}")


def _broadcast(op, *args) -> tuple:
    """The common shape of element-wise operands: all equal, scalars broadcast."""
    shapes = {a.shape for a in args if a.shape != ()}
    if len(shapes) > 1:
        raise CellError(f"{op}: shapes do not match: {', '.join(map(repr, args))}")
    return shapes.pop() if shapes else ()


def _binary(op, a, b) -> Node:
    a, b = _node(a), _node(b)
    _float(op, a, b)
    return Node(op, (a, b), _broadcast(op, a, b))


def add(a, b) -> Node:
    """a + b, element-wise."""
    return _binary("add", a, b)


def sub(a, b) -> Node:
    """a − b, element-wise."""
    return _binary("sub", a, b)


def mul(a, b) -> Node:
    """a ∘ b, element-wise."""
    return _binary("mul", a, b)


def affine(x, a, b) -> Node:
    """a·x + b, element-wise: the product rounded, then the sum (no FMA)."""
    x, a, b = _node(x), _node(a), _node(b)
    _float("affine", x, a, b)
    return Node("affine", (x, a, b), _broadcast("affine", x, a, b))


def _unary(op, x) -> Node:
    x = _node(x)
    _float(op, x)
    return Node(op, (x,), x.shape)


def sigmoid(x) -> Node:
    """1 / (1 + exp(−x)), element-wise."""
    return _unary("sigmoid", x)


def tanh(x) -> Node:
    return _unary("tanh", x)


def relu(x) -> Node:
    """max(x, 0), element-wise."""
    return _unary("relu", x)


def exp(x) -> Node:
    return _unary("exp", x)


def matvec(W, x) -> Node:
    """W x for a weight matrix W [m, n] and a float32 vector x [n]: a vector [m]."""
    if not (isinstance(W, Node) and W.op == "weight" and len(W.shape) == 2):
        raise CellError(f"the left side of @ must be a weight matrix, got {W!r}")
    x = _node(x)
    _float("matvec", x)
    if x.shape != (W.shape[1],):
        raise CellError(f"{W!r} @ {x!r}: the matrix has {W.shape[1]} columns")
    return Node("matvec", (W, x), (W.shape[0],))


def column(W, j: int) -> Node:
    """Column j of a weight matrix, a vector [m]: products with a handful of scalar inputs are
    written as sums of columns times scalars (the WaveRNN input matrix)."""
    if not (isinstance(W, Node) and W.op == "weight" and len(W.shape) == 2):
        raise CellError(f"column() takes a weight matrix, got {W!r}")
    if not 0 <= j < W.shape[1]:
        raise CellError(f"{W!r} has no column {j}")
    return Node("column", (W,), (W.shape[0],), attrs=(("index", j),))


def _length(x) -> int:
    if len(x.shape) != 1:
        raise CellError(f"{x!r} is not a vector")
    return x.shape[0]


def take(x, start: int, stop: int) -> Node:
    """x[start:stop] of a vector."""
    n = _length(x)
    if not 0 <= start < stop <= n:
        raise CellError(f"{x!r}[{start}:{stop}] is empty or out of range")
    return Node("take", (x,), (stop - start,), x.dtype, (("start", start), ("stop", stop)))


def split(x, parts) -> tuple:
    """A vector cut into `parts` equal pieces (an int) or pieces of the given sizes (a list)."""
    n = _length(x)
    if isinstance(parts, int):
        if parts <= 0 or n % parts:
            raise CellError(f"{x!r} of length {n} does not split into {parts} equal parts")
        parts = [n // parts] * parts
    if sum(parts) != n:
        raise CellError(f"{x!r} of length {n} does not split into parts of sizes {list(parts)}")
    edges = np.cumsum([0, *parts]).tolist()
    return tuple(take(x, lo, hi) for lo, hi in zip(edges[:-1], edges[1:]))


def concat(*xs) -> Node:
    """Float32 scalars and vectors joined into one vector."""
    xs = tuple(_node(x) for x in xs)
    _float("concat", *xs)
    if not xs:
        raise CellError("concat needs at least one operand")
    size = sum(x.shape[0] if x.shape else 1 for x in xs)
    return Node("concat", xs, (size,))


def sample(logits, stream: int) -> Node:
    """The class drawn from softmax(logits) with ξ from the counter-based generator at this
    step's index t and `stream` k (0 or 1), exactly as the WaveRNN draw of docs/model.md: an
    int32 scalar."""
    logits = _node(logits)
    _float("sample", logits)
    _length(logits)
    if stream not in DRAW_STREAMS:
        raise CellError(f"a draw's stream is 0 or 1 (two draws per step), got {stream!r}")
    return Node("sample", (logits,), (), INDEX, (("stream", stream),))


def softmax(logits) -> Node:
    """The distribution softmax(logits) as the WaveRNN draw forms it (docs/model.md,
    "Sampling"): p = exp(l − max l), each divided by Σp; float32, the shape of the logits."""
    logits = _node(logits)
    _float("softmax", logits)
    _length(logits)
    return Node("softmax", (logits,), logits.shape)


def lookup(table, index) -> Node:
    """table[index]: a float32 scalar from a vector `table` and an int32 scalar `index`."""
    table = _node(table)
    _float("lookup", table)
    _length(table)
    if not (isinstance(index, Node) and index.dtype == INDEX and index.shape == ()):
        raise CellError(f"lookup's index must be an int32 scalar, got {index!r}")
    return Node("lookup", (table, index), ())


@dataclass(frozen=True, eq=False)
class Cell:
    """A recurrent cell: its declared leaves (by name), the next value of every state, the
    named outputs of a step, the values bound to forward references (read-only mappings), and
    every node reachable from the update and outputs in an order where each node follows its
    arguments."""
    name: str
    inputs: dict
    states: dict
    weights: dict
    update: dict
    outputs: dict
    bindings: dict
    nodes: tuple

    def __repr__(self):
        return (f"<cell {self.name}: inputs {list(self.inputs)}, states {list(self.states)}, "
                f"weights {list(self.weights)}, {len(self.nodes)} nodes>")

    def weight_arrays(self, weights) -> dict:
        """Every declared weight of `weights` as a C-contiguous float32 array of its declared
        shape: CellError for a missing one or another shape."""
        if not isinstance(weights, dict):
            raise CellError(f"{self.name}: weights must be a dict of arrays by name")
        out = {}
        for name, node in self.weights.items():
            if name not in weights:
                raise CellError(f"{self.name}: no weight {name!r} given")
            w = np.ascontiguousarray(weights[name], np.float32)
            if w.shape != node.shape:
                raise CellError(f"{self.name}: weight {name!r} is declared {node.shape}, "
                                f"got {w.shape}")
            out[name] = w
        return out


class CellBuilder:
    """Declares a cell's leaves by name, then builds the checked Cell."""

    def __init__(self, name: str):
        self.name = name
        self._leaves: dict[str, Node] = {}
        self._bindings: dict[str, Node] = {}

    def _declare(self, op, name, shape, dtype=FLOAT, **attrs) -> Node:
        if not isinstance(name, str) or not name:
            raise CellError(f"{self.name}: a {op} needs a non-empty string name, got {name!r}")
        if name in self._leaves:
            raise CellError(f"{self.name}: the name {name!r} is declared twice")
        shape = _shape(shape)
        if dtype not in (FLOAT, INDEX):
            raise CellError(f"{self.name}: {name!r} has unknown dtype {dtype!r}")
        node = Node(op, shape=shape, dtype=dtype, attrs=(("name", name), *attrs.items()))
        self._leaves[name] = node
        return node

    def input(self, name: str, size=(), dtype=FLOAT) -> Node:
        """A per-step input: a scalar (size ()) or a vector of `size`."""
        return self._declare("input", name, size, dtype)

    def state(self, name: str, size=(), dtype=FLOAT) -> Node:
        """A recurrent state: its value from the previous step (initial state at step 0)."""
        return self._declare("state", name, size, dtype)

    def weight(self, name: str, shape, block=None) -> Node:
        """A weight from the model: a vector (bias) or a matrix [m, n]; `block` (rows, columns)
        says the matrix is block-sparse with that block, for the planner."""
        shape = _shape(shape)
        if block is not None:
            if len(shape) != 2 or len(block) != 2 or any(
                    b <= 0 or s % b for b, s in zip(block, shape)):
                raise CellError(f"{self.name}: block {block!r} does not tile {name!r} {shape}")
            block = tuple(block)
        return self._declare("weight", name, shape, block=block)

    def ref(self, name: str, size=(), dtype=FLOAT) -> Node:
        """A value used before it is written: `let(name, value)` binds it before build()."""
        return self._declare("ref", name, size, dtype)

    def let(self, name: str, value: Node) -> Node:
        """Binds the forward reference `name` to `value` (same shape and dtype)."""
        ref, value = self._leaves.get(name), _node(value)
        if ref is None or ref.op != "ref":
            raise CellError(f"{self.name}: let({name!r}) names no declared ref")
        if name in self._bindings:
            raise CellError(f"{self.name}: ref {name!r} is bound twice")
        if (value.shape, value.dtype) != (ref.shape, ref.dtype):
            raise CellError(f"{self.name}: ref {name!r} is {ref!r}, bound to {value!r}")
        self._bindings[name] = value
        return value

    def build(self, update: dict, outputs: dict) -> Cell:
        """The cell whose states take the values `update` after each step and which returns
        `outputs` (name -> node) per step. Every state needs an update, every ref a binding."""
        leaves = self._leaves
        states = {k: v for k, v in leaves.items() if v.op == "state"}
        unknown = set(update) - set(states)
        if unknown:
            raise CellError(f"{self.name}: update names unknown states {sorted(unknown)}")
        missing = set(states) - set(update)
        if missing:
            raise CellError(f"{self.name}: states {sorted(missing)} have no update")
        for name, value in update.items():
            if not isinstance(value, Node) or (value.shape, value.dtype) != (
                    states[name].shape, states[name].dtype):
                raise CellError(f"{self.name}: state {name!r} is {states[name]!r}, "
                                f"its update is {value!r}")
        unbound = [k for k, v in leaves.items() if v.op == "ref" and k not in self._bindings]
        if unbound:
            raise CellError(f"{self.name}: refs {unbound} are never bound with let()")
        if not outputs or not all(isinstance(v, Node) for v in outputs.values()):
            raise CellError(f"{self.name}: a cell needs one or more outputs, all nodes: "
                            f"{outputs!r}")
        nodes = _ordered([*update.values(), *outputs.values()], self._bindings, self.name)
        foreign = [n for n in nodes if n.op in DECLARED and leaves.get(n.name) is not n]
        if foreign:
            raise CellError(f"{self.name}: {foreign[0]!r} was declared by another builder")
        by_op = lambda op: MappingProxyType({k: v for k, v in leaves.items() if v.op == op})
        return Cell(self.name, by_op("input"), by_op("state"), by_op("weight"),
                    MappingProxyType(dict(update)), MappingProxyType(dict(outputs)),
                    MappingProxyType(dict(self._bindings)), nodes)


def _shape(shape) -> tuple:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if len(shape) > 2 or any(not isinstance(s, (int, np.integer)) or s <= 0 for s in shape):
        raise CellError(f"a shape is (), (n,) or (m, n) of positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _ordered(roots, bindings, cell_name) -> tuple:
    """Every node reachable from `roots` (a ref leads to its binding), arguments first. A path
    that comes back to a node is a cycle not through state: CellError naming it."""
    done, on_path, order, path = set(), set(), [], []

    def visit(node):
        if node in done:
            return
        if node in on_path:
            loop = path[path.index(node):] + [node]
            raise CellError(f"{cell_name}: cycle not through a state: "
                            + " -> ".join(n.name for n in loop if n.op == "ref"))
        on_path.add(node)
        path.append(node)
        for arg in (bindings[node.name],) if node.op == "ref" else node.args:
            visit(arg)
        path.pop()
        on_path.discard(node)
        done.add(node)
        order.append(node)

    for root in roots:
        visit(root)
    return tuple(order)
